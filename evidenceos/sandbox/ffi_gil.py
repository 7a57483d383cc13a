"""Keep the GIL across wasmtime's short foreign calls (decision D-A5).

Why: wasmtime-py loads ``_libwasmtime.so`` with ``ctypes.cdll``, so every foreign call (store_new,
set_fuel, export lookups, store_delete, ...; 50-100 per guest execution) releases the GIL and takes
it back. With the daemon's 32 gRPC handler threads each release hands the GIL to another thread
(futex wake, context switch): most of an execution's CPU went to the kernel. :func:`install`
rebinds wasmtime-py's function pointers to ``ctypes.PyDLL`` twins (same symbol, ``restype``,
``argtypes`` and ``errcheck``), which keep the GIL. wasmtime-py's wrappers look their ``_name``
pointer up in the module globals at call time, so every caller inside wasmtime-py gets the twin.

Three kinds of symbol, chosen by name (:data:`RELEASING`, :data:`RUNS_GUEST`):

* compilation, (de)serialisation, validation, engine creation, async/futures, file I/O and GC may
  run long: left alone, they keep releasing the GIL;
* calls that can run guest code (func calls, instantiation, a component post-return or resource
  drop) go through a dispatcher: they keep the GIL only inside :class:`ShortRun` on the calling
  thread, i.e. for runs of at most :data:`SHORT_RUN_MAX_FUEL` fuel; longer runs release it so
  other RPCs progress;
* everything else is a PyDLL twin.

Holding the GIL while a guest runs is safe: host functions are ctypes ``CFUNCTYPE`` trampolines
that enter Python with ``PyGILState_Ensure``, which is re-entrant on the thread holding the GIL,
and Python code in a callback still yields the GIL at the switch interval. wasmtime-py's
trampoline catches every exception itself (``LAST_EXCEPTION`` plus a trap), so no Python error is
pending when the call returns (a PyDLL call would raise it) and errors classify as before.

Fuel bounds a short run's time: this wasmtime charges bulk memory operations per byte; 1,048,576
fuel of the burn loop takes about 0.8 ms, of an ``f64.sqrt`` loop 2.6 ms, of a ``memory.grow``
loop (banned by ASPEC) 12 ms. If wasmtime-py does not look as expected nothing is installed: the
sandbox works as before, only slower, and :func:`status` says why.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
import types
from _ctypes import FUNCFLAG_CDECL, CFuncPtr
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger("evidenceos.sandbox")

#: Largest fuel limit a guest run may hold the GIL for (about a millisecond, the daemon's switch
#: interval); the FAST (1,000,000) and HEAVY (250,000) lanes are below it.
SHORT_RUN_MAX_FUEL: Final = 1 << 20

#: Symbols that keep releasing the GIL: they compile, (de)serialise, validate, build engines, are
#: asynchronous, touch files or collect garbage.
RELEASING: Final = re.compile(
    r"module_new$|module_validate$|module_serialize$|module_deserialize|module_obtain$"
    r"|wat2wasm|engine_new|component_new$|component_serialize|component_deserialize"
    r"|async|future|_file$|preopen_dir|cache_config_load|_gc$|guestprofiler"
)

#: Symbols that can enter guest code (start functions, exports, post-returns, resource drops).
RUNS_GUEST: Final = re.compile(
    r"func_call|instance_new$|instantiate|linker_module$|post_return|_drop$"
)

#: Wrappers whose pointers must be there, looked up at call time, for the install to go ahead.
_REQUIRED: Final = (
    "wasmtime_func_call",
    "wasmtime_linker_instantiate",
    "wasmtime_store_new",
    "wasmtime_context_set_fuel",
)


@dataclass(frozen=True, slots=True)
class GilStatus:
    """What :func:`install` did: pointers rebound to PyDLL twins, dispatched, left releasing."""

    installed: bool
    rebound: int = 0
    dispatched: int = 0
    releasing: int = 0
    reason: str = ""


class _Local(threading.local):
    hold: bool = False


_LOCAL = _Local()


class ShortRun:
    """``with ShortRun(max_fuel):`` guest calls on this thread keep the GIL if ``max_fuel`` is
    at most :data:`SHORT_RUN_MAX_FUEL`, and release it otherwise (the outer state is restored)."""

    __slots__ = ("_hold", "_outer")

    def __init__(self, max_fuel: int) -> None:
        self._hold = max_fuel <= SHORT_RUN_MAX_FUEL
        self._outer = False

    def __enter__(self) -> None:
        self._outer = _LOCAL.hold
        _LOCAL.hold = self._hold

    def __exit__(self, *exc_info: object) -> None:
        _LOCAL.hold = self._outer


def holds_gil_for_guest() -> bool:
    """True inside a :class:`ShortRun` that keeps the GIL on this thread."""
    return _LOCAL.hold


def _dispatcher(symbol: str, releasing: CFuncPtr, holding: CFuncPtr) -> Callable[..., object]:
    local = _LOCAL

    def call(*args: object) -> object:
        return (holding if local.hold else releasing)(*args)

    call.__name__ = call.__qualname__ = f"gil_dispatch_{symbol}"
    return call


def _address(fn: CFuncPtr) -> int | None:
    return ctypes.c_void_p.from_buffer(fn).value


def _plan(bindings: object, dll: object) -> tuple[dict[str, object], GilStatus]:
    """The replacements for ``bindings``' globals; raises ValueError if it looks unexpected."""
    if not isinstance(dll, ctypes.CDLL) or isinstance(dll, ctypes.PyDLL):
        raise ValueError("wasmtime._ffi.dll is not a ctypes.CDLL")
    namespace = getattr(bindings, "__dict__", None)
    if not isinstance(namespace, dict):
        raise ValueError("wasmtime._bindings has no namespace")
    for name in _REQUIRED:
        wrapper, pointer = namespace.get(name), namespace.get("_" + name)
        if not (
            isinstance(wrapper, types.FunctionType)
            and wrapper.__globals__ is namespace
            and "_" + name in wrapper.__code__.co_names
            and isinstance(pointer, CFuncPtr)
            and pointer._flags_ == FUNCFLAG_CDECL
        ):
            raise ValueError(f"wasmtime._bindings.{name} is not a wrapper of a cdll pointer")
    twins = ctypes.PyDLL(dll._name, handle=dll._handle)
    replacements: dict[str, object] = {}
    dispatched = releasing = 0
    for attr, fn in namespace.items():
        if not (attr.startswith("_") and isinstance(fn, CFuncPtr)):
            continue
        symbol = getattr(fn, "__name__", None)
        if symbol != attr[1:] or fn._flags_ != FUNCFLAG_CDECL or RELEASING.search(symbol):
            releasing += 1
            continue
        twin = twins[symbol]
        twin.restype = fn.restype
        twin.argtypes = fn.argtypes
        if fn.errcheck is not None:
            twin.errcheck = fn.errcheck
        if _address(twin) != _address(fn):
            raise ValueError(f"symbol {symbol} resolves elsewhere through PyDLL")
        if RUNS_GUEST.search(symbol):
            replacements[attr] = _dispatcher(symbol, fn, twin)
            dispatched += 1
        else:
            replacements[attr] = twin
    rebound = len(replacements) - dispatched
    return replacements, GilStatus(True, rebound, dispatched, releasing)


def install_into(bindings: object, dll: object) -> GilStatus:
    """Rebind ``bindings``' pointers (all or nothing); on anything unexpected change nothing and
    return the reason."""
    try:
        replacements, result = _plan(bindings, dll)
    except Exception as exc:  # noqa: BLE001 - any surprise means: leave wasmtime-py as it is
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("wasmtime GIL fast path not installed (%s); guest calls will be slower", reason)
        return GilStatus(False, reason=reason)
    vars(bindings).update(replacements)
    return result


_INSTALL_LOCK = threading.Lock()
_STATUS: GilStatus | None = None


def install() -> GilStatus:
    """Install the fast path on the imported wasmtime-py once; later calls return the status."""
    global _STATUS
    with _INSTALL_LOCK:
        if _STATUS is None:
            try:
                import wasmtime._bindings as bindings  # private: may change, checked below
                import wasmtime._ffi as ffi
            except ImportError as exc:
                _STATUS = GilStatus(False, reason=f"ImportError: {exc}")
            else:
                _STATUS = install_into(bindings, getattr(ffi, "dll", None))
        return _STATUS


def status() -> GilStatus:
    """The install's outcome (not installed yet: ``installed=False``)."""
    return _STATUS or GilStatus(False, reason="not installed yet")
