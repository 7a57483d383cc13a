"""The operator-controlled epoch (spec 50 epoch control), kept in ``meta``."""

from __future__ import annotations

from evidenceos.store.db import Connection


def find_forced_epoch(conn: Connection) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'forced_epoch'").get
    return None if row is None else int(str(row))


def put_forced_epoch(conn: Connection, epoch: int) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('forced_epoch', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(epoch),),
    )
