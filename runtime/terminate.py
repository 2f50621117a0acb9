"""The TERMINATED line: a rank with a channel open says what it was doing when SIGTERM came.

A launcher stops the surviving ranks of a job with SIGTERM when one rank dies (torchrun's
agent does, every monitor interval), often before they notice the dead peer themselves and
print their poison line. By default SIGTERM kills the process with no word, so the log held
only the line of the rank that noticed first. While a channel is open, this module prints one
line per rank instead (``tpwire[rank 1]: TERMINATED by SIGTERM while waiting for frame 0
after request_id=20``) and then lets SIGTERM do what it would have done.

What it touches, and when (docs/runtime.md, "SIGTERM"):

* The hook is installed when the first channel of the process opens and removed when the
  last one closes, and only from the main thread (only it may set a Python signal handler):
  a channel opened or closed in another thread leaves the signal state as it is.
* It is installed only over the default disposition (``SIG_DFL``) or a Python handler. A
  handler installed by C code or ``SIG_IGN`` stays, and the hook is not installed.
* After the line: over ``SIG_DFL``, the default disposition is put back and SIGTERM raised
  again, so the process dies of SIGTERM as it would have (exit status -15 / 143); over a
  Python handler (the user's), that handler is called and decides.
* A handler installed after the hook wins: the hook neither prints nor acts while SIGTERM is
  not its own, and closing the channel does not put anything back over it.
* A Python handler runs only when the main thread returns to the interpreter, and a main
  thread waiting in a gloo collective does not (it waits until the collective ends, which may
  be never). So the hook also sets ``signal.set_wakeup_fd`` to a socket read by a daemon
  thread: the C-level handler writes the signal number there at once, and the thread prints
  the line (and, over ``SIG_DFL``, ends the process) while the main thread is still blocked.
  Where a wakeup fd is already set (an asyncio loop's), it is left alone and the line comes
  only when the main thread next runs Python.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .escape import printable

__all__ = ["Activity", "doing", "installed", "register", "unregister"]

_Handler = Callable[[int, Any], Any] | int | signal.Handlers | None


class Activity:
    """What a channel is doing now, per thread (a heartbeat's send beside the main thread's
    receive): a function making the text that follows "while", called only when SIGTERM
    comes; none between collectives."""

    __slots__ = ("by_thread",)

    def __init__(self) -> None:
        self.by_thread: dict[int, Callable[[], str]] = {}

    @property
    def now(self) -> Callable[[], str] | None:
        """The main thread's step, else another thread's, else None."""
        by_thread = dict(self.by_thread)  # a copy: other threads enter and leave steps
        if not by_thread:
            return None
        main = by_thread.get(threading.main_thread().ident or 0)
        return main if main is not None else next(iter(by_thread.values()))


class doing:
    """``with doing(activity, text, inner):`` enters ``inner`` with this thread's step in
    ``activity`` set to ``text`` (a function), and puts the previous one back when it
    leaves."""

    __slots__ = ("_activity", "_inner", "_prev", "_text", "_thread")

    def __init__(
        self,
        activity: Activity,
        text: Callable[[], str],
        inner: contextlib.AbstractContextManager[None],
    ) -> None:
        self._activity = activity
        self._text = text
        self._inner = inner
        self._prev: Callable[[], str] | None = None
        self._thread = 0

    def __enter__(self) -> None:
        steps = self._activity.by_thread
        self._thread = thread = threading.get_ident()
        self._prev = steps.get(thread)
        steps[thread] = self._text
        self._inner.__enter__()

    def __exit__(self, *exc: Any) -> bool | None:
        steps = self._activity.by_thread
        if self._prev is None:
            steps.pop(self._thread, None)
        else:
            steps[self._thread] = self._prev
        return self._inner.__exit__(*exc)


class _Hook:
    """The installed handler: what it replaced, and the wakeup socket and its reader."""

    def __init__(self, previous: _Handler) -> None:
        self.previous = previous
        self.reader: socket.socket | None = None
        self.writer: socket.socket | None = None
        self.thread: threading.Thread | None = None


_lock = threading.RLock()
#: the open channels: token -> (rank, a function making what it is doing; a weak reference
#: to a channel's method, so a channel dropped without ``close`` is not kept alive), and
#: what it does when SIGTERM ends the process (its journal's END record)
_channels: dict[
    int,
    tuple[int, Callable[[], Callable[[], str] | None], Callable[[], Callable[[str], None] | None]],
] = {}
#: what each channel was doing, as the line said: handed to its ``ended`` before the exit
_said: list[tuple[Callable[[], Callable[[str], None] | None], str]] = []
_next_token = 0
_hook: _Hook | None = None
#: the line was printed (once per process)
_announced = False


def installed() -> bool:
    """Whether the hook is SIGTERM's handler now."""
    return _hook is not None and signal.getsignal(signal.SIGTERM) is _on_sigterm


def _weak(fn: Callable[..., Any]) -> Callable[[], Any]:
    """A reference to ``fn`` that does not keep a channel alive (a method's is weak)."""
    if inspect.ismethod(fn):
        return weakref.WeakMethod(fn)
    return lambda: fn


def register(rank: int, text: Callable[[], str], ended: Callable[[str], None] | None = None) -> int:
    """A channel opened: ``text()`` says what it is doing (after "while"); ``ended(what)``
    runs when SIGTERM ends the process (after the line, before the exit: the channel's
    journal records the end). Installs the hook if this is the main thread and SIGTERM's
    disposition allows it. Returns a token for ``unregister``."""
    global _next_token
    with _lock:
        _next_token += 1
        token = _next_token
        for dead in [t for t, (_, r, _e) in _channels.items() if r() is None]:
            del _channels[dead]
        _channels[token] = (rank, _weak(text), _weak(ended) if ended is not None else _none)
        if _hook is None:
            _install()
        return token


def _none() -> None:
    return None


def unregister(token: int | None) -> None:
    """A channel closed: when it was the last one, the hook goes (from the main thread, and
    only where SIGTERM's handler is still the hook)."""
    if token is None:
        return
    with _lock:
        _channels.pop(token, None)
        if not _channels and _hook is not None:
            _uninstall()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> None:
    global _hook
    if not _main_thread():
        return  # only the main thread may set a Python signal handler
    try:
        current = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):  # pragma: no cover - no SIGTERM on this platform
        return
    if current is not signal.SIG_DFL and not callable(current):
        return  # SIG_IGN, or a handler that is not Python's: left alone
    hook = _Hook(current)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - an embedded interpreter
        return
    _hook = hook
    _start_reader(hook)


def _start_reader(hook: _Hook) -> None:
    """The wakeup socket and its reader thread, unless something else holds the wakeup fd."""
    try:
        reader, writer = socket.socketpair()
    except OSError:
        return
    try:
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        reader.close()
        writer.close()
        return
    if previous != -1:  # someone's (an asyncio loop's): theirs, and the line waits for Python
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
        return
    hook.reader, hook.writer = reader, writer
    hook.thread = threading.Thread(
        target=_read_wakeups, args=(reader,), name="tpwire-sigterm", daemon=True
    )
    hook.thread.start()


def _uninstall() -> None:
    global _hook
    hook = _hook
    if hook is None or not _main_thread():
        return  # kept: the next open or close on the main thread tidies it
    _hook = None
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, hook.previous)
    if hook.writer is not None:
        try:
            current = signal.set_wakeup_fd(-1)
            if current not in (-1, hook.writer.fileno()):
                signal.set_wakeup_fd(current)  # someone else's since: theirs stays
        except (ValueError, OSError):
            pass
        with contextlib.suppress(OSError):
            hook.writer.shutdown(socket.SHUT_RDWR)
        hook.writer.close()  # the reader sees the end and closes its socket


def _read_wakeups(reader: socket.socket) -> None:
    with reader:
        while True:
            try:
                data = reader.recv(64)
            except InterruptedError:  # pragma: no cover - retried by Python itself
                continue
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data:
                _from_reader()


def _from_reader() -> None:
    """SIGTERM came (seen by the reader thread, whatever the main thread is doing)."""
    hook = _hook
    if hook is None or signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        return  # a handler installed since then decides alone
    _announce()
    if hook.previous is signal.SIG_DFL:
        _die()
    # a user's Python handler: it runs in the main thread, through _on_sigterm, when the
    # main thread next runs Python (as it would without tpwire)


def _on_sigterm(signum: int, frame: Any) -> Any:
    """SIGTERM's Python handler while a channel is open (the main thread)."""
    hook = _hook
    _announce()
    previous = hook.previous if hook is not None else signal.SIG_DFL
    if callable(previous):
        return previous(signum, frame)
    _die()
    return None


def _announce() -> None:
    """The line, once: for each open channel what it is doing. Whoever comes second (the
    reader thread or the main thread's handler) waits until it is written: neither ends the
    process before it is out."""
    global _announced
    with _lock:
        if _announced:
            return
        _announced = True
        parts = []
        for rank, ref, ended in _channels.values():
            text = ref()
            if text is None:  # a channel dropped without close
                continue
            try:
                what = text()
            except BaseException as exc:  # the line and the exit come whatever this runs into
                what = f"in a channel ({type(exc).__name__} describing it)"
            parts.append((rank, printable(what, 400)))
            _said.append((ended, what))
        if parts:
            line = (
                f"tpwire[rank {parts[0][0]}]: TERMINATED by SIGTERM while "
                + "; and while ".join(w for _, w in parts)
            )
            _write(line + "\n")


def _write(text: str) -> None:
    # straight to the descriptor: no lock the main thread might hold, and unbuffered
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    data = text.encode("utf-8", "backslashreplace")
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(2, data) :]


def _after_fork_in_child() -> None:
    """A forked child (a data loader's worker, say) holds no channel: SIGTERM is its own."""
    global _hook, _lock, _dying
    _lock = threading.RLock()  # another thread may have held it at the fork
    _dying = threading.Lock()
    _channels.clear()
    _said.clear()
    hook, _hook = _hook, None
    if hook is None:
        return
    with contextlib.suppress(Exception):
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, hook.previous)
        if hook.writer is not None:
            current = signal.set_wakeup_fd(-1)
            if current not in (-1, hook.writer.fileno()):
                signal.set_wakeup_fd(current)
            hook.writer.close()
        if hook.reader is not None:
            hook.reader.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: held by the thread that ends the process: the reader thread and the main thread's
#: handler may both get to ``_die``, and the second must not kill the process while the
#: first is still recording each channel's end
_dying = threading.Lock()


def _die() -> None:
    """Die of SIGTERM as the default disposition would have made the process, once each
    channel has recorded its end (its journal, bounded by the writer's close)."""
    _dying.acquire()  # never released: whoever holds it ends the process
    try:
        for ref, what in _said:
            with contextlib.suppress(BaseException):  # the exit comes whatever this runs into
                ended = ref()
                if ended is not None:
                    ended(what)
        if _main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        else:  # only the main thread may call signal.signal: the C library's, directly
            libc = ctypes.CDLL(None)
            libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
            libc.signal.restype = ctypes.c_void_p
            libc.signal(signal.SIGTERM, None)  # NULL is SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5.0)  # the signal is on its way
    finally:
        os._exit(128 + signal.SIGTERM)
