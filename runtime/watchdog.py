"""A channel's watchdog: one thread watching the deadlines of the collectives in flight.

A collective arms a deadline before it starts and disarms it when it ends; the thread fires
the collective's ``fire`` (which exits the process, naming what hung) once a deadline passes
while still armed. Arming and disarming are a dictionary store and a pop: a stream pays no
thread start per collective (``threading.Timer`` starts one each time, about 120 us here).

The thread sleeps until the earliest armed deadline (an arm with a sooner one wakes it);
with nothing armed when it wakes it ends, and the next arm starts it again: a stream starts
it about once per watch time.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable


class Watchdog:
    """The deadlines of one channel's collectives, and the thread that watches them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tokens = itertools.count()
        self._reset()
        _ALL.add(self)

    def _reset(self) -> None:
        """No deadline armed and no thread; also in a child after ``fork``, where the
        parent's thread is not there (the next arm starts one) and the deadlines the parent
        had armed are the parent's."""
        #: token -> (deadline on the monotonic clock, what to run when it passes)
        self._armed: dict[int, tuple[float, Callable[[], None]]] = {}
        self._lock = threading.Lock()  # the thread's start and end against an arm
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        #: the deadline the thread sleeps until (infinite while it is not asleep)
        self._until = math.inf

    def arm(self, seconds: float, fire: Callable[[], None]) -> int:
        """Watch a collective for ``seconds`` from now; the token disarms it."""
        token = next(self._tokens)
        deadline = time.monotonic() + seconds
        self._armed[token] = (deadline, fire)
        if deadline < self._until:
            self._wake.set()  # sooner than the thread's wake-up (or it is not asleep)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return token

    def disarm(self, token: int) -> None:
        self._armed.pop(token, None)

    def _run(self) -> None:
        try:
            self._watch()
        finally:  # however the loop ends, the next arm starts a thread again
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _watch(self) -> None:
        while True:
            earliest: tuple[int, float, Callable[[], None]] | None = None
            for token, (deadline, fire) in list(self._armed.items()):
                if earliest is None or deadline < earliest[1]:
                    earliest = (token, deadline, fire)
            if earliest is None:
                with self._lock:
                    if not self._armed:
                        self._thread = None
                        return
                continue
            token, deadline, fire = earliest
            delay = deadline - time.monotonic()
            if delay <= 0:
                if self._armed.pop(token, None) is not None:
                    try:
                        fire()
                    except BaseException:  # the other deadlines stay watched
                        pass
                continue
            self._until = deadline
            self._wake.wait(min(delay, threading.TIMEOUT_MAX))
            self._until = math.inf
            self._wake.clear()


_ALL: weakref.WeakSet[Watchdog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for watchdog in list(_ALL):
        watchdog._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
