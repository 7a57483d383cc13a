"""Table and file module for signed governance (spec 50; DESIGN §1, §2, §6, §7).

Tables (migration 0004): ``governance_events`` (the hash chain, one log leaf per event),
``oracle_operator_records`` and ``epoch_controls`` (staged by the tools, applied by the daemon),
``nullspec_activations_staged``. Functions take a connection and never open or commit a
transaction: the caller's write function decides it, so an event, its log leaf and the change
it records commit together.

Inputs the daemon only reads — ``trusted_oracle_keys.json``, the NullSpec registry and its
authority keyring — are parsed here too, with the pure checks of :mod:`evidenceos.core`.
Exports (``nullspec/<id>.json``, ``nullspec/active_map.json``, ``oracle_operator_config.json``,
``epoch_control.json``, ``etl_governance_events.log``) are written by :func:`export_governance`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evidenceos.core.canonical import MAX_SAFE_INTEGER
from evidenceos.core.governance import (
    GENESIS_EVENT_HASH,
    ChainedGovernanceEvent,
    EpochControl,
    EventHash,
    GovernanceEvent,
    JsonValue,
    OperatorKeyId,
    OracleOperatorConfig,
    OracleOperatorRecord,
    TrustedKeys,
)
from evidenceos.core.nullspec import (
    NullSpecContract,
    authority_key_id,
    parse_authority_key,
    verify_registry_entry,
)
from evidenceos.errors import ConfigError, EvidenceOSError, LogIntegrityError, NotFound
from evidenceos.store import epochs as epochs_table
from evidenceos.store import log as log_table
from evidenceos.store.db import Connection
from evidenceos.store.files import atomic_write

__all__ = [
    "ACTIVE_MAP",
    "EPOCH_CONTROL_JSON",
    "GOVERNANCE_EVENTS_LOG",
    "GOVERNANCE_KIND",
    "NULLSPEC_AUTHORITY_KEYS_DIR",
    "NULLSPEC_DIR",
    "NULLSPEC_REGISTRY_DIR",
    "ORACLE_OPERATOR_CONFIG_JSON",
    "STAGE_APPLIED",
    "STAGE_STAGED",
    "TRUSTED_ORACLE_KEYS_JSON",
    "LeafAppender",
    "StagedActivation",
    "StoredEvent",
    "StoredRecord",
    "append_event",
    "append_governance_event",
    "chain_problems",
    "check_chain",
    "clear_forced_epoch",
    "delete_staged_activation",
    "delete_staged_epoch_control",
    "delete_staged_oracle_record",
    "export_governance",
    "export_lock",
    "find_epoch_control",
    "find_events_by_id",
    "get_event",
    "iter_applied_activations",
    "iter_events",
    "iter_nullspecs",
    "iter_oracle_records",
    "iter_staged_activations",
    "last_event",
    "load_authority_keys",
    "load_nullspec_registry",
    "load_trusted_oracle_keys",
    "put_epoch_control",
    "put_oracle_record",
    "put_staged_activation",
    "set_forced_epoch",
]

GOVERNANCE_KIND = "governance"
STAGE_STAGED = "staged"
STAGE_APPLIED = "applied"

TRUSTED_ORACLE_KEYS_JSON = "trusted_oracle_keys.json"
ORACLE_OPERATOR_CONFIG_JSON = "oracle_operator_config.json"
EPOCH_CONTROL_JSON = "epoch_control.json"
GOVERNANCE_EVENTS_LOG = "etl_governance_events.log"
NULLSPEC_DIR = "nullspec"
ACTIVE_MAP = "active_map.json"
NULLSPEC_REGISTRY_DIR = "nullspec-registry"
NULLSPEC_AUTHORITY_KEYS_DIR = "trusted-nullspec-keys"
_EXPORT_LOCK = ".export.lock"  # the same file store.export.Exporter locks

log = logging.getLogger("evidenceos.export")


class LeafAppender(Protocol):
    """What :func:`append_governance_event` needs from the log (``LogService`` satisfies it)."""

    def append(self, conn: Connection, entry: Mapping[str, Any]) -> log_table.Leaf: ...

    def want_head(self) -> None: ...


# --------------------------------------------------------------------------------------------
# The event chain


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of ``governance_events``: the chained event and where the log holds it."""

    seq: int
    chained: ChainedGovernanceEvent
    leaf_index: int
    recorded_at_ms: int
    stored_event_id: bytes
    stored_event_hash: bytes

    @property
    def event(self) -> GovernanceEvent:
        return self.chained.event

    def to_json(self) -> dict[str, JsonValue]:
        """The exported line: the event, its chain hashes, ``seq`` and ``leaf_index``."""
        out = self.chained.to_json()
        out["seq"] = self.seq
        out["leaf_index"] = self.leaf_index
        return out


_EVENT_COLUMNS = (
    "seq, event_id, event_type, epoch, key_id, payload_json, signature_ed25519, "
    "prev_event_hash, event_hash, leaf_index, recorded_at_ms"
)


def _event_from_row(row: tuple[Any, ...]) -> StoredEvent:
    (seq, event_id, event_type, epoch, key_id, payload, signature, prev, ev_hash, leaf, at) = row
    event = GovernanceEvent(
        event_type=str(event_type),
        epoch=int(epoch),
        key_id=OperatorKeyId(str(key_id)),
        payload=json.loads(str(payload)),
        signature_ed25519=str(signature),
    )
    return StoredEvent(
        seq=int(seq),
        chained=ChainedGovernanceEvent(event, EventHash(bytes(prev))),
        leaf_index=int(leaf),
        recorded_at_ms=int(at),
        stored_event_id=bytes(event_id),
        stored_event_hash=bytes(ev_hash),
    )


def last_event(conn: Connection) -> StoredEvent | None:
    row = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM governance_events ORDER BY seq DESC LIMIT 1"  # noqa: S608
    ).fetchone()
    return None if row is None else _event_from_row(row)


def get_event(conn: Connection, seq: int) -> StoredEvent:
    row = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM governance_events WHERE seq = ?",  # noqa: S608
        (seq,),
    ).fetchone()
    if row is None:
        raise NotFound(f"governance event #{seq} not found")
    return _event_from_row(row)


def iter_events(conn: Connection) -> Iterator[StoredEvent]:
    for row in conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM governance_events ORDER BY seq"  # noqa: S608
    ):
        yield _event_from_row(row)


def find_events_by_id(conn: Connection, event_id: bytes) -> list[StoredEvent]:
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM governance_events WHERE event_id = ? "  # noqa: S608
        "ORDER BY seq",
        (event_id,),
    ).fetchall()
    return [_event_from_row(row) for row in rows]


def _etl_safe(value: JsonValue) -> Any:
    """RFC 8785 refuses integers beyond 2^53 - 1 (DESIGN §9): carry those as strings.

    The leaf still commits to the exact event through ``event_hash``.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value) if abs(value) > MAX_SAFE_INTEGER else value
    if isinstance(value, Mapping):
        return {k: _etl_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_etl_safe(v) for v in value]
    return value


def _leaf_entry(seq: int, chained: ChainedGovernanceEvent) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": GOVERNANCE_KIND, "seq": seq}
    entry.update({k: _etl_safe(v) for k, v in chained.to_json().items()})
    return entry


def append_event(
    conn: Connection, log: LeafAppender, event: GovernanceEvent, now_ms: int
) -> StoredEvent:
    """Chain ``event`` after the last stored event, append its log leaf, store the row."""
    previous = last_event(conn)
    prev_hash = GENESIS_EVENT_HASH if previous is None else previous.stored_event_hash
    seq = 0 if previous is None else previous.seq + 1
    chained = ChainedGovernanceEvent(event, EventHash(prev_hash))
    leaf = log.append(conn, _leaf_entry(seq, chained))
    log.want_head()  # `governance events show` proves it at once, even without a keyring
    event_hash = chained.event_hash
    event_id = bytes.fromhex(event.event_id)
    conn.execute(
        f"INSERT INTO governance_events({_EVENT_COLUMNS}) "  # noqa: S608
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            seq,
            event_id,
            event.event_type,
            event.epoch,
            event.key_id,
            json.dumps(event.to_json()["payload"], sort_keys=True, ensure_ascii=False),
            event.signature_ed25519,
            prev_hash,
            event_hash,
            leaf.leaf_index,
            now_ms,
        ),
    )
    return StoredEvent(seq, chained, leaf.leaf_index, now_ms, event_id, event_hash)


def append_governance_event(
    conn: Connection, log: LeafAppender, event: GovernanceEvent, now_ms: int
) -> int:
    """Append ``event`` to the governance chain and the log in the caller's transaction.

    The event carries the hash of the last stored event (the genesis hash for the first); its
    ``{"kind": "governance", ...}`` leaf goes into the log in the same transaction. Returns the
    leaf index. Stable entry point for other services (credit grants, limit changes).
    """
    return append_event(conn, log, event, now_ms).leaf_index


def chain_problems(conn: Connection) -> list[str]:
    """Everything wrong with the stored chain, first problem first (empty when intact).

    Checks each row's ``event_id`` and ``event_hash`` against its content, each link to the
    previous row, each row against its log leaf, and that the log holds exactly as many
    governance leaves as the table holds rows — so an edited, inserted, reordered or deleted
    event (the last one included) is detected, because log leaves cannot be changed.
    """
    problems: list[str] = []
    running = bytes(GENESIS_EVENT_HASH)
    count = 0
    for expected_seq, stored in enumerate(iter_events(conn)):
        count += 1
        seq = stored.seq
        if seq != expected_seq:
            problems.append(f"governance event #{expected_seq} is missing (next row is #{seq})")
            break
        if stored.stored_event_id.hex() != stored.event.event_id:
            problems.append(f"governance event #{seq}: event_id does not match its content")
        if stored.chained.event_hash != stored.stored_event_hash:
            problems.append(f"governance event #{seq}: event_hash does not match its content")
        if stored.chained.prev_event_hash != running:
            problems.append(
                f"governance event #{seq}: prev_event_hash does not link to event #{seq - 1}"
            )
        running = stored.stored_event_hash
        try:
            leaf = log_table.get_leaf(conn, stored.leaf_index)
            doc = json.loads(leaf.payload)
        except (EvidenceOSError, ValueError):
            problems.append(f"governance event #{seq}: log leaf {stored.leaf_index} missing")
            continue
        if (
            leaf.kind != GOVERNANCE_KIND
            or doc.get("seq") != seq
            or doc.get("event_hash") != stored.stored_event_hash.hex()
        ):
            problems.append(
                f"governance event #{seq} differs from its log leaf {stored.leaf_index}"
            )
    leaf_count, last_leaf = conn.execute(
        # a literal (= GOVERNANCE_KIND), so SQLite uses the partial index
        # log_leaves_governance_idx of migration 0005
        "SELECT count(*), max(leaf_index) FROM log_leaves WHERE kind = 'governance'"
    ).fetchone() or (0, None)
    leaf_count = int(leaf_count)
    if leaf_count != count:
        problems.append(
            f"the log holds {leaf_count} governance leaves but the chain has {count} events "
            "(an event was deleted or added outside the tools)"
        )
    elif last_leaf is not None:
        doc = json.loads(log_table.get_leaf(conn, int(last_leaf)).payload)
        if doc.get("event_hash") != running.hex():
            problems.append("the chain head differs from the last governance leaf of the log")
    return problems


def check_chain(conn: Connection) -> None:
    """Raise :class:`LogIntegrityError` naming the first problem of :func:`chain_problems`."""
    problems = chain_problems(conn)
    if problems:
        raise LogIntegrityError(
            f"governance chain damaged: {problems[0]} ({len(problems)} problem(s); run "
            "`evidenceosctl governance verify` for the list and restore from backup)"
        )


# --------------------------------------------------------------------------------------------
# Oracle operator records and epoch control (staged / applied)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    record: OracleOperatorRecord
    stage: str
    event_seq: int
    updated_at_ms: int


def put_oracle_record(
    conn: Connection, record: OracleOperatorRecord, stage: str, event_seq: int, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO oracle_operator_records(oracle_id, stage, record_json, event_seq, "
        "updated_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT(oracle_id, stage) DO UPDATE SET "
        "record_json = excluded.record_json, event_seq = excluded.event_seq, "
        "updated_at_ms = excluded.updated_at_ms",
        (record.oracle_id, stage, json.dumps(record.to_json()), event_seq, now_ms),
    )


def delete_staged_oracle_record(conn: Connection, oracle_id: str) -> None:
    conn.execute(
        "DELETE FROM oracle_operator_records WHERE oracle_id = ? AND stage = ?",
        (oracle_id, STAGE_STAGED),
    )


def iter_oracle_records(conn: Connection, stage: str) -> list[StoredRecord]:
    """Records of one stage, sorted by oracle id; a row that does not parse raises."""
    out: list[StoredRecord] = []
    for oracle_id, text, event_seq, at in conn.execute(
        "SELECT oracle_id, record_json, event_seq, updated_at_ms FROM oracle_operator_records "
        "WHERE stage = ? ORDER BY oracle_id",
        (stage,),
    ):
        record = OracleOperatorRecord.from_json(str(oracle_id), json.loads(str(text)))
        out.append(StoredRecord(record, stage, int(event_seq), int(at)))
    return out


def put_epoch_control(
    conn: Connection, control: EpochControl, stage: str, event_seq: int, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO epoch_controls(stage, control_json, event_seq, updated_at_ms) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(stage) DO UPDATE SET control_json = "
        "excluded.control_json, event_seq = excluded.event_seq, "
        "updated_at_ms = excluded.updated_at_ms",
        (stage, json.dumps(control.to_json()), event_seq, now_ms),
    )


def find_epoch_control(conn: Connection, stage: str) -> tuple[EpochControl, int] | None:
    """The epoch control of ``stage`` and its event seq, or ``None``."""
    row = conn.execute(
        "SELECT control_json, event_seq FROM epoch_controls WHERE stage = ?", (stage,)
    ).fetchone()
    if row is None:
        return None
    return EpochControl.from_json(json.loads(str(row[0]))), int(row[1])


def delete_staged_epoch_control(conn: Connection) -> None:
    conn.execute("DELETE FROM epoch_controls WHERE stage = ?", (STAGE_STAGED,))


def clear_forced_epoch(conn: Connection) -> None:
    conn.execute("DELETE FROM meta WHERE key = 'forced_epoch'")


def set_forced_epoch(conn: Connection, epoch: int | None) -> None:
    if epoch is None:
        clear_forced_epoch(conn)
    else:
        epochs_table.put_forced_epoch(conn, epoch)


# --------------------------------------------------------------------------------------------
# NullSpec contracts and activations


@dataclass(frozen=True, slots=True)
class StagedActivation:
    oracle_id: str
    holdout_ref: str
    nullspec_id: bytes
    event_seq: int
    staged_at_ms: int


def put_staged_activation(
    conn: Connection,
    oracle_id: str,
    holdout_ref: str,
    nullspec_id: bytes,
    event_seq: int,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO nullspec_activations_staged(oracle_id, holdout_ref, nullspec_id, "
        "event_seq, staged_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT(oracle_id, holdout_ref) "
        "DO UPDATE SET nullspec_id = excluded.nullspec_id, event_seq = excluded.event_seq, "
        "staged_at_ms = excluded.staged_at_ms",
        (oracle_id, holdout_ref, nullspec_id, event_seq, now_ms),
    )


def iter_staged_activations(conn: Connection) -> list[StagedActivation]:
    return [
        StagedActivation(str(o), str(h), bytes(n), int(s), int(t))
        for o, h, n, s, t in conn.execute(
            "SELECT oracle_id, holdout_ref, nullspec_id, event_seq, staged_at_ms "
            "FROM nullspec_activations_staged ORDER BY oracle_id, holdout_ref"
        )
    ]


def delete_staged_activation(conn: Connection, oracle_id: str, holdout_ref: str) -> None:
    conn.execute(
        "DELETE FROM nullspec_activations_staged WHERE oracle_id = ? AND holdout_ref = ?",
        (oracle_id, holdout_ref),
    )


def iter_applied_activations(conn: Connection) -> list[tuple[str, str, bytes]]:
    """``(oracle_id, holdout_ref, nullspec_id)`` in effect, sorted."""
    return [
        (str(o), str(h), bytes(n))
        for o, h, n in conn.execute(
            "SELECT oracle_id, holdout_ref, nullspec_id FROM nullspec_activations "
            "ORDER BY oracle_id, holdout_ref"
        )
    ]


def iter_nullspecs(conn: Connection) -> list[tuple[NullSpecContract, int]]:
    """Installed contracts with their install time (ms), sorted by id bytes (spec 50 §4.4)."""
    return [
        (NullSpecContract.from_json(json.loads(str(text))), int(at))
        for text, at in conn.execute(
            "SELECT contract_json, installed_at_ms FROM nullspecs ORDER BY nullspec_id"
        )
    ]


# --------------------------------------------------------------------------------------------
# Inputs the daemon only reads


def load_trusted_oracle_keys(path: Path) -> TrustedKeys:
    """``trusted_oracle_keys.json`` (spec 50 §3.1); a missing file is an empty key set."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return TrustedKeys({})
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return TrustedKeys.from_bytes(data)
    except EvidenceOSError as exc:
        raise ConfigError(f"{path}: {exc.message}") from exc


def load_authority_keys(keys_dir: Path) -> TrustedKeys:
    """The NullSpec authority keyring (spec 50 §3.6): one hex key per regular file.

    Key id = file name without its last extension. A missing directory is an empty keyring;
    any bad file fails the whole load.
    """
    if not keys_dir.is_dir():
        return TrustedKeys({})
    keys: dict[str, bytes] = {}
    for path in sorted(keys_dir.iterdir()):
        if not path.is_file():
            continue
        try:
            keys[authority_key_id(path.name)] = parse_authority_key(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read NullSpec authority key {path}: {exc}") from exc
        except EvidenceOSError as exc:
            raise ConfigError(f"NullSpec authority key {path}: {exc.message}") from exc
    try:
        return TrustedKeys(keys)
    except EvidenceOSError as exc:
        raise ConfigError(f"NullSpec authority keys in {keys_dir}: {exc.message}") from exc


def load_nullspec_registry(
    registry_dir: Path, authorities: TrustedKeys
) -> dict[str, NullSpecContract]:
    """Load ``<registry>/nullspecs/<oracle_id>/<id>.json`` + ``.sig`` (spec 50 §3.6).

    Any failure fails the whole load (fail closed); the message names the file.
    """
    root = registry_dir / "nullspecs"
    if not root.is_dir():
        raise NotFound(f"NullSpec registry {root} does not exist")
    contracts: dict[str, NullSpecContract] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".json"):
            sig_path = path.with_suffix(".sig")
            try:
                if not sig_path.is_file():
                    raise ConfigError("detached signature .sig file missing")
                contract = NullSpecContract.from_bytes(path.read_bytes())
                verify_registry_entry(
                    contract,
                    folder_oracle_id=folder.name,
                    file_stem=path.stem,
                    detached_signature=sig_path.read_text(encoding="ascii", errors="replace"),
                    authorities=authorities,
                )
            except OSError as exc:
                raise ConfigError(f"NullSpec registry {path}: {exc}") from exc
            except EvidenceOSError as exc:
                raise ConfigError(f"NullSpec registry {path}: {exc.message}") from exc
            contracts[contract.id_hex] = contract
    return contracts


# --------------------------------------------------------------------------------------------
# Exports


@contextlib.contextmanager
def export_lock(data_dir: Path) -> Iterator[None]:
    """The flock every exporter holds while writing views (shared with ``store.export``)."""
    fd = os.open(data_dir / _EXPORT_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_if_changed(path: Path, data: bytes) -> Path:
    """Exports run after every coalesced commit: skip the fsyncs when nothing changed."""
    try:
        if path.read_bytes() == data:
            return path
    except OSError:
        pass
    atomic_write(path, data)
    return path


def _pretty(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def export_governance(conn: Connection, data_dir: Path) -> list[Path]:
    """Write the governance views from one snapshot (``conn`` is a read transaction).

    * ``nullspec/<id>.json``: each installed contract's canonical bytes (spec 50 §3.5);
      ``nullspec/active_map.json``: the activations in effect;
    * ``oracle_operator_config.json`` and ``epoch_control.json``: the applied records, i.e. the
      configuration in effect (staged changes appear once the daemon applied them);
    * ``etl_governance_events.log``: every chained event, one JSON line each.

    Callers hold :func:`export_lock` (``store.export.Exporter`` does).
    """
    written: list[Path] = []
    ns_dir = data_dir / NULLSPEC_DIR
    ns_dir.mkdir(exist_ok=True)

    def nullspecs() -> None:
        for contract, _ in iter_nullspecs(conn):
            name = f"{contract.id_hex}.json"
            written.append(_write_if_changed(ns_dir / name, contract.canonical_bytes()))
        mappings = [
            {"oracle_id": o, "holdout_handle": h, "nullspec_id_hex": n.hex()}
            for o, h, n in iter_applied_activations(conn)
        ]
        active_map = json.dumps({"mappings": mappings}, separators=(",", ":")).encode()
        written.append(_write_if_changed(ns_dir / ACTIVE_MAP, active_map))

    def oracle_config() -> None:
        records = tuple(r.record for r in iter_oracle_records(conn, STAGE_APPLIED))
        doc = OracleOperatorConfig(records).to_json()
        written.append(_write_if_changed(data_dir / ORACLE_OPERATOR_CONFIG_JSON, _pretty(doc)))

    def epoch_control() -> None:
        control = find_epoch_control(conn, STAGE_APPLIED)
        doc = {} if control is None else control[0].to_json()
        written.append(_write_if_changed(data_dir / EPOCH_CONTROL_JSON, _pretty(doc)))

    def events() -> None:
        lines = [
            json.dumps(stored.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
            for stored in iter_events(conn)
        ]
        data = "".join(lines).encode()
        written.append(_write_if_changed(data_dir / GOVERNANCE_EVENTS_LOG, data))

    # One damaged row (edited by hand) must not stop the other views; reload names the damage.
    for section in (nullspecs, oracle_config, epoch_control, events):
        try:
            section()
        except (EvidenceOSError, ValueError) as exc:
            log.warning("governance export %s skipped: %s", section.__name__, exc)
    return written
