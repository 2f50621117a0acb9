"""The poison line for a transport that aborts the process inside a channel's collective.

gloo cannot receive a message longer than the buffer it was given: its I/O thread fails an
``enforce`` (``op.preamble.length <= op.nbytes``) and throws ``gloo::EnforceNotMet``, which
nothing catches, so the C++ runtime calls ``std::terminate`` and its handler aborts the
process (``terminate called after throwing an instance of 'gloo::EnforceNotMet'``). No
Python exception is raised and no ``except`` runs, so a peer that sends more than this rank
expects (another layout, another protocol, a bug) would kill it with no line naming the
envelope.

While a channel collective is in flight (and only then), the guard sets the C++ terminate
handler (``std::set_terminate`` of the process's C++ runtime, through ctypes). It is reached
only by an uncaught C++ exception, and it acts only on the transport's: when the exception
being handled on the terminating thread is a ``gloo::EnforceNotMet``, it writes the
channel's poison line (rank, ids, what was running) and exits with ``EXIT_POISONED``. Any
other termination goes to the handler that was there before, as without tpwire. When the
last collective in flight ends, that handler is put back (unless something replaced the
guard's meanwhile: then that one stays).

The guard touches no signal state: ``os.abort()`` from any thread, a ``SIGABRT`` handler
of the user's, ``faulthandler`` (enabled or disabled at any time) and forked children
behave exactly as they would without tpwire, inside a collective or not. The process is
dying either way: a transport abort is never turned into an exception, even under
``poison="raise"``. Where the C++ runtime cannot be reached (no ``libstdc++`` or
``libc++abi`` loaded by that name), the guard does nothing and an overlong message aborts
as before. When the interpreter starts finishing (``atexit``), the handler from before is
put back whatever is in flight and none is installed after: the guard's handler is Python
and cannot outlive the interpreter.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Sequence

# torch's C++ runtime is loaded before the guard looks for one: the guard uses the copy gloo
# runs on and never loads one of its own (an older libstdc++ loaded first can make torch's
# import fail, and a second copy's handler is not the one gloo's thread calls)
import torch  # noqa: F401

#: ``void (*)()``: a terminate handler
_HANDLER = ctypes.CFUNCTYPE(None)
#: the transport's exception, as the C++ runtime names its type (``std::type_info::name``)
_TRANSPORT_EXCEPTION = b"N4gloo13EnforceNotMetE"

#: What each thread is doing inside a tpwire collective: a function making its poison line.
_in_flight: dict[int, Callable[[], str]] = {}
_exit_code = 86
_lock = threading.Lock()
#: bumped in a child after ``fork``: a block entered before it is the parent's, not the child's
_generation = 0
#: the terminate handler that was there before the guard's (an address; 0: none known)
_saved = 0
#: set when the interpreter starts finishing (``_at_exit``): the guard installs nothing more
_closed = False
#: the bits of ``std::type_info``'s name pointer that address it: libc++ on Apple arm64 marks
#: a type whose RTTI is not unique in the top bit, which no address has
_NAME_BITS = (1 << 63) - 1 if sys.platform == "darwin" else (1 << 64) - 1


#: the C++ runtimes the guard looks for, by the names torch's libraries load them
RUNTIMES = ("libstdc++.so.6", "libc++abi.dylib", "libc++abi.so.1")
#: ``dlopen`` a library only if it is loaded already
_NOLOAD = getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL


def _runtime(
    names: Sequence[str] = RUNTIMES,
) -> tuple[Callable[[int], int], Callable[[], int], Callable[[], int]] | None:
    """``std::set_terminate``, ``std::get_terminate`` and ``__cxa_current_exception_type``
    of the C++ runtime the process has loaded (torch's), or None: a runtime that is not
    loaded is never loaded here."""
    for name in (None, *names):  # None: symbols the process already exports
        try:
            lib = ctypes.CDLL(name) if name is None else ctypes.CDLL(name, mode=_NOLOAD)
            setter = lib._ZSt13set_terminatePFvvE  # std::set_terminate(void (*)())
            getter = lib._ZSt13get_terminatev  # std::get_terminate()
            current = lib.__cxa_current_exception_type
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_void_p]
        setter.restype = ctypes.c_void_p
        getter.argtypes = []
        getter.restype = ctypes.c_void_p
        current.argtypes = []
        current.restype = ctypes.c_void_p
        return setter, getter, current
    return None


def _exception_type(current: Callable[[], int]) -> bytes | None:
    """The mangled type name of the C++ exception this thread is handling, or None."""
    info = current()
    if not info:
        return None  # std::terminate() called without an exception
    # std::type_info (Itanium C++ ABI, x86_64 and aarch64 alike): a vtable pointer, then
    # the name (a leading '*' marks a local type in libstdc++)
    at = ctypes.c_void_p.from_address(info + ctypes.sizeof(ctypes.c_void_p)).value
    if not at:
        return None
    return ctypes.string_at(at & _NAME_BITS).lstrip(b"*")


def _on_terminate() -> None:
    try:
        kind = _exception_type(_CURRENT) if _CURRENT is not None else None
    except BaseException:  # pragma: no cover - the runtime gave something unreadable
        kind = None
    if kind == _TRANSPORT_EXCEPTION and _in_flight:
        try:
            out = []
            for line in list(_in_flight.values()):
                try:
                    out.append(line())
                except BaseException as exc:  # the line must come out whatever the state
                    why = type(exc).__name__
                    out.append(
                        f"tpwire: POISONED: the transport aborted during a collective "
                        f"({why} describing it)"
                    )
            text = "".join(f"{x}; exiting {_exit_code}\n" for x in out)
            os.write(2, text.encode(errors="replace"))
        finally:
            os._exit(_exit_code)
    # not the transport's, or no collective of tpwire's in flight: what would have run
    previous = _saved
    if previous and previous != _OURS:
        _HANDLER(previous)()
    os.abort()  # a terminate handler must not return


_CALLBACK = _HANDLER(_on_terminate)  # kept alive for the life of the process
_OURS: int = ctypes.cast(_CALLBACK, ctypes.c_void_p).value or 0
#: the guard's terminate handler (an address, as ``terminate_handler`` gives it)
HANDLER = _OURS
_runtime_fns = _runtime()
_SET: Callable[[int], int] | None = None
_GET: Callable[[], int] | None = None
_CURRENT: Callable[[], int] | None = None
if _runtime_fns is not None:
    _SET, _GET, _CURRENT = _runtime_fns
_get_ident = threading.get_ident


def set_exit_code(code: int) -> None:
    global _exit_code
    _exit_code = code


def terminate_handler() -> int:
    """The address of the process's terminate handler now (0 where the C++ runtime cannot
    be reached); ``HANDLER`` is the guard's."""
    return (_GET() or 0) if _GET is not None else 0


def _restore() -> None:
    """Put back the handler from before the guard's, unless something replaced the
    guard's meanwhile (then theirs stays)."""
    assert _SET is not None
    was = _SET(_saved)
    if was != _OURS:
        _SET(was or 0)


class armed:
    """``with armed(line):`` around a collective: the transport aborting the process inside
    it prints ``line()``.

    The first collective in flight installs the handler, the last one to end restores what
    was there before (threads may overlap: a p2p stage sends and receives at once)."""

    __slots__ = ("_before", "_generation", "_key", "_line")

    def __init__(self, line: Callable[[], str]) -> None:
        self._line = line
        self._key = 0
        self._generation = 0
        self._before: Callable[[], str] | None = None

    def __enter__(self) -> None:
        global _saved
        self._key = key = _get_ident()
        with _lock:
            self._generation = _generation
            self._before = _in_flight.get(key)
            if not _in_flight and _SET is not None and not _closed:
                was = _SET(_OURS) or 0
                if was != _OURS:  # (ours already: put back by something that had saved it)
                    _saved = was
            _in_flight[key] = self._line

    def __exit__(self, *exc: object) -> None:
        with _lock:
            if self._generation != _generation:
                return  # entered in the parent before a fork: nothing of it is this child's
            if self._before is None:
                _in_flight.pop(self._key, None)
            else:
                _in_flight[self._key] = self._before
            if not _in_flight and _SET is not None and not _closed:
                _restore()


def _at_exit() -> None:
    """The interpreter is finishing: the handler is Python (a ctypes callback), which
    cannot run once the interpreter is gone (its code freed: a ``std::terminate`` in a C++
    destructor at exit crashed with ``SIGSEGV``). A collective still in flight on a daemon
    thread keeps running unguarded: the handler from before is put back now, and nothing
    installs the guard's again."""
    global _closed
    with _lock:
        _closed = True
        if _GET is not None and _GET() == _OURS:
            _restore()


atexit.register(_at_exit)


def _before_fork() -> None:
    _lock.acquire()  # no thread is halfway between installing the handler and recording it


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    """A child forked inside a guarded collective has none in flight: the handler the
    parent installed for it goes, and the blocks the parent's threads were in end without
    touching the child's state."""
    global _lock, _generation
    _generation += 1
    if _in_flight and _SET is not None:
        _restore()
    _in_flight.clear()
    _lock = threading.Lock()  # the parent's is held (``_before_fork``)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
