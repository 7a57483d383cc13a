"""Table module for ``accounts`` (access credit, spec 60 §5.1).

SQLite integers are signed 64-bit; u64 values above 2^63 - 1 are clamped on write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evidenceos.core.credit import Account, AccountLimits
from evidenceos.store.claims import WriterRows
from evidenceos.store.db import Connection

_I64_MAX = 2**63 - 1
#: Accounts as the writer's own writes left them (``generation``: see :class:`WriterRows`).
_rows: WriterRows[str, Account] = WriterRows(1024)


def _clamp(value: int) -> int:
    return min(value, _I64_MAX)


def _decodes_to_itself(account: Account) -> bool:
    """:func:`find_account` of the row :func:`put_account` writes gives ``account`` back: plain
    ints within SQLite's range (larger ones are clamped on write)."""
    limits = account.limits
    values = (
        account.credit_balance,
        account.daily_mint_remaining,
        account.last_mint_day,
        limits.credit_limit,
        limits.daily_mint_limit,
        account.burned_total,
        account.denied_total,
    )
    return (
        type(account) is Account
        and type(limits) is AccountLimits
        and all(type(v) is int and 0 <= v <= _I64_MAX for v in values)
    )


def find_account(
    conn: Connection, principal_id: str, generation: int | None = None
) -> Account | None:
    """The stored account; a write function passes its store's ``generation`` to read the
    account its own writes left from memory."""
    cached = _rows.get(conn, generation, principal_id)
    if cached is not None:
        return cached
    row = conn.execute(
        "SELECT credit_balance, daily_mint_remaining, last_mint_day, credit_limit, "
        "daily_mint_limit, burned_total, denied_total FROM accounts WHERE principal_id = ?",
        (principal_id,),
    ).fetchone()
    if row is None:
        return None
    balance, mint, day, limit, mint_limit, burned, denied = (int(v) for v in row)
    account = Account(balance, mint, day, AccountLimits(limit, mint_limit), burned, denied)
    _rows.put(conn, generation, principal_id, account)
    return account


def put_account(
    conn: Connection, principal_id: str, account: Account, generation: int | None = None
) -> None:
    conn.execute(
        "INSERT INTO accounts(principal_id, credit_balance, daily_mint_remaining, last_mint_day, "
        "credit_limit, daily_mint_limit, burned_total, denied_total) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(principal_id) DO UPDATE SET "
        "credit_balance = excluded.credit_balance, "
        "daily_mint_remaining = excluded.daily_mint_remaining, "
        "last_mint_day = excluded.last_mint_day, credit_limit = excluded.credit_limit, "
        "daily_mint_limit = excluded.daily_mint_limit, burned_total = excluded.burned_total, "
        "denied_total = excluded.denied_total",
        (
            principal_id,
            _clamp(account.credit_balance),
            _clamp(account.daily_mint_remaining),
            account.last_mint_day,
            _clamp(account.limits.credit_limit),
            _clamp(account.limits.daily_mint_limit),
            _clamp(account.burned_total),
            _clamp(account.denied_total),
        ),
    )
    _rows.put(conn, generation, principal_id, account if _decodes_to_itself(account) else None)


def iter_accounts(conn: Connection) -> Iterator[tuple[str, Account]]:
    for (principal,) in conn.execute("SELECT principal_id FROM accounts ORDER BY principal_id"):
        account = find_account(conn, str(principal))
        if account is not None:
            yield str(principal), account


def export_accounts(conn: Connection) -> dict[str, Any]:
    """The ``accounts.json`` view (spec 60 §5.1 layout, keys sorted by the writer).

    ``schema/accounts.schema.json`` documents it; the database stays the truth (DESIGN §2).
    """
    return {
        "accounts": {
            principal: {
                "credit_balance": account.credit_balance,
                "daily_mint_remaining": account.daily_mint_remaining,
                "last_mint_day": account.last_mint_day,
                "limits": {
                    "credit_limit": account.limits.credit_limit,
                    "daily_mint_limit": account.limits.daily_mint_limit,
                },
                "burned_total": account.burned_total,
                "denied_total": account.denied_total,
            }
            for principal, account in iter_accounts(conn)
        }
    }
