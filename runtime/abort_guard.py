"""The poison line for a transport that aborts the process inside a channel's collective.

gloo cannot receive a message longer than the buffer it was given: its I/O thread fails an
``enforce`` and the C++ runtime calls ``abort()`` (``terminate called after throwing an
instance of 'gloo::EnforceNotMet' ... op.preamble.length <= op.nbytes``). No Python
exception is raised and no ``except`` runs, so a peer that sends more than this rank
expects (another layout, another protocol, a bug) would kill it with SIGABRT and no line
naming the envelope.

While a channel collective is in flight, a C-level SIGABRT handler (installed once per
process, through ctypes) writes the channel's poison line (rank, ids, what was running)
and exits with ``EXIT_POISONED``. Outside tpwire's collectives it hands the signal to the
handler that was there before (faulthandler, say) or lets the default action happen. The
process is dying either way: a transport abort is never turned into an exception, even
under ``poison="raise"``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable

_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)

#: What each thread is doing inside a tpwire collective: a function making its poison line.
_in_flight: dict[int, Callable[[], str]] = {}
_exit_code = 86
_previous: int | None = None
_installed = False
_lock = threading.Lock()


def _on_abort(signum: int) -> None:
    lines = list(_in_flight.values())
    if not lines:
        previous = _previous
        if previous not in (None, 0, 1):  # SIG_DFL, SIG_IGN: abort() goes on by itself
            _HANDLER(previous)(signum)
        return
    out = []
    for line in lines:
        try:
            out.append(line())
        except BaseException as exc:  # the line must come out whatever the state
            out.append(f"tpwire: POISONED: transport aborted ({exc!r} while describing it)")
    text = "".join(f"{x}; exiting {_exit_code}\n" for x in out)
    os.write(2, text.encode(errors="replace"))
    os._exit(_exit_code)


_CALLBACK = _HANDLER(_on_abort)  # kept alive for the life of the process


def install(exit_code: int) -> bool:
    """Install the handler once per process; False where it cannot be (no POSIX libc)."""
    global _installed, _previous, _exit_code
    with _lock:
        if _installed:
            return True
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            set_handler = libc.signal
        except (OSError, AttributeError):
            return False
        set_handler.restype = ctypes.c_void_p
        set_handler.argtypes = [ctypes.c_int, _HANDLER]
        previous = set_handler(signal.SIGABRT, _CALLBACK)
        if previous is not None and previous & ((1 << 64) - 1) == (1 << 64) - 1:  # SIG_ERR
            return False
        _previous, _exit_code, _installed = previous, exit_code, True
        return True


class armed:
    """``with armed(line):`` around a collective: an abort inside it prints ``line()``."""

    __slots__ = ("_before", "_key", "_line")

    def __init__(self, line: Callable[[], str]) -> None:
        self._line = line
        self._key = 0
        self._before: Callable[[], str] | None = None

    def __enter__(self) -> None:
        self._key = threading.get_ident()
        self._before = _in_flight.get(self._key)
        _in_flight[self._key] = self._line

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            _in_flight.pop(self._key, None)
        else:
            _in_flight[self._key] = self._before
