"""What a channel does when a step fails or does not finish: poison, the watchdog, the
abort guard and the TERMINATED line (docs/runtime.md, crash > hang; docs/architecture.md).

Every collective of a channel runs inside ``Policy.deadline``: the watchdog bounds it,
the abort guard turns a transport's abort into the poison line, and a SIGTERM while it
runs says what the rank was doing. A failure after frame 0 poisons: one line with the
ids, then exit 86 (``ChannelPoisoned`` under ``poison="raise"``).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import abort_guard, terminate, tripwire
from .errors import EnvelopeInvalid
from .escape import printable
from .ordering import OrderingError
from .watchdog import Watchdog
from .wire import ErrorCode

if TYPE_CHECKING:
    from .channel import Channel

T = TypeVar("T")

#: Distinct exit codes, so a supervisor can tell why a rank died.
EXIT_POISONED = 86
EXIT_WATCHDOG = 87


class ChannelPoisoned(RuntimeError):
    """The channel can no longer be trusted to be in lockstep with its peers."""


def error_code(exc: BaseException) -> ErrorCode:
    """The reason code an ERROR frame gives for ``exc``."""
    from .lockstep import LockstepError  # lockstep imports nothing of the channel's

    if isinstance(exc, EnvelopeInvalid):
        return ErrorCode.INVALID
    if isinstance(exc, tripwire.DriftDetected):
        return ErrorCode.DRIFT
    if isinstance(exc, LockstepError | OrderingError):
        return ErrorCode.LOCKSTEP
    return ErrorCode.EXCEPTION


#: gloo's ``[/path/to/pair.cc:553] `` prefix and its advice suffix, around the message
_BACKEND_NOISE = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\] |\. This is typically caused by .*$")


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line (a backend's source path and advice
    left out; an envelope's violations by their count and the first one's code and field)."""
    if isinstance(exc, EnvelopeInvalid) and exc.violations:
        first = exc.violations[0]
        text = f"{len(exc.violations)} violation(s), first: {first.code} {first.field}"
    else:
        text = _BACKEND_NOISE.sub("", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log(line: str) -> None:
    # stderr, flushed: the process may os._exit right after
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


Text = str | Callable[[], str]


def _text(what: Text) -> str:
    return what() if callable(what) else what


class Policy:
    """A channel's failure policy. ``channel`` gives the ids of log lines (its last
    envelopes) and the recorders that hear of poison and the watchdog."""

    def __init__(self, channel: Channel[Any, Any, Any]) -> None:
        self.channel = channel
        opts = channel.options
        self.rank = channel.rank
        self.watchdog_s = opts.watchdog_s
        self.raises = opts.poison == "raise"
        self.poisoned = False
        self.watchdog = Watchdog("tpwire-watchdog")
        #: what the channel is doing, for the TERMINATED line (``terminate``)
        self.activity = terminate.Activity()
        self.lock = threading.Lock()
        #: the header whose frames are on the wire (a heartbeat's too)
        self.in_flight: Any = None
        self._send_lock = SendLock(self)
        abort_guard.set_exit_code(EXIT_POISONED)

    def _last(self, header: Any) -> Any:
        ch = self.channel
        if header is not None:
            return header
        return ch.last_sent if ch.last_sent is not None else ch.last_header

    def poison(self, header: Any, reason: str) -> NoReturn:
        """One poison line, then exit 86 (``ChannelPoisoned`` under ``poison="raise"``).
        ``reason`` is raw text (it may quote a peer, an exception, the caller's step name):
        the line escapes it; the recorders get it as it is."""
        self.poisoned = True
        header = self._last(header)
        line = f"tpwire[rank {self.rank}]: POISONED {self.channel.ids(header)}: {printable(reason)}"
        try:  # the line and the exit come whatever a recorder runs into
            recorders = self.channel.recorders
            recorders.abandon()  # set up for a handshake that did not finish: no file left
            recorders.emit("poisoned", header, reason, exiting=not self.raises)
        finally:
            if self.raises:
                log(line)
                raise ChannelPoisoned(line)
            log(f"{line}; exiting {EXIT_POISONED}")
            os._exit(EXIT_POISONED)

    def doing(self) -> str:
        """What the TERMINATED line says the channel was doing (after "while")."""
        now = self.activity.now
        if now is not None:
            return now()
        ch = self.channel
        if self.poisoned:
            return "holding a poisoned channel"
        if ch.last_sent is not None:
            return f"between envelopes, after sending {ch.ids(ch.last_sent)}"
        if ch.last_header is not None:
            return f"between envelopes, after receiving {ch.ids(ch.last_header)}"
        return "between envelopes, before the first one"

    def root_cause(self, exc: BaseException) -> None:
        """The FAILED line for an exception leaving the channel's ``with`` block."""
        ch = self.channel
        failure = ch.sender.failure
        if failure is not None and failure[0] == id(exc):
            where = f"while sending {ch.ids(failure[1])}"
        elif ch.last_sent is not None:
            where = f"after sending {ch.ids(ch.last_sent)}"
        elif ch.last_header is not None:
            where = f"after receiving {ch.ids(ch.last_header)}"
        else:
            where = "before the first envelope"
        log(f"tpwire[rank {self.rank}]: FAILED {where}: {printable(describe(exc))}")

    def watchdog_exit(self, what: str, seconds: float | None, header: Any = None) -> NoReturn:
        try:  # the exit comes whatever the line or the recorders run into
            header = self._last(header)
            log(
                f"tpwire[rank {self.rank}]: WATCHDOG: {printable(what)} not done within "
                f"{seconds:g} s; last ids {self.channel.ids(header)}; exiting {EXIT_WATCHDOG}"
            )
            recorders = self.channel.recorders
            recorders.abandon()  # set up for a handshake that did not finish: no file left
            recorders.emit("watchdog", header, f"{what} not done within {seconds:g} s")
        finally:
            os._exit(EXIT_WATCHDOG)

    def deadline(
        self,
        what: Text,
        *,
        armed: bool = True,
        header: Any = None,
        waiting: Callable[[], str] | None = None,
    ) -> AbstractContextManager[None]:
        """Around every collective: exit if the block does not finish within ``watchdog_s``,
        and print the poison line if the transport aborts the process inside it
        (``abort_guard``). ``what``, a text or a function making it, is formatted only then:
        the hot path pays nothing for it. ``header``: the envelope in flight, for the ids
        of the poison line. ``waiting``: what a TERMINATED line says the rank was doing
        (``terminate``; "in ``what``" if not given)."""
        guard = abort_guard.armed(lambda: self.abort_line(what, header))
        inner: AbstractContextManager[None] = guard
        if self.watchdog_s and armed:
            inner = self.watch(what, self.watchdog_s, guard)
        if waiting is None:
            waiting = lambda: f"in {_text(what)}"  # noqa: E731
        return terminate.doing(self.activity, waiting, inner)

    def abort_line(self, what: Text, header: Any) -> str:
        return (
            f"tpwire[rank {self.rank}]: POISONED {self.channel.ids(self._last(header))}: the "
            f"transport aborted during {printable(_text(what))}: "
            "gloo::EnforceNotMet (gloo's I/O thread refuses a message longer than this "
            "rank's receive buffer: a peer on another layout or protocol, or a bug)"
        )

    @contextmanager
    def watch(self, what: Text, seconds: float, guard: abort_guard.armed) -> Iterator[None]:
        def fire() -> None:
            try:
                text = _text(what)
            except BaseException as exc:  # the exit comes whatever describing it runs into
                text = f"a collective ({type(exc).__name__} describing it)"
            self.watchdog_exit(text, seconds)

        token = self.watchdog.arm(seconds, fire)
        try:
            with guard:
                yield
        finally:
            self.watchdog.disarm(token)

    @contextmanager
    def run(
        self, what: str, header: Any = None, agreed: tuple[type[BaseException], ...] = ()
    ) -> Iterator[None]:
        """The block runs within ``watchdog_s`` (else exit 87); an ``agreed`` exception (the
        answer every rank reaches, such as a parity mismatch) passes through; any other
        failure poisons, naming ``what``."""
        with self.deadline(what, header=header):
            try:
                yield
            except agreed:
                raise
            except ChannelPoisoned:
                raise
            except BaseException as exc:
                self.poison(header, f"{what} failed: {describe(exc)}")

    def collective(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        header: Any = None,
        agreed: tuple[type[BaseException], ...] = (),
    ) -> T:
        """``fn``, collectives every rank enters, under the channel's policy."""
        with self.run(what, header, agreed):
            return fn()

    def locked(self) -> SendLock:
        """The send lock, for the caller's thread (``SendLock``)."""
        return self._send_lock


class SendLock:
    """``with policy.locked():``. A heartbeat holds the lock while its NOOP is in flight,
    and a NOOP to a wedged worker never completes: waiting for the lock is a step like any
    other, bounded by ``watchdog_s``."""

    __slots__ = ("_policy",)

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def __enter__(self) -> None:
        p = self._policy
        if not p.lock.acquire(timeout=p.watchdog_s or -1):
            p.watchdog_exit(
                "waiting for the send lock (a heartbeat's or another thread's send holds it)",
                p.watchdog_s,
                p.in_flight,
            )

    def __exit__(self, *exc: object) -> None:
        self._policy.lock.release()
