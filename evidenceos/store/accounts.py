"""Table module for ``accounts`` (access credit, spec 60 §5.1).

SQLite integers are signed 64-bit; u64 values above 2^63 - 1 are clamped on write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evidenceos.core.credit import Account, AccountLimits
from evidenceos.store.db import Connection

_I64_MAX = 2**63 - 1


def _clamp(value: int) -> int:
    return min(value, _I64_MAX)


def find_account(conn: Connection, principal_id: str) -> Account | None:
    row = conn.execute(
        "SELECT credit_balance, daily_mint_remaining, last_mint_day, credit_limit, "
        "daily_mint_limit, burned_total, denied_total FROM accounts WHERE principal_id = ?",
        (principal_id,),
    ).fetchone()
    if row is None:
        return None
    balance, mint, day, limit, mint_limit, burned, denied = (int(v) for v in row)
    return Account(balance, mint, day, AccountLimits(limit, mint_limit), burned, denied)


def put_account(conn: Connection, principal_id: str, account: Account) -> None:
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
