"""PLN fuel padding (spec 30 §5.5): the padded total, its errors, and the burn module."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from evidenceos.errors import FailedPrecondition, InvalidArgument
from evidenceos.sandbox import BURN_WASM_MODULE, Sandbox, VaultLimits, padded_fuel_total


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.mark.parametrize(("fuel_used", "total"), [(25, 120), (137, 140), (120, 120), (0, 120)])
def test_reference_vectors(fuel_used: int, total: int) -> None:
    assert padded_fuel_total(10, fuel_used, 120, 200) == total


def test_reference_vector_over_max_fuel() -> None:
    with pytest.raises(FailedPrecondition, match=r"^PLN max fuel exceeded$"):
        padded_fuel_total(10, 201, 120, 200)


@pytest.mark.parametrize(("fuel_used", "total"), [(0, 0), (25, 30), (30, 30), (31, 40)])
def test_without_pln_only_rounds_up(fuel_used: int, total: int) -> None:
    assert padded_fuel_total(10, fuel_used, None, None) == total


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 5, 120, 200), InvalidArgument, "epoch_size must be > 0"),
        ((0, 5, None, None), InvalidArgument, "epoch_size must be > 0"),
        ((10, 5, 0, 200), FailedPrecondition, "PLN config invalid"),
        ((10, 5, 120, 0), FailedPrecondition, "PLN config invalid"),
        ((10, 5, 120, None), FailedPrecondition, "PLN config invalid"),
        ((10, 5, None, 200), FailedPrecondition, "PLN config invalid"),
        ((10, 5, 201, 200), FailedPrecondition, "PLN target exceeds max fuel"),
    ],
)
def test_invalid_inputs(
    args: tuple[int, int, int | None, int | None], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        padded_fuel_total(*args)


def test_total_saturates_at_u64() -> None:
    assert padded_fuel_total(10, 2**64 - 1, None, None) == 2**64 - 1


@given(
    epoch=st.integers(1, 10_000),
    fuel_used=st.integers(0, 10**7),
    target=st.integers(1, 10**7),
    extra=st.integers(0, 10**7),
)
def test_total_is_the_least_epoch_multiple_covering_fuel_and_target(
    epoch: int, fuel_used: int, target: int, extra: int
) -> None:
    max_fuel = max(target, fuel_used) + extra
    total = padded_fuel_total(epoch, fuel_used, target, max_fuel)
    normalized = max(fuel_used, target)
    assert total % epoch == 0
    assert normalized <= total < normalized + epoch


def test_burn_module_is_the_38_byte_loop() -> None:
    assert len(BURN_WASM_MODULE) == 38
    assert (
        bytes(wasmtime.wat2wasm('(module (func (export "run") (loop (br 0))))')) == BURN_WASM_MODULE
    )


@pytest.mark.parametrize("padding", [0, 1, 7, 1_000, 1_000_000])
def test_burn_runs_the_padding_to_exhaustion(sandbox: Sandbox, padding: int) -> None:
    sandbox.burn(padding)


def test_burn_refuses_negative_padding(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidArgument):
        sandbox.burn(-1)


def test_padding_equalises_fuel_of_different_guests(sandbox: Sandbox) -> None:
    """Two guests with different raw fuel are charged the same padded total (spec 30 §5.6)."""
    emit_only = """
    (module
      (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "run") (drop (call $emit (i32.const 0) (i32.const 1)))))
    """
    with_loop = """
    (module
      (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "run") (local $i i32)
        (loop $again
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get $i) (i32.const 20))))
        (drop (call $emit (i32.const 0) (i32.const 1)))))
    """
    limits = VaultLimits.fast_lane(1)
    totals = []
    used = []
    for wat in (emit_only, with_loop):
        result = sandbox.execute(
            sandbox.compile(bytes(wasmtime.wat2wasm(wat))),
            limits=limits,
            holdout_len=1,
            oracle=lambda _: 0,
            validate_output=lambda raw: (raw, 0),
        )
        total = padded_fuel_total(100, result.fuel_used, 500, 1_000)
        sandbox.burn(total - result.fuel_used)
        used.append(result.fuel_used)
        totals.append(total)
    assert used[0] < used[1]
    assert totals == [500, 500]


def _fresh_store_burn(engine_sandbox: Sandbox, padding: int) -> None:
    """The spec's burn done naively: a new store and instance per burn."""
    store = wasmtime.Store(engine_sandbox._engine)
    store.set_fuel(padding)
    run = wasmtime.Instance(store, wasmtime.Module(store.engine, BURN_WASM_MODULE), []).exports(
        store
    )["run"]
    assert isinstance(run, wasmtime.Func)
    with pytest.raises(wasmtime.Trap) as trap:
        run(store)
    assert trap.value.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
    assert store.get_fuel() == 0


def test_reused_burn_store_burns_the_whole_padding_every_time(sandbox: Sandbox) -> None:
    """The per-thread burn store is refilled with exactly the padding before each run: a second
    large burn costs as much CPU as a burn in a fresh store, not the near-nothing of a run that
    starts with an empty (or stale) tank."""
    big = 20_000_000
    sandbox.burn(5)
    store = sandbox._burn_rig.store
    assert store is not None
    sandbox.burn(3)
    assert sandbox._burn_rig.store is store  # reused
    assert store.get_fuel() == 0
    spent = {"reused": 0.0, "fresh": 0.0}
    for _ in range(2):
        started = time.thread_time()
        sandbox.burn(big)
        spent["reused"] += time.thread_time() - started
        assert store.get_fuel() == 0
        started = time.thread_time()
        _fresh_store_burn(sandbox, big)
        spent["fresh"] += time.thread_time() - started
    assert spent["reused"] > 0.3 * spent["fresh"], spent


def test_each_thread_burns_in_its_own_store(sandbox: Sandbox) -> None:
    stores: list[object] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for padding in (1, 1_000, 17):
                sandbox.burn(padding)
            stores.append(sandbox._burn_rig.store)  # kept alive: distinct ids
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({id(store) for store in stores}) == 4


def test_a_burn_leaves_no_garbage_for_the_cyclic_gc(sandbox: Sandbox) -> None:
    """Every execution burns padding; a reference cycle per burn would keep each request's frames
    alive until the cyclic GC runs."""
    sandbox.burn(400)
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            sandbox.burn(400)
        assert gc.collect() < 50  # one cycle per burn was ~18 objects each
    finally:
        gc.enable()
