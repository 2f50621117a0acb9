"""The poison line for a transport that aborts the process inside a channel's collective.

gloo cannot receive a message longer than the buffer it was given: its I/O thread fails an
``enforce`` and the C++ runtime calls ``abort()`` (``terminate called after throwing an
instance of 'gloo::EnforceNotMet' ... op.preamble.length <= op.nbytes``). No Python
exception is raised and no ``except`` runs, so a peer that sends more than this rank
expects (another layout, another protocol, a bug) would kill it with SIGABRT and no line
naming the envelope.

While a channel collective is in flight (and only then), a C-level SIGABRT handler is
installed with ``sigaction`` through ctypes: it writes the channel's poison line (rank,
ids, what was running) and exits with ``EXIT_POISONED``. When the last collective in
flight ends, the handler that was there before (the default, faulthandler's, torch's) is
put back exactly as it was, flags included, so an abort anywhere else behaves as it did
without tpwire, and the handler (a Python callback, which needs the GIL) never runs
outside tpwire's collectives. The process is dying either way: a transport abort is never
turned into an exception, even under ``poison="raise"``. Where ``sigaction`` cannot be
reached (no POSIX libc), the guard does nothing and an overlong message aborts as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable

_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)
#: Room for the platform's ``struct sigaction`` (152 bytes on glibc), kept opaque: the
#: handler is its first member everywhere; a zero mask and zero flags mean a plain handler.
_SIGACTION_BYTES = 512

#: What each thread is doing inside a tpwire collective: a function making its poison line.
_in_flight: dict[int, Callable[[], str]] = {}
_exit_code = 86
_lock = threading.Lock()
#: bumped in a child after ``fork``: a block entered before it is the parent's, not the child's
_generation = 0


def _on_abort(signum: int) -> None:
    try:
        out = []
        for line in list(_in_flight.values()):
            try:
                out.append(line())
            except BaseException as exc:  # the line must come out whatever the state
                why = type(exc).__name__
                out.append(f"tpwire: POISONED: SIGABRT during a collective ({why} describing it)")
        text = "".join(f"{x}; exiting {_exit_code}\n" for x in out)
        os.write(2, text.encode(errors="replace"))
    finally:
        os._exit(_exit_code)


_CALLBACK = _HANDLER(_on_abort)  # kept alive for the life of the process


def _sigaction() -> Callable[[int, object, object], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sigaction
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    installer: Callable[[int, object, object], int] = fn
    return installer


_SIGACTION = _sigaction()
_OURS = ctypes.create_string_buffer(_SIGACTION_BYTES)
ctypes.c_void_p.from_buffer(_OURS).value = ctypes.cast(_CALLBACK, ctypes.c_void_p).value
_SAVED = ctypes.create_string_buffer(_SIGACTION_BYTES)
# plain ints for the two calls every collective makes: ctypes converts them fastest
_SIGABRT = int(signal.SIGABRT)
_OURS_AT = ctypes.addressof(_OURS)
_SAVED_AT = ctypes.addressof(_SAVED)
_get_ident = threading.get_ident


def set_exit_code(code: int) -> None:
    global _exit_code
    _exit_code = code


class armed:
    """``with armed(line):`` around a collective: an abort inside it prints ``line()``.

    The first collective in flight installs the handler, the last one to end restores what
    was there before (threads may overlap: a p2p stage sends and receives at once)."""

    __slots__ = ("_before", "_generation", "_key", "_line")

    def __init__(self, line: Callable[[], str]) -> None:
        self._line = line
        self._key = 0
        self._generation = 0
        self._before: Callable[[], str] | None = None

    def __enter__(self) -> None:
        self._key = key = _get_ident()
        with _lock:
            self._generation = _generation
            self._before = _in_flight.get(key)
            if not _in_flight and _SIGACTION is not None:
                _SIGACTION(_SIGABRT, _OURS_AT, _SAVED_AT)
            _in_flight[key] = self._line

    def __exit__(self, *exc: object) -> None:
        with _lock:
            if self._generation != _generation:
                return  # entered in the parent before a fork: nothing of it is this child's
            if self._before is None:
                _in_flight.pop(self._key, None)
            else:
                _in_flight[self._key] = self._before
            if not _in_flight and _SIGACTION is not None:
                _SIGACTION(_SIGABRT, _SAVED_AT, None)


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
    if _in_flight and _SIGACTION is not None:
        _SIGACTION(_SIGABRT, _SAVED_AT, None)
    _in_flight.clear()
    _lock = threading.Lock()  # the parent's is held (``_before_fork``)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
