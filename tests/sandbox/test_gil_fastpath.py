"""The GIL fast path of wasmtime's foreign calls (D-A5, :mod:`evidenceos.sandbox.ffi_gil`).

Short calls keep the GIL (PyDLL twins); calls that run guest code keep it only inside a short run;
compilation keeps releasing it; an unexpected wasmtime-py installs nothing. Whether another thread
progresses during a call is observed, not timed: a counter thread stamps ``perf_counter`` (with
the GIL held) and a stamp strictly inside a call proves the call released the GIL.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
import threading
import time
import types
from _ctypes import FUNCFLAG_PYTHONAPI as PYTHONAPI
from _ctypes import CFuncPtr
from collections.abc import Callable, Iterator

import pytest
import wasmtime
import wasmtime._bindings as bindings
import wasmtime._ffi as ffi

from evidenceos.sandbox import (
    BURN_WASM_MODULE,
    SHORT_RUN_MAX_FUEL,
    FuelExhausted,
    HostCallbackFailure,
    Sandbox,
    VaultError,
    VaultLimits,
    ffi_gil,
    gil_fast_path,
)

GUEST_CALLS = (
    "wasmtime_func_call",
    "wasmtime_func_call_unchecked",
    "wasmtime_linker_instantiate",
    "wasmtime_instance_new",
    "wasmtime_instance_pre_instantiate",
    "wasmtime_linker_module",
    "wasm_func_call",
    "wasm_instance_new",
)
LONG_CALLS = (
    "wasmtime_module_new",
    "wasmtime_module_deserialize",
    "wasmtime_module_deserialize_file",
    "wasmtime_module_serialize",
    "wasmtime_module_validate",
    "wasmtime_wat2wasm",
    "wasm_engine_new",
    "wasm_engine_new_with_config",
    "wasmtime_component_new",
    "wasmtime_func_call_async",
    "wasmtime_call_future_poll",
)
SHORT_CALLS = (
    "wasmtime_store_new",
    "wasmtime_store_delete",
    "wasmtime_context_set_fuel",
    "wasmtime_context_get_fuel",
    "wasmtime_instance_export_nth",
    "wasmtime_memory_data",
    "wasmtime_caller_context",
)
MARGIN_S = 0.010  # stamps this close to a call's start or end may come from its Python part


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox()


def test_installed_on_this_wasmtime() -> None:
    status = gil_fast_path()
    assert status.installed, status.reason
    assert status.rebound > 500
    assert status.dispatched >= len(GUEST_CALLS)
    for name in SHORT_CALLS:
        pointer = getattr(bindings, "_" + name)
        assert isinstance(pointer, CFuncPtr)
        assert pointer._flags_ & PYTHONAPI, name


def test_guest_calls_are_dispatched_and_compiles_still_release() -> None:
    for name in GUEST_CALLS:
        pointer = getattr(bindings, "_" + name)
        assert not isinstance(pointer, CFuncPtr), name
        assert callable(pointer)
    for name in LONG_CALLS:
        pointer = getattr(bindings, "_" + name)
        assert isinstance(pointer, CFuncPtr), name
        assert not pointer._flags_ & PYTHONAPI, name


def test_short_run_threshold_and_nesting() -> None:
    assert not ffi_gil.holds_gil_for_guest()
    with ffi_gil.ShortRun(SHORT_RUN_MAX_FUEL):
        assert ffi_gil.holds_gil_for_guest()
        with ffi_gil.ShortRun(SHORT_RUN_MAX_FUEL + 1):
            assert not ffi_gil.holds_gil_for_guest()
        assert ffi_gil.holds_gil_for_guest()
    assert not ffi_gil.holds_gil_for_guest()
    assert VaultLimits.fast_lane(8).max_fuel <= SHORT_RUN_MAX_FUEL


def test_the_flag_is_per_thread() -> None:
    seen: list[bool] = []
    with ffi_gil.ShortRun(1):
        worker = threading.Thread(target=lambda: seen.append(ffi_gil.holds_gil_for_guest()))
        worker.start()
        worker.join()
    assert seen == [False]


# ---------------------------------------------------------------------------------------------
# Other threads progress during long runs, and not during a held one


@pytest.fixture
def stamps() -> Iterator[list[float]]:
    """A thread appending ``perf_counter()`` as fast as it can, started and running."""
    out: list[float] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            out.append(time.perf_counter())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    worker = threading.Thread(target=count, daemon=True)
    worker.start()
    while not out:
        time.sleep(0.001)
    try:
        yield out
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(interval)


def _stamps_inside(stamps: list[float], call: Callable[[], object]) -> tuple[int, float]:
    """Run ``call``; how many stamps fall well inside it, and how long it took."""
    start = time.perf_counter()
    call()
    end = time.perf_counter()
    inside = [t for t in list(stamps) if start + MARGIN_S < t < end - MARGIN_S]
    return len(inside), end - start


def _loop_fuel_for(seconds: float) -> int:
    """Fuel the burn loop needs to run about ``seconds`` on this machine (at least 10x the
    short-run threshold)."""
    store = wasmtime.Store(wasmtime.Engine(_fuel_config()))
    run = wasmtime.Instance(store, wasmtime.Module(store.engine, BURN_WASM_MODULE), []).exports(
        store
    )["run"]
    assert isinstance(run, wasmtime.Func)
    probe = 20_000_000
    store.set_fuel(probe)
    start = time.perf_counter()
    with pytest.raises(wasmtime.Trap):
        run(store)
    rate = probe / max(time.perf_counter() - start, 1e-6)
    return max(int(rate * seconds), 10 * SHORT_RUN_MAX_FUEL)


def _fuel_config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.cranelift_opt_level = "none"
    return config


def _execute(sandbox: Sandbox, wasm: bytes, max_fuel: int) -> None:
    """Run ``wasm`` with a one-page memory, a constant oracle and any output accepted."""
    sandbox.execute(
        sandbox.compile(wasm),
        limits=VaultLimits(
            max_fuel=max_fuel, max_memory_bytes=65_536, max_oracle_calls=1, max_output_bytes=8
        ),
        holdout_len=1,
        oracle=lambda _p: 0,
        validate_output=lambda raw: (raw, 1),
    )


def test_long_guest_run_releases_the_gil(sandbox: Sandbox, stamps: list[float]) -> None:
    fuel = _loop_fuel_for(0.2)

    def run() -> None:
        with pytest.raises(FuelExhausted):
            _execute(sandbox, BURN_WASM_MODULE, fuel)

    inside, took = _stamps_inside(stamps, run)
    assert took > 4 * MARGIN_S
    assert inside > 0


def test_long_burn_releases_the_gil(sandbox: Sandbox, stamps: list[float]) -> None:
    fuel = _loop_fuel_for(0.2)
    inside, took = _stamps_inside(stamps, lambda: sandbox.burn(fuel))
    assert took > 4 * MARGIN_S
    assert inside > 0


def test_a_held_run_keeps_other_threads_out(stamps: list[float]) -> None:
    """The control: the dispatcher really keeps the GIL inside a short run (forced here on a
    ~0.3 s loop), so the observation above means something. Judged by the longest stretch
    without a stamp, not by stamps near the edges: on a loaded machine the Python around the
    call may hand the GIL over and get it back late, which says nothing about the call."""
    fuel = _loop_fuel_for(0.3)
    engine = wasmtime.Engine(_fuel_config())
    store = wasmtime.Store(engine)
    run = wasmtime.Instance(store, wasmtime.Module(engine, BURN_WASM_MODULE), []).exports(store)[
        "run"
    ]
    assert isinstance(run, wasmtime.Func)
    store.set_fuel(fuel)

    def held() -> None:
        with ffi_gil.ShortRun(1), pytest.raises(wasmtime.Trap):
            run(store)

    start = time.perf_counter()
    held()
    end = time.perf_counter()
    during = [start, *(t for t in list(stamps) if start < t < end), end]
    longest = max(b - a for a, b in itertools.pairwise(during))
    assert longest > 0.1  # the counter stood still for most of the run (released: ~1 ms)


# ---------------------------------------------------------------------------------------------
# Errors classify the same in held and released runs; fuel bounds a held run's time


@pytest.mark.parametrize("max_fuel", [100_000, 2 * SHORT_RUN_MAX_FUEL])
def test_host_errors_classify_alike_held_or_released(sandbox: Sandbox, max_fuel: int) -> None:
    module = sandbox.compile(
        bytes(
            wasmtime.wat2wasm(
                '(module (import "env" "oracle_query" (func $oq (param i32 i32) (result i32)))'
                ' (memory (export "memory") 1)'
                ' (func (export "run") (drop (call $oq (i32.const 0) (i32.const 1)))))'
            )
        )
    )
    limits = VaultLimits(
        max_fuel=max_fuel, max_memory_bytes=65_536, max_oracle_calls=2, max_output_bytes=8
    )

    def oracle(_predictions: bytes) -> int:
        raise RuntimeError("boom")

    with pytest.raises(HostCallbackFailure) as caught:
        sandbox.execute(
            module,
            limits=limits,
            holdout_len=1,
            oracle=oracle,
            validate_output=lambda raw: (raw, 1),
        )
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert caught.value.oracle_calls == 1


def test_bulk_memory_is_charged_per_byte(sandbox: Sandbox) -> None:
    """Fuel bounds a held run's time only if bulk memory operations cost fuel per byte."""
    fill = wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (func (export "run")'
        " (memory.fill (i32.const 0) (i32.const 7) (i32.const 65536))))"
    )
    with pytest.raises(VaultError) as caught:
        _execute(sandbox, bytes(fill), 1_000_000)
    assert caught.value.fuel_used >= 65_536


# ---------------------------------------------------------------------------------------------
# An unexpected wasmtime-py installs nothing


def _fake_bindings(source: str) -> types.ModuleType:
    module = types.ModuleType("fake_bindings")
    module.__dict__["dll"] = ctypes.CDLL(ffi.dll._name, handle=ffi.dll._handle)
    exec(source, module.__dict__)  # noqa: S102 - a constant, test-only module body
    return module


WRAPPERS = "".join(
    f"_{name} = dll.{name}\ndef {name}(*args):\n    return _{name}(*args)\n"
    for name in ffi_gil._REQUIRED
)


def test_install_into_a_module_shaped_like_wasmtime() -> None:
    fake = _fake_bindings(
        WRAPPERS
        + "_wasmtime_module_new = dll.wasmtime_module_new\n"
        + "import ctypes\n"
        + "_wasmtime_store_new.restype = ctypes.c_void_p\n"
        + "_wasmtime_store_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]\n"
    )
    status = ffi_gil.install_into(fake, fake.dll)
    assert status.installed, status.reason
    assert (status.rebound, status.dispatched, status.releasing) == (2, 2, 1)
    twin = fake._wasmtime_store_new
    assert twin._flags_ & PYTHONAPI
    assert twin.restype is ctypes.c_void_p
    assert list(twin.argtypes) == [ctypes.c_void_p] * 3
    assert not isinstance(fake._wasmtime_func_call, CFuncPtr)
    assert not fake._wasmtime_module_new._flags_ & PYTHONAPI


@pytest.mark.parametrize(
    "source",
    [
        "",  # no wrappers at all
        WRAPPERS.replace("return _wasmtime_func_call(", "return dll.wasmtime_func_call("),
        WRAPPERS.replace("_wasmtime_store_new = dll.wasmtime_store_new", "_wasmtime_store_new = 1"),
    ],
    ids=["empty", "wrapper-bypasses-global", "not-a-pointer"],
)
def test_unexpected_bindings_install_nothing(source: str) -> None:
    fake = _fake_bindings(source)
    before = dict(vars(fake))
    status = ffi_gil.install_into(fake, fake.dll)
    assert not status.installed
    assert status.reason
    assert vars(fake) == before


def test_unexpected_dll_or_module_installs_nothing() -> None:
    fake = _fake_bindings(WRAPPERS)
    before = dict(vars(fake))
    for dll in (None, object(), ctypes.PyDLL(ffi.dll._name, handle=ffi.dll._handle)):
        assert not ffi_gil.install_into(fake, dll).installed
    assert vars(fake) == before
    assert not ffi_gil.install_into(object(), fake.dll).installed


def test_install_is_idempotent() -> None:
    assert ffi_gil.install() is gil_fast_path()
