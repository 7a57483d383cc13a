"""Access-credit arithmetic, account rules, static admission and pool-budget validation (pure).

Sources: spec 60 §1.3 (environment parsing rules), §5.2 (accounts and the vestigial daily mint),
§5.3 (charge formula and worst-case fallback), §5.5 (AdmissionProvider), §5.7 (GrantCredit and
SetCreditLimit), §5.8 (holdout pool budget validation); OPERATIONS.md "Access-credit accounting";
DESIGN §3 (one transaction per execution) and §9 (credit lives in the accounts table only).

Every amount is an unsigned 64-bit integer as in the reference: arithmetic saturates at
``2**64 - 1`` and never goes below zero. Nothing here reads the clock or the process
environment: callers pass ``day``/``now`` and an environment ``Mapping``.
"""

from __future__ import annotations

import abc
import binascii
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from evidenceos.errors import ConfigError, InvalidArgument, ResourceExhausted
from evidenceos.ids import PrincipalId

__all__ = [
    "SECONDS_PER_DAY",
    "U64_MAX",
    "Account",
    "AccountLimits",
    "AdmissionDenied",
    "AdmissionProvider",
    "CreditPricing",
    "HoldoutPoolDefaults",
    "HoldoutPoolScope",
    "HoldoutPoolSelector",
    "InsufficientCredit",
    "StaticAdmissionProvider",
    "apply_charge",
    "apply_grant_credit",
    "apply_set_credit_limit",
    "compute_execution_charge",
    "compute_k_bits",
    "compute_unix_day",
    "ensure_account",
    "find_invalid_principal_credit_limits",
    "parse_env_f64",
    "parse_env_flag",
    "parse_env_positive_u64",
    "parse_env_u64",
    "parse_holdout_pool_selector",
    "parse_principal_credit_limits",
    "verify_budget_value",
    "verify_grant_credit_request",
    "verify_set_credit_limit_request",
]

U64_MAX: Final = 2**64 - 1
SECONDS_PER_DAY: Final = 86_400
MAX_PRINCIPAL_ID_BYTES: Final = 256
MAX_CREDIT_REASON_BYTES: Final = 256
MAX_HOLDOUT_ID_CHARS: Final = 128
HOLDOUT_ID_BYTES: Final = 32

_U64_TEXT: Final = re.compile(r"\+?[0-9]+")
_U64_MAX_DIGITS: Final = len(str(U64_MAX))
# Rust's f64 grammar: no surrounding whitespace, no ``_`` separators, no hex (Python's float()
# accepts all three).
_F64_TEXT: Final = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)", re.IGNORECASE
)


class InsufficientCredit(ResourceExhausted):
    """The principal's balance is below the charge (spec 60 §5.4 step 4)."""


class AdmissionDenied(ResourceExhausted):
    """The amount exceeds the principal's admission limit (spec 60 §5.5)."""


def _require_u64(name: str, value: int) -> None:
    # type() rather than isinstance(): bool is an int subclass and must not pass as an amount.
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2**64-1]")


def _saturate(value: int) -> int:
    return min(value, U64_MAX)


# --- environment parsing (spec 60 §1.3) ----------------------------------------------------------


def _parse_u64(text: str) -> int | None:
    """Rust ``u64::from_str``: ASCII digits with an optional ``+``; no whitespace; in range."""
    if not _U64_TEXT.fullmatch(text) or len(text.lstrip("+").lstrip("0")) > _U64_MAX_DIGITS:
        return None
    value = int(text)
    return value if value <= U64_MAX else None


def parse_env_flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """Boolean env: when set, true iff ``1`` or ``true`` (ASCII, any case); every other value,
    the empty string included, is false even if the default is true. Unset → ``default``.
    """
    value = env.get(name)
    if value is None:
        return default
    return value == "1" or (value.isascii() and value.lower() == "true")


def parse_env_u64(env: Mapping[str, str], name: str, *, default: int) -> int:
    """Numeric env: a u64 (``0`` allowed); unset or unparsable → ``default``, silently."""
    value = env.get(name)
    parsed = _parse_u64(value) if value is not None else None
    return default if parsed is None else parsed


def parse_env_positive_u64(env: Mapping[str, str], name: str, *, default: int) -> int:
    """Like :func:`parse_env_u64` but ``0`` also means "use the default" (probe knobs, §1.3 F)."""
    value = parse_env_u64(env, name, default=default)
    return default if value == 0 else value


def parse_env_f64(env: Mapping[str, str], name: str, *, default: float) -> float:
    """f64 env: unparsable → ``default`` silently; a parsed value that is non-finite or negative
    is a start-up error (``<NAME> must be finite and >= 0``).
    """
    value = env.get(name)
    if value is None or not _F64_TEXT.fullmatch(value):
        return default
    parsed = float(value)
    if not math.isfinite(parsed) or parsed < 0.0:
        raise ConfigError(f"{name} must be finite and >= 0")
    return parsed + 0.0  # normalises -0.0


# --- charge formula (spec 60 §5.3) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditPricing:
    """The λ weights and worst-case stand-ins of ΔC = λk·k_bits + λcpu·fuel + λmem·pages.

    The worst-case values stand in for a missing measurement, so a missing measurement costs at
    least as much as any real one *that does not exceed them*; keep them at or above the sandbox
    limits (fuel, memory pages) for that to hold for every execution.
    """

    lambda_k_per_bit: int = 1
    lambda_cpu_per_fuel: int = 1
    lambda_mem_per_wasm_page: int = 1_000
    worst_case_k_bits: int = 1_000_000
    worst_case_fuel: int = 1_000_000
    worst_case_wasm_pages: int = 16

    def __post_init__(self) -> None:
        for name in (
            "lambda_k_per_bit",
            "lambda_cpu_per_fuel",
            "lambda_mem_per_wasm_page",
            "worst_case_k_bits",
            "worst_case_fuel",
            "worst_case_wasm_pages",
        ):
            _require_u64(name, getattr(self, name))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CreditPricing:
        """Read the six ``EVIDENCEOS_LAMBDA_*``/``EVIDENCEOS_CREDIT_WORST_CASE_*`` knobs."""
        d = cls()
        return cls(
            lambda_k_per_bit=parse_env_u64(
                env, "EVIDENCEOS_LAMBDA_K_PER_BIT", default=d.lambda_k_per_bit
            ),
            lambda_cpu_per_fuel=parse_env_u64(
                env, "EVIDENCEOS_LAMBDA_CPU_PER_FUEL", default=d.lambda_cpu_per_fuel
            ),
            lambda_mem_per_wasm_page=parse_env_u64(
                env, "EVIDENCEOS_LAMBDA_MEM_PER_WASM_PAGE", default=d.lambda_mem_per_wasm_page
            ),
            worst_case_k_bits=parse_env_u64(
                env, "EVIDENCEOS_CREDIT_WORST_CASE_K_BITS", default=d.worst_case_k_bits
            ),
            worst_case_fuel=parse_env_u64(
                env, "EVIDENCEOS_CREDIT_WORST_CASE_FUEL", default=d.worst_case_fuel
            ),
            worst_case_wasm_pages=parse_env_u64(
                env, "EVIDENCEOS_CREDIT_WORST_CASE_PAGES", default=d.worst_case_wasm_pages
            ),
        )

    def compute_charge(
        self, *, k_bits: int | None, fuel: int | None, max_memory_pages: int | None
    ) -> int:
        """ΔC with each ``None`` replaced by its worst case, saturating at ``2**64 - 1``.

        All inputs are integers, so the only rounding in a charge is the ceiling taken when k_bits
        is measured (:func:`compute_k_bits`). The result is non-decreasing in every argument.
        """
        kb = self.worst_case_k_bits if k_bits is None else k_bits
        cpu = self.worst_case_fuel if fuel is None else fuel
        pages = self.worst_case_wasm_pages if max_memory_pages is None else max_memory_pages
        _require_u64("k_bits", kb)
        _require_u64("fuel", cpu)
        _require_u64("max_memory_pages", pages)
        exact = (
            self.lambda_k_per_bit * kb
            + self.lambda_cpu_per_fuel * cpu
            + self.lambda_mem_per_wasm_page * pages
        )
        return _saturate(exact)


def compute_k_bits(taxed_bits: float, kout_bits_total: float) -> int | None:
    """The measured k_bits of an execution: ``ceil(max(0, taxed + kout))``, or ``None`` (use the
    worst case) if either term is non-finite. Rounding is always up, so fractional leakage is
    never undercharged; a sum beyond u64 saturates.
    """
    if not (math.isfinite(taxed_bits) and math.isfinite(kout_bits_total)):
        return None
    total = taxed_bits + kout_bits_total
    if math.isinf(total):
        return U64_MAX if total > 0 else 0
    return _saturate(math.ceil(max(0.0, total)))


def compute_execution_charge(
    pricing: CreditPricing,
    *,
    taxed_bits: float,
    kout_bits_total: float,
    fuel_total: int,
    max_memory_pages: int,
) -> int:
    """ΔC for one execution from its raw measurements (spec 60 §5.3 "Inputs").

    ``fuel_total`` is the padded fuel charged for the epoch. A zero fuel or page count means
    "not measured" and is replaced by the worst case, as is a non-finite bit count.
    """
    return pricing.compute_charge(
        k_bits=compute_k_bits(taxed_bits, kout_bits_total),
        fuel=fuel_total if fuel_total > 0 else None,
        max_memory_pages=max_memory_pages if max_memory_pages > 0 else None,
    )


# --- accounts (spec 60 §5.1, §5.2) ---------------------------------------------------------------


def compute_unix_day(unix_seconds: int) -> int:
    """UTC day number ``floor(unix_seconds / 86400)`` used for ``last_mint_day``."""
    if unix_seconds < 0:
        raise ValueError("unix time before the epoch")
    return unix_seconds // SECONDS_PER_DAY


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """Per-account limits, fixed when the account is created (env changes affect new ones)."""

    credit_limit: int
    daily_mint_limit: int

    def __post_init__(self) -> None:
        _require_u64("credit_limit", self.credit_limit)
        _require_u64("daily_mint_limit", self.daily_mint_limit)


@dataclass(frozen=True, slots=True)
class Account:
    """One principal's access-credit account (the ``accounts`` row / ``accounts.json`` entry).

    Methods return a new value; none of them can make a field negative or exceed ``2**64 - 1``.
    The daily mint is vestigial as in the reference: ``daily_mint_remaining`` is reset each UTC
    day but never consumed or added to the balance.
    """

    credit_balance: int
    daily_mint_remaining: int
    last_mint_day: int
    limits: AccountLimits
    burned_total: int = 0
    denied_total: int = 0

    def __post_init__(self) -> None:
        _require_u64("credit_balance", self.credit_balance)
        _require_u64("daily_mint_remaining", self.daily_mint_remaining)
        _require_u64("last_mint_day", self.last_mint_day)
        _require_u64("burned_total", self.burned_total)
        _require_u64("denied_total", self.denied_total)

    @classmethod
    def open(cls, limit: int, *, day: int) -> Account:
        """A new account starts full: balance = mint = both limits = ``limit``."""
        return cls(
            credit_balance=limit,
            daily_mint_remaining=limit,
            last_mint_day=day,
            limits=AccountLimits(credit_limit=limit, daily_mint_limit=limit),
        )

    def roll_mint_day(self, day: int) -> Account:
        """On the first access of a different UTC day, reset the (unused) daily mint."""
        if self.last_mint_day == day:
            return self
        return replace(self, last_mint_day=day, daily_mint_remaining=self.limits.daily_mint_limit)

    def burn(self, amount: int) -> Account:
        """Take ``amount`` from the balance or raise :class:`InsufficientCredit`.

        The refusal changes nothing; record it with :meth:`record_denial` where it should count.
        """
        _require_u64("amount", amount)
        if self.credit_balance < amount:
            raise InsufficientCredit("insufficient credit")
        return replace(
            self,
            credit_balance=self.credit_balance - amount,
            burned_total=_saturate(self.burned_total + amount),
        )

    def record_denial(self) -> Account:
        """Count one refused charge (``denied_total``, saturating)."""
        return replace(self, denied_total=_saturate(self.denied_total + 1))

    def grant(self, amount: int) -> Account:
        """``balance = min(balance + amount, credit_limit)`` (spec 60 §5.7)."""
        _require_u64("amount", amount)
        return replace(
            self,
            credit_balance=min(_saturate(self.credit_balance + amount), self.limits.credit_limit),
        )

    def set_credit_limit(self, limit: int) -> Account:
        """New credit limit; the balance is cut to it; the daily mint limit is unchanged."""
        _require_u64("limit", limit)
        return replace(
            self,
            limits=replace(self.limits, credit_limit=limit),
            credit_balance=min(self.credit_balance, limit),
        )


def ensure_account(existing: Account | None, *, limit: int, day: int) -> Account:
    """The account as seen on access: a new full one at ``limit``, or the stored one with its
    daily mint rolled to ``day``. ``limit`` is the admission ``max_credit`` of the principal.
    """
    if existing is None:
        return Account.open(limit, day=day)
    return existing.roll_mint_day(day)


# --- admission (spec 60 §5.5) --------------------------------------------------------------------


class AdmissionProvider(abc.ABC):
    """Caps how much credit a principal may request, hold or be granted at once."""

    __slots__ = ()

    @abc.abstractmethod
    def max_credit(self, principal_id: str) -> int:
        """The principal's admission limit (also the starting balance of a new account)."""

    def admit(self, principal_id: str, requested: int) -> None:
        """Refuse ``requested`` above :meth:`max_credit` with :class:`AdmissionDenied`."""
        if requested > self.max_credit(principal_id):
            raise AdmissionDenied("requested credit exceeds admission limit")


def _split_limit_pairs(raw: str) -> list[tuple[int, str, int | None]]:
    """(1-based position, principal, parsed limit or None) for each pair with a principal."""
    out: list[tuple[int, str, int | None]] = []
    for position, pair in enumerate(raw.split(","), start=1):
        principal, _, limit = pair.partition("=")
        principal = principal.strip()
        if principal:
            out.append((position, principal, _parse_u64(limit.strip())))
    return out


def parse_principal_credit_limits(raw: str | None) -> dict[str, int]:
    """``EVIDENCEOS_PRINCIPAL_CREDIT_LIMITS`` = ``principal=limit[,...]`` (spec 60 §5.5).

    Split at the first ``=`` (principal ids contain ``:``), trim both sides; a pair with an empty
    principal or an unparsable limit is skipped silently as in the reference (see
    :func:`find_invalid_principal_credit_limits` to warn about them); a repeated principal keeps
    its last limit.
    """
    if raw is None:
        return {}
    return {p: limit for _, p, limit in _split_limit_pairs(raw) if limit is not None}


def find_invalid_principal_credit_limits(raw: str | None) -> tuple[int, ...]:
    """1-based positions of pairs that name a principal but whose limit does not parse."""
    if raw is None:
        return ()
    return tuple(pos for pos, _, limit in _split_limit_pairs(raw) if limit is None)


@dataclass(frozen=True, slots=True)
class StaticAdmissionProvider(AdmissionProvider):
    """Static limits: a per-principal map, else the default (10,000,000)."""

    default_limit: int = 10_000_000
    per_principal: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_u64("default_limit", self.default_limit)
        for limit in self.per_principal.values():
            _require_u64("per-principal limit", limit)
        object.__setattr__(self, "per_principal", MappingProxyType(dict(self.per_principal)))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StaticAdmissionProvider:
        """``EVIDENCEOS_DEFAULT_CREDIT_LIMIT`` and ``EVIDENCEOS_PRINCIPAL_CREDIT_LIMITS``."""
        return cls(
            default_limit=parse_env_u64(env, "EVIDENCEOS_DEFAULT_CREDIT_LIMIT", default=10_000_000),
            per_principal=parse_principal_credit_limits(
                env.get("EVIDENCEOS_PRINCIPAL_CREDIT_LIMITS")
            ),
        )

    def max_credit(self, principal_id: str) -> int:
        """The listed limit of ``principal_id``, else the default."""
        return self.per_principal.get(principal_id, self.default_limit)


# --- credit operations (spec 60 §5.4, §5.7) ------------------------------------------------------


def _verify_bounded_text(value: str, name: str, max_bytes: int) -> None:
    if not 1 <= len(value.encode("utf-8")) <= max_bytes:
        raise InvalidArgument(f"{name} must be in [1,{max_bytes}]")


def verify_grant_credit_request(principal_id: str, amount: int, reason: str) -> None:
    """GrantCredit field checks in order (spec 60 §5.7 steps 2 to 4); INVALID_ARGUMENT."""
    _verify_bounded_text(principal_id, "principal_id", MAX_PRINCIPAL_ID_BYTES)
    _verify_bounded_text(reason, "reason", MAX_CREDIT_REASON_BYTES)
    if amount <= 0:
        raise InvalidArgument("amount must be > 0")
    if amount > U64_MAX:
        raise InvalidArgument("amount must fit in 64 bits")


def verify_set_credit_limit_request(principal_id: str, limit: int) -> None:
    """SetCreditLimit field checks: principal_id 1..256 bytes; a limit of 0 is allowed."""
    _verify_bounded_text(principal_id, "principal_id", MAX_PRINCIPAL_ID_BYTES)
    if not 0 <= limit <= U64_MAX:
        raise InvalidArgument("limit must fit in 64 bits")


def apply_charge(
    existing: Account | None,
    *,
    principal_id: PrincipalId,
    amount: int,
    admission: AdmissionProvider,
    day: int,
) -> Account:
    """Charge ``amount`` to a principal (spec 60 §5.4 steps 3 to 4): admission, then burn.

    Raises :class:`AdmissionDenied` or :class:`InsufficientCredit`; on success returns the
    updated account (created full at ``max_credit`` if new).
    """
    admission.admit(principal_id, amount)
    account = ensure_account(existing, limit=admission.max_credit(principal_id), day=day)
    return account.burn(amount)


def apply_grant_credit(
    existing: Account | None,
    *,
    principal_id: str,
    amount: int,
    reason: str,
    admission: AdmissionProvider,
    day: int,
) -> Account:
    """GrantCredit after the operator check (spec 60 §5.7): validate, admit, ensure, grant."""
    verify_grant_credit_request(principal_id, amount, reason)
    admission.admit(principal_id, amount)
    account = ensure_account(existing, limit=admission.max_credit(principal_id), day=day)
    return account.grant(amount)


def apply_set_credit_limit(
    existing: Account | None,
    *,
    principal_id: str,
    limit: int,
    admission: AdmissionProvider,
    day: int,
) -> Account:
    """SetCreditLimit after the operator check (spec 60 §5.7): validate, admit, ensure, set."""
    verify_set_credit_limit_request(principal_id, limit)
    admission.admit(principal_id, limit)
    account = ensure_account(existing, limit=admission.max_credit(principal_id), day=day)
    return account.set_credit_limit(limit)


# --- holdout pool budgets (spec 60 §5.8, §1.3 E) -------------------------------------------------


class HoldoutPoolScope(enum.Enum):
    """Which pools a holdout charges: one global, one per principal, or both."""

    GLOBAL = "global"
    PER_PRINCIPAL = "per_principal"
    BOTH = "both"

    @classmethod
    def parse(cls, text: str) -> HoldoutPoolScope:
        """Exact, case-sensitive match; anything else → ``invalid holdout_pool_scope``."""
        try:
            return cls(text)
        except ValueError:
            raise InvalidArgument("invalid holdout_pool_scope") from None

    def pool_principals(self, principal_id: str) -> tuple[str | None, ...]:
        """Principal parts of the pool keys a claim by ``principal_id`` uses (None = global)."""
        if self is HoldoutPoolScope.GLOBAL:
            return (None,)
        if self is HoldoutPoolScope.PER_PRINCIPAL:
            return (principal_id,)
        return (None, principal_id)

    def matches(self, pool_principal: str | None) -> bool:
        """Whether a pool key's principal part is selected by this scope (Set/Get budgets)."""
        if self is HoldoutPoolScope.GLOBAL:
            return pool_principal is None
        if self is HoldoutPoolScope.PER_PRINCIPAL:
            return pool_principal is not None
        return True


def verify_budget_value(value: float, field_name: str) -> None:
    """A budget must be finite and ``>= 0`` (``<field> must be finite and >= 0``)."""
    if not math.isfinite(value) or value < 0.0:
        raise InvalidArgument(f"{field_name} must be finite and >= 0")


@dataclass(frozen=True, slots=True)
class HoldoutPoolSelector:
    """A validated (holdout handle, scope) pair from Set/GetHoldoutPoolBudgets."""

    holdout_id: bytes
    scope: HoldoutPoolScope


def parse_holdout_pool_selector(holdout_id: str, scope: str) -> HoldoutPoolSelector:
    """Validate ``holdout_id`` and ``scope`` in the order of spec 60 §5.8 steps 2 to 4.

    Length 1..128, then strict hex (INVALID_ARGUMENT, where the reference answers INTERNAL),
    then exactly 32 bytes, then the trimmed scope.
    """
    if not 1 <= len(holdout_id.encode("utf-8")) <= MAX_HOLDOUT_ID_CHARS:
        raise InvalidArgument(f"holdout_id must be in [1,{MAX_HOLDOUT_ID_CHARS}]")
    try:
        handle = binascii.a2b_hex(holdout_id.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidArgument("holdout_id is not valid hex") from None
    if len(handle) != HOLDOUT_ID_BYTES:
        raise InvalidArgument("holdout_id must be 32 bytes (64 hex digits)")
    return HoldoutPoolSelector(holdout_id=handle, scope=HoldoutPoolScope.parse(scope.strip()))


@dataclass(frozen=True, slots=True)
class HoldoutPoolDefaults:
    """Start-up defaults for new holdout pools and the reservation sweeper (spec 60 §1.3 E)."""

    k_bits_budget: float = 1024.0
    access_credit_budget: float = 1024.0
    scope: HoldoutPoolScope = HoldoutPoolScope.GLOBAL
    reservation_ttl_ms: int = 600_000
    reservation_sweep_interval_secs: int = 5

    def __post_init__(self) -> None:
        for name in ("k_bits_budget", "access_credit_budget"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0.0:
                raise ConfigError(f"default_holdout_{name} must be finite and >= 0")
        if self.reservation_ttl_ms <= 0:
            raise ConfigError("reservation_ttl_ms must be > 0")
        if self.reservation_sweep_interval_secs <= 0:
            raise ConfigError("reservation_sweep_interval_secs must be > 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HoldoutPoolDefaults:
        """Read the five knobs; invalid values are start-up errors as in the reference."""
        d = cls()
        raw_scope = env.get("EVIDENCEOS_HOLDOUT_POOL_SCOPE")
        if raw_scope is None:
            scope = d.scope
        else:
            try:
                scope = HoldoutPoolScope.parse(raw_scope)
            except InvalidArgument:
                raise ConfigError(
                    "EVIDENCEOS_HOLDOUT_POOL_SCOPE: invalid holdout_pool_scope "
                    "(expected global, per_principal or both)"
                ) from None
        return cls(
            k_bits_budget=parse_env_f64(
                env, "EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET", default=d.k_bits_budget
            ),
            access_credit_budget=parse_env_f64(
                env,
                "EVIDENCEOS_DEFAULT_HOLDOUT_ACCESS_CREDIT_BUDGET",
                default=d.access_credit_budget,
            ),
            scope=scope,
            reservation_ttl_ms=parse_env_u64(
                env, "EVIDENCEOS_RESERVATION_TTL_MS", default=d.reservation_ttl_ms
            ),
            reservation_sweep_interval_secs=parse_env_u64(
                env,
                "EVIDENCEOS_RESERVATION_SWEEP_INTERVAL_SECS",
                default=d.reservation_sweep_interval_secs,
            ),
        )
