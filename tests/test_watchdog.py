"""The channel's watchdog thread (runtime/watchdog.py): a deadline armed around a collective
fires once it passes while armed, never after a disarm, and the thread ends when idle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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
