"""Access-credit arithmetic, accounts, admission and pool-budget validation (spec 60 §1.3, §5)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.credit import (
    U64_MAX,
    Account,
    AccountLimits,
    AdmissionDenied,
    AdmissionProvider,
    CreditPricing,
    HoldoutPoolDefaults,
    HoldoutPoolScope,
    HoldoutPoolSelector,
    InsufficientCredit,
    StaticAdmissionProvider,
    apply_charge,
    apply_grant_credit,
    apply_set_credit_limit,
    compute_execution_charge,
    compute_k_bits,
    compute_unix_day,
    ensure_account,
    find_invalid_principal_credit_limits,
    parse_env_f64,
    parse_env_flag,
    parse_env_positive_u64,
    parse_env_u64,
    parse_holdout_pool_selector,
    parse_principal_credit_limits,
    verify_budget_value,
    verify_grant_credit_request,
    verify_set_credit_limit_request,
)
from evidenceos.errors import ConfigError, InvalidArgument, ResourceExhausted
from evidenceos.ids import PrincipalId

DAY = 20_089
ALICE = PrincipalId("alice")
u64 = st.integers(0, U64_MAX)
small = st.integers(0, 10**7)

# --- environment parsing (spec 60 §1.3) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        (None, False, False),
        (None, True, True),
        ("1", False, True),
        ("true", False, True),
        ("TRUE", False, True),
        ("tRuE", False, True),
        ("0", True, False),
        ("", True, False),
        ("yes", True, False),
        (" 1", True, False),
        ("true ", True, False),
        ("on", True, False),
    ],
)
def test_env_flag(value, default, expected):
    env = {} if value is None else {"X": value}
    assert parse_env_flag(env, "X", default=default) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 42),
        ("0", 0),
        ("7", 7),
        ("+7", 7),
        ("0007", 7),
        ("0" * 30 + "1", 1),
        (str(U64_MAX), U64_MAX),
        (str(U64_MAX + 1), 42),
        ("-1", 42),
        (" 7", 42),
        ("7 ", 42),
        ("1_000", 42),
        ("1e3", 42),
        ("0x10", 42),
        ("", 42),
        ("٣", 42),
        ("9" * 5000, 42),
    ],
)
def test_env_u64_falls_back_silently(value, expected):
    env = {} if value is None else {"N": value}
    assert parse_env_u64(env, "N", default=42) == expected


def test_env_positive_u64_treats_zero_as_default():
    assert parse_env_positive_u64({"N": "0"}, "N", default=30_000) == 30_000
    assert parse_env_positive_u64({"N": "x"}, "N", default=30_000) == 30_000
    assert parse_env_positive_u64({"N": "5"}, "N", default=30_000) == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 1024.0),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("1E+3", 1000.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("+3", 3.0),
        ("-0", 0.0),
        ("garbage", 1024.0),
        (" 1", 1024.0),
        ("1 ", 1024.0),
        ("1_0", 1024.0),
        ("0x10", 1024.0),
        ("", 1024.0),
        ("1e", 1024.0),
    ],
)
def test_env_f64_falls_back_silently(value, expected):
    env = {} if value is None else {"F": value}
    parsed = parse_env_f64(env, "F", default=1024.0)
    assert parsed == expected
    assert math.copysign(1.0, parsed) == 1.0


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "NaN", "nan", "-1", "-0.5", "1e400"])
def test_env_f64_non_finite_or_negative_is_a_startup_error(value):
    with pytest.raises(ConfigError, match=r"^BUDGET must be finite and >= 0$"):
        parse_env_f64({"BUDGET": value}, "BUDGET", default=1.0)


# --- charge formula (spec 60 §5.3) ----------------------------------------------------------------

TEST_PRICING = CreditPricing(2, 3, 5, 7, 11, 13)


def test_worst_case_replaces_each_missing_measurement():
    assert TEST_PRICING.compute_charge(k_bits=None, fuel=10, max_memory_pages=None) == 109
    assert TEST_PRICING.compute_charge(k_bits=1, fuel=1, max_memory_pages=1) == 10
    assert TEST_PRICING.compute_charge(k_bits=None, fuel=None, max_memory_pages=None) == (
        2 * 7 + 3 * 11 + 5 * 13
    )


def test_default_pricing_matches_the_spec():
    pricing = CreditPricing()
    assert pricing == CreditPricing.from_env({})
    assert pricing.compute_charge(k_bits=3, fuel=100, max_memory_pages=2) == 3 + 100 + 2000


def test_pricing_from_env():
    env = {
        "EVIDENCEOS_LAMBDA_K_PER_BIT": "2",
        "EVIDENCEOS_LAMBDA_CPU_PER_FUEL": "3",
        "EVIDENCEOS_LAMBDA_MEM_PER_WASM_PAGE": "5",
        "EVIDENCEOS_CREDIT_WORST_CASE_K_BITS": "7",
        "EVIDENCEOS_CREDIT_WORST_CASE_FUEL": "11",
        "EVIDENCEOS_CREDIT_WORST_CASE_PAGES": "bogus",
    }
    assert CreditPricing.from_env(env) == CreditPricing(2, 3, 5, 7, 11, 16)


def test_charge_saturates_at_u64_max():
    pricing = CreditPricing(lambda_k_per_bit=U64_MAX)
    assert pricing.compute_charge(k_bits=2, fuel=0, max_memory_pages=0) == U64_MAX
    assert pricing.compute_charge(k_bits=None, fuel=None, max_memory_pages=None) == U64_MAX


def test_pricing_and_measurements_must_be_u64():
    with pytest.raises(ValueError, match="lambda_k_per_bit"):
        CreditPricing(lambda_k_per_bit=-1)
    with pytest.raises(ValueError, match="worst_case_fuel"):
        CreditPricing(worst_case_fuel=U64_MAX + 1)
    with pytest.raises(ValueError, match="fuel"):
        CreditPricing().compute_charge(k_bits=0, fuel=-1, max_memory_pages=0)
    with pytest.raises(ValueError, match="k_bits"):
        CreditPricing().compute_charge(k_bits=True, fuel=0, max_memory_pages=0)


pricings = st.builds(CreditPricing, small, small, small, small, small, small) | st.builds(
    CreditPricing, u64, u64, u64, u64, u64, u64
)
measurement = st.none() | u64


@given(pricing=pricings, k=measurement, fuel=measurement, pages=measurement)
def test_charge_is_a_u64(pricing, k, fuel, pages):
    charge = pricing.compute_charge(k_bits=k, fuel=fuel, max_memory_pages=pages)
    assert 0 <= charge <= U64_MAX


@given(pricing=pricings, a=u64, b=u64, x=u64, y=u64)
def test_charge_is_monotone_in_each_measurement(pricing, a, b, x, y):
    lo, hi = min(a, b), max(a, b)
    for field in ("k_bits", "fuel", "max_memory_pages"):
        others = {"k_bits": x, "fuel": y, "max_memory_pages": x}
        low = pricing.compute_charge(**{**others, field: lo})
        high = pricing.compute_charge(**{**others, field: hi})
        assert low <= high


@given(k=st.integers(0, 1_000_000), fuel=st.integers(0, 1_000_000), pages=st.integers(0, 16))
def test_missing_measurement_costs_at_least_any_real_one_with_default_knobs(k, fuel, pages):
    pricing = CreditPricing()
    real = pricing.compute_charge(k_bits=k, fuel=fuel, max_memory_pages=pages)
    for missing in ("k_bits", "fuel", "max_memory_pages"):
        args: dict[str, int | None] = {"k_bits": k, "fuel": fuel, "max_memory_pages": pages}
        args[missing] = None
        assert pricing.compute_charge(**args) >= real
    assert pricing.compute_charge(k_bits=None, fuel=None, max_memory_pages=None) >= real


@pytest.mark.parametrize(
    ("taxed", "kout", "expected"),
    [
        (3.0, 0.0, 3),
        (1.2, 0.0, 2),
        (2.0, 0.0000001, 3),
        (-5.0, 1.0, 0),
        (0.0, 3301.0, 3301),
        (math.nan, 0.0, None),
        (0.0, math.inf, None),
        (-math.inf, 0.0, None),
        (1e308, 1e308, U64_MAX),
        (2.0**70, 0.0, U64_MAX),
    ],
)
def test_k_bits_rounds_up_and_falls_back_when_non_finite(taxed, kout, expected):
    assert compute_k_bits(taxed, kout) == expected


def test_execution_charge_treats_zero_fuel_and_pages_as_unmeasured():
    charge = compute_execution_charge(
        TEST_PRICING, taxed_bits=1.5, kout_bits_total=0.0, fuel_total=0, max_memory_pages=0
    )
    assert charge == 2 * 2 + 3 * 11 + 5 * 13
    charge = compute_execution_charge(
        TEST_PRICING, taxed_bits=math.nan, kout_bits_total=0.0, fuel_total=4, max_memory_pages=1
    )
    assert charge == 2 * 7 + 3 * 4 + 5 * 1


@given(taxed=st.floats(allow_nan=True), kout=st.floats(allow_nan=True))
def test_k_bits_is_none_or_a_u64_at_least_the_exact_sum(taxed, kout):
    k = compute_k_bits(taxed, kout)
    if k is None:
        assert not (math.isfinite(taxed) and math.isfinite(kout))
    else:
        assert 0 <= k <= U64_MAX
        total = taxed + kout
        if math.isfinite(total) and total < 2.0**63:
            assert k >= total


# --- accounts (spec 60 §5.2, §5.7) ----------------------------------------------------------------


def test_new_account_starts_full():
    acct = Account.open(100, day=DAY)
    assert acct == Account(100, 100, DAY, AccountLimits(100, 100), 0, 0)


def test_store_scenario_burn_refuse_grant():
    admission = StaticAdmissionProvider(default_limit=100)
    acct = apply_charge(None, principal_id=ALICE, amount=40, admission=admission, day=DAY)
    assert acct.credit_balance == 60
    with pytest.raises(ResourceExhausted, match=r"^insufficient credit$"):
        apply_charge(acct, principal_id=ALICE, amount=61, admission=admission, day=DAY)
    acct = apply_grant_credit(
        acct, principal_id=ALICE, amount=10, reason="top-up", admission=admission, day=DAY
    )
    assert acct.credit_balance == 70
    assert acct.burned_total == 40


def test_refused_burn_changes_nothing_and_denial_is_counted_separately():
    acct = Account.open(10, day=DAY)
    with pytest.raises(InsufficientCredit):
        acct.burn(11)
    assert acct.credit_balance == 10
    assert acct.record_denial().denied_total == 1


def test_charge_above_admission_limit_refused_before_the_balance():
    admission = StaticAdmissionProvider(default_limit=1000)
    with pytest.raises(AdmissionDenied, match=r"^requested credit exceeds admission limit$"):
        apply_charge(None, principal_id=ALICE, amount=1001, admission=admission, day=DAY)
    acct = apply_charge(None, principal_id=ALICE, amount=1000, admission=admission, day=DAY)
    assert acct.credit_balance == 0


def test_grant_is_capped_at_the_credit_limit_and_a_new_account_is_already_full():
    admission = StaticAdmissionProvider(default_limit=100)
    fresh = apply_grant_credit(
        None, principal_id=ALICE, amount=50, reason="r", admission=admission, day=DAY
    )
    assert fresh.credit_balance == 100
    drained = Account.open(100, day=DAY).burn(95)
    assert drained.grant(50).credit_balance == 55
    assert drained.grant(96).credit_balance == 100
    with pytest.raises(AdmissionDenied):
        apply_grant_credit(
            drained, principal_id=ALICE, amount=101, reason="r", admission=admission, day=DAY
        )


@pytest.mark.parametrize(
    ("principal", "amount", "reason", "message"),
    [
        ("", 1, "r", "principal_id must be in [1,256]"),
        ("p" * 257, 1, "r", "principal_id must be in [1,256]"),
        ("é" * 129, 1, "r", "principal_id must be in [1,256]"),
        ("p", 1, "", "reason must be in [1,256]"),
        ("p", 1, "r" * 257, "reason must be in [1,256]"),
        ("p", 0, "r", "amount must be > 0"),
        ("", 0, "", "principal_id must be in [1,256]"),
        ("p", 0, "", "reason must be in [1,256]"),
    ],
)
def test_grant_request_validation_in_order(principal, amount, reason, message):
    with pytest.raises(InvalidArgument) as info:
        verify_grant_credit_request(principal, amount, reason)
    assert str(info.value) == message


def test_grant_request_limits_are_inclusive():
    verify_grant_credit_request("p" * 256, U64_MAX, "r" * 256)


def test_set_credit_limit_cuts_the_balance_and_keeps_the_mint_limit():
    admission = StaticAdmissionProvider(default_limit=100)
    acct = apply_set_credit_limit(None, principal_id=ALICE, limit=10, admission=admission, day=DAY)
    assert (acct.credit_balance, acct.limits) == (10, AccountLimits(10, 100))
    zero = acct.set_credit_limit(0)
    assert zero.credit_balance == 0
    raised = zero.set_credit_limit(50)
    assert raised.credit_balance == 0  # raising a limit does not mint
    with pytest.raises(AdmissionDenied):
        apply_set_credit_limit(None, principal_id=ALICE, limit=101, admission=admission, day=DAY)
    with pytest.raises(InvalidArgument, match=r"principal_id must be in \[1,256\]"):
        verify_set_credit_limit_request("", 1)


def test_daily_mint_is_reset_on_a_new_day_but_never_spent():
    acct = Account.open(100, day=DAY).burn(30)
    acct = Account(acct.credit_balance, 5, acct.last_mint_day, acct.limits, acct.burned_total, 0)
    assert acct.roll_mint_day(DAY) is acct
    rolled = acct.roll_mint_day(DAY + 1)
    assert (rolled.last_mint_day, rolled.daily_mint_remaining) == (DAY + 1, 100)
    assert rolled.credit_balance == 70
    assert rolled.roll_mint_day(DAY).last_mint_day == DAY  # any other day resets, as in REF


def test_stored_account_keeps_its_limits_when_admission_changes():
    stored = Account.open(100, day=DAY)
    later = ensure_account(stored, limit=5000, day=DAY + 3)
    assert later.limits == AccountLimits(100, 100)
    assert ensure_account(None, limit=5000, day=DAY) == Account.open(5000, day=DAY)


def test_account_fields_must_be_u64():
    with pytest.raises(ValueError, match="credit_balance"):
        Account(-1, 0, 0, AccountLimits(0, 0))
    with pytest.raises(ValueError, match="credit_limit"):
        AccountLimits(U64_MAX + 1, 0)
    with pytest.raises(ValueError, match="amount"):
        Account.open(1, day=0).burn(-1)


def test_totals_saturate():
    acct = Account(U64_MAX, 0, 0, AccountLimits(U64_MAX, 0), U64_MAX - 1, U64_MAX)
    assert acct.burn(5).burned_total == U64_MAX
    assert acct.record_denial().denied_total == U64_MAX
    assert acct.grant(U64_MAX).credit_balance == U64_MAX


def test_unix_day():
    assert compute_unix_day(0) == 0
    assert compute_unix_day(86_399) == 0
    assert compute_unix_day(1_735_689_600) == 20_089
    with pytest.raises(ValueError, match="epoch"):
        compute_unix_day(-1)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("burn"), u64 | small),
        st.tuples(st.just("grant"), u64 | small),
        st.tuples(st.just("limit"), u64 | small),
        st.tuples(st.just("deny"), st.just(0)),
        st.tuples(st.just("day"), st.integers(0, 3)),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(start=u64 | small, ops=operations)
def test_account_arithmetic_never_goes_negative_or_over_the_limit(start, ops):
    acct = Account.open(start, day=DAY)
    for op, value in ops:
        before = acct
        if op == "burn":
            try:
                acct = acct.burn(value)
            except InsufficientCredit:
                assert before.credit_balance < value
                acct = acct.record_denial()
            else:
                assert acct.credit_balance == before.credit_balance - value
        elif op == "grant":
            acct = acct.grant(value)
            assert acct.credit_balance >= before.credit_balance
        elif op == "limit":
            acct = acct.set_credit_limit(value)
        elif op == "deny":
            acct = acct.record_denial()
        else:
            acct = acct.roll_mint_day(DAY + value)
        for amount in (
            acct.credit_balance,
            acct.daily_mint_remaining,
            acct.burned_total,
            acct.denied_total,
            acct.limits.credit_limit,
            acct.limits.daily_mint_limit,
        ):
            assert 0 <= amount <= U64_MAX
        assert acct.credit_balance <= acct.limits.credit_limit
        assert acct.burned_total >= before.burned_total
        assert acct.denied_total >= before.denied_total


@given(limit=small, amounts=st.lists(small, max_size=20))
def test_apply_charge_never_overdraws(limit, amounts):
    admission = StaticAdmissionProvider(default_limit=limit)
    acct: Account | None = None
    spent = 0
    for amount in amounts:
        try:
            acct = apply_charge(acct, principal_id=ALICE, amount=amount, admission=admission, day=0)
        except ResourceExhausted:
            continue
        spent += amount
        assert acct.credit_balance == limit - spent >= 0
        assert acct.burned_total == spent


# --- admission (spec 60 §5.5) ---------------------------------------------------------------------


def test_principal_limit_parsing():
    raw = (
        "bearer:190aec7389a3b0b5b6c67ac2756cb7b7bc6e5d936ae83d34f55a150a67a13003=500,"
        "anonymous=0, spaced = 7 , =5,bad=abc,nolimit,twice=1,twice=2,neg=-1,eq=1=2,plus=+3"
    )
    assert parse_principal_credit_limits(raw) == {
        "bearer:190aec7389a3b0b5b6c67ac2756cb7b7bc6e5d936ae83d34f55a150a67a13003": 500,
        "anonymous": 0,
        "spaced": 7,
        "twice": 2,
        "plus": 3,
    }
    assert find_invalid_principal_credit_limits(raw) == (5, 6, 9, 10)
    assert parse_principal_credit_limits(None) == {}
    assert find_invalid_principal_credit_limits(None) == ()


def test_static_admission_from_env():
    provider = StaticAdmissionProvider.from_env(
        {"EVIDENCEOS_DEFAULT_CREDIT_LIMIT": "1000", "EVIDENCEOS_PRINCIPAL_CREDIT_LIMITS": "a=5"}
    )
    assert provider.max_credit("a") == 5
    assert provider.max_credit("b") == 1000
    provider.admit("a", 5)
    with pytest.raises(AdmissionDenied, match="requested credit exceeds admission limit"):
        provider.admit("a", 6)
    default = StaticAdmissionProvider.from_env({})
    assert default.max_credit("anyone") == 10_000_000


def test_static_admission_is_immutable():
    limits = {"a": 1}
    provider = StaticAdmissionProvider(per_principal=limits)
    limits["a"] = 99
    assert provider.max_credit("a") == 1
    with pytest.raises(TypeError):
        provider.per_principal["a"] = 2  # type: ignore[index]
    with pytest.raises(ValueError, match="per-principal limit"):
        StaticAdmissionProvider(per_principal={"a": -1})


def test_admission_provider_is_pluggable():
    class Stake(AdmissionProvider):
        def max_credit(self, principal_id: str) -> int:
            return 3 if principal_id == "staked" else 0

    stake = Stake()
    stake.admit("staked", 3)
    with pytest.raises(AdmissionDenied):
        stake.admit("other", 1)
    acct = apply_charge(None, principal_id=PrincipalId("staked"), amount=2, admission=stake, day=0)
    assert acct.credit_balance == 1


# --- holdout pool budgets (spec 60 §5.8) ----------------------------------------------------------

HANDLE = "ab" * 32


def test_scope_parse_is_exact():
    assert HoldoutPoolScope.parse("per_principal") is HoldoutPoolScope.PER_PRINCIPAL
    for bad in ("Global", " global", "principal", ""):
        with pytest.raises(InvalidArgument, match=r"^invalid holdout_pool_scope$"):
            HoldoutPoolScope.parse(bad)


def test_scope_pool_keys_and_selection():
    assert HoldoutPoolScope.GLOBAL.pool_principals("p") == (None,)
    assert HoldoutPoolScope.PER_PRINCIPAL.pool_principals("p") == ("p",)
    assert HoldoutPoolScope.BOTH.pool_principals("p") == (None, "p")
    assert HoldoutPoolScope.GLOBAL.matches(None)
    assert not HoldoutPoolScope.GLOBAL.matches("p")
    assert HoldoutPoolScope.PER_PRINCIPAL.matches("p")
    assert not HoldoutPoolScope.PER_PRINCIPAL.matches(None)
    assert HoldoutPoolScope.BOTH.matches(None)
    assert HoldoutPoolScope.BOTH.matches("p")


@pytest.mark.parametrize(
    ("holdout_id", "scope", "message"),
    [
        ("", "global", "holdout_id must be in [1,128]"),
        ("a" * 129, "global", "holdout_id must be in [1,128]"),
        ("zz" * 32, "global", "holdout_id is not valid hex"),
        ("é" * 10, "global", "holdout_id is not valid hex"),
        ("abc", "global", "holdout_id is not valid hex"),
        ("ab " * 21, "global", "holdout_id is not valid hex"),
        ("ab" * 16, "global", "holdout_id must be 32 bytes (64 hex digits)"),
        ("ab" * 33, "global", "holdout_id must be 32 bytes (64 hex digits)"),
        (HANDLE, "everything", "invalid holdout_pool_scope"),
        ("zz", "everything", "holdout_id is not valid hex"),
    ],
)
def test_holdout_selector_validation_in_order(holdout_id, scope, message):
    with pytest.raises(InvalidArgument) as info:
        parse_holdout_pool_selector(holdout_id, scope)
    assert str(info.value) == message


def test_holdout_selector_trims_the_scope_and_accepts_uppercase_hex():
    selector = parse_holdout_pool_selector(HANDLE.upper(), "  both ")
    assert selector == HoldoutPoolSelector(bytes.fromhex(HANDLE), HoldoutPoolScope.BOTH)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, -1e-300])
def test_budget_values_must_be_finite_and_non_negative(value):
    with pytest.raises(InvalidArgument, match=r"^new_k_bits_budget must be finite and >= 0$"):
        verify_budget_value(value, "new_k_bits_budget")


def test_budget_value_zero_is_allowed():
    verify_budget_value(0.0, "new_access_credit_budget")
    verify_budget_value(1e300, "new_access_credit_budget")


def test_pool_defaults_from_env():
    assert HoldoutPoolDefaults.from_env({}) == HoldoutPoolDefaults(
        1024.0, 1024.0, HoldoutPoolScope.GLOBAL, 600_000, 5
    )
    env = {
        "EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET": "77",
        "EVIDENCEOS_DEFAULT_HOLDOUT_ACCESS_CREDIT_BUDGET": "oops",
        "EVIDENCEOS_HOLDOUT_POOL_SCOPE": "both",
        "EVIDENCEOS_RESERVATION_TTL_MS": "x",
        "EVIDENCEOS_RESERVATION_SWEEP_INTERVAL_SECS": "9",
    }
    assert HoldoutPoolDefaults.from_env(env) == HoldoutPoolDefaults(
        77.0, 1024.0, HoldoutPoolScope.BOTH, 600_000, 9
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EVIDENCEOS_HOLDOUT_POOL_SCOPE": " both"}, "invalid holdout_pool_scope"),
        ({"EVIDENCEOS_HOLDOUT_POOL_SCOPE": ""}, "invalid holdout_pool_scope"),
        ({"EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET": "-1"}, "must be finite and >= 0"),
        ({"EVIDENCEOS_DEFAULT_HOLDOUT_ACCESS_CREDIT_BUDGET": "inf"}, "must be finite and >= 0"),
        ({"EVIDENCEOS_RESERVATION_TTL_MS": "0"}, "reservation_ttl_ms must be > 0"),
        (
            {"EVIDENCEOS_RESERVATION_SWEEP_INTERVAL_SECS": "0"},
            "reservation_sweep_interval_secs must be > 0",
        ),
    ],
)
def test_pool_defaults_refuse_bad_values(env, message):
    with pytest.raises(ConfigError) as info:
        HoldoutPoolDefaults.from_env(env)
    assert message in str(info.value)


def test_pool_defaults_value_checks():
    with pytest.raises(ConfigError, match="default_holdout_k_bits_budget must be finite"):
        HoldoutPoolDefaults(k_bits_budget=math.nan)
