"""The channel's watchdog thread (runtime/watchdog.py): a deadline armed around a collective
fires once it passes while armed, never after a disarm, and the thread ends when idle."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import pytest

from tpwire.runtime.watchdog import Watchdog


def _wait_for(cond: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_a_deadline_fires_once_it_passes() -> None:
    w = Watchdog("test-watchdog")
    fired = threading.Event()
    t0 = time.monotonic()
    w.arm(0.2, fired.set)
    assert fired.wait(5.0)
    assert time.monotonic() - t0 >= 0.2


def test_a_disarmed_deadline_never_fires() -> None:
    w = Watchdog("test-watchdog")
    fired: list[str] = []
    token = w.arm(0.1, lambda: fired.append("disarmed"))
    w.disarm(token)
    time.sleep(0.3)
    assert fired == []


def test_a_sooner_deadline_wakes_the_sleeping_thread() -> None:
    w = Watchdog("test-watchdog")
    fired: list[str] = []
    late = w.arm(30.0, lambda: fired.append("late"))
    assert _wait_for(lambda: w._until < 1e300)  # asleep until the late deadline
    t0 = time.monotonic()
    w.arm(0.1, lambda: fired.append("soon"))
    assert _wait_for(lambda: fired == ["soon"], 5.0)
    assert time.monotonic() - t0 < 2.0
    w.disarm(late)


def test_many_collectives_share_one_thread_and_it_ends_when_idle() -> None:
    w = Watchdog("test-watchdog")
    before = threading.active_count()
    for _ in range(1000):
        w.disarm(w.arm(0.05, lambda: None))
    assert threading.active_count() <= before + 1
    assert _wait_for(lambda: w._thread is None)  # woke at the deadline, nothing armed: ended
    fired = threading.Event()
    w.arm(0.05, fired.set)  # and the next arm starts it again
    assert fired.wait(5.0)


def test_a_fire_that_raises_leaves_the_other_deadlines_watched() -> None:
    w = Watchdog("test-watchdog")

    def broken() -> None:
        raise OSError("the journal's disk is gone")

    w.arm(0.05, broken)
    fired = threading.Event()
    w.arm(0.1, fired.set)
    assert fired.wait(5.0)
    fired.clear()
    w.arm(0.05, fired.set)  # and later ones too
    assert fired.wait(5.0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_watches_its_own_deadlines() -> None:
    w = Watchdog("test-watchdog")
    parent = w.arm(30.0, lambda: None)  # the parent's thread sleeps in it
    assert _wait_for(lambda: w._thread is not None)
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not here
        try:
            w.arm(0.05, lambda: os._exit(0))
            time.sleep(5.0)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    w.disarm(parent)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's deadline never fired"
    sys.stdout.flush()
