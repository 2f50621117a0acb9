"""The channel's watchdog thread (runtime/watchdog.py): a deadline armed around a collective
fires once it passes while armed, never after a disarm, and the thread ends when idle."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

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


def test_a_deadline_past_the_platform_s_longest_wait_keeps_the_thread_watching() -> None:
    """``threading.Event.wait`` refuses a timeout past ``threading.TIMEOUT_MAX``: the thread
    sleeps at most that long, and a deadline armed after it still fires."""
    w = Watchdog("test-watchdog")
    far = w.arm(math.inf, lambda: None)
    time.sleep(0.1)
    fired = threading.Event()
    w.arm(0.05, fired.set)
    assert fired.wait(5.0)
    w.disarm(far)


def test_a_channel_refuses_a_watchdog_it_cannot_keep() -> None:
    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel

    for bad in (math.inf, math.nan, -1.0, 0.0, "30", True):
        with pytest.raises(ValueError, match="watchdog_s must be a number of seconds"):
            BroadcastChannel(tc, watchdog_s=bad)


def test_a_child_forked_inside_a_guarded_collective_aborts_as_it_would_without_tpwire() -> None:
    """The SIGABRT handler is the parent's, for the parent's collective: a forked child has
    none in flight, so its abort is an abort (not the parent's poison line and exit 86)."""
    from tpwire.runtime import abort_guard

    with abort_guard.armed(lambda: "tpwire: the parent's collective"):
        pid = os.fork()
        if pid == 0:
            # quiet: faulthandler's dump (pytest's goes to a copy of stderr), or a poison line
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            os.closerange(3, 4096)
            os.abort()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGABRT


def test_the_watchdog_exits_even_when_describing_the_step_raises() -> None:
    """What a channel's deadline fires makes its line first: a line that cannot be made
    (the ids of a header that raises, say) still ends in the exit, never in a dropped
    deadline and a hang."""
    from tpwire.runtime import abort_guard
    from tpwire.runtime.policy import Policy

    policy: Any = object.__new__(Policy)  # the watch alone: no channel, no process group
    policy.watchdog = Watchdog("test-watchdog")
    exits: list[str] = []
    policy.watchdog_exit = lambda what, seconds, header=None: exits.append(what)

    class Unprintable:
        def __repr__(self) -> str:
            raise ValueError("no repr either")

    def what() -> str:
        raise RuntimeError(Unprintable())

    with policy.watch(what, 0.05, abort_guard.armed(lambda: "tpwire: a collective")):
        assert _wait_for(lambda: bool(exits))
    assert exits[0] == "a collective (RuntimeError describing it)"


def _guard_handler() -> int:
    """The address of the C++ terminate handler installed now (the abort guard's while one
    of its collectives is in flight)."""
    from tpwire.runtime import abort_guard

    if abort_guard._SET is None:
        pytest.skip("no C++ runtime reachable: the guard installs nothing")
    return abort_guard.terminate_handler()


def test_a_child_forked_beside_guarded_collectives_starts_with_none_and_guards_its_own() -> None:
    """Another thread entering and leaving guarded collectives while this one forks: no child
    keeps the parent's handler (a fork between installing it and recording the collective
    once left it there), and a block the child inherited from the parent leaves the child's
    guard working."""
    from tpwire.runtime import abort_guard

    ours = abort_guard.HANDLER
    assert _guard_handler() != ours
    stop = threading.Event()

    def collectives() -> None:
        while not stop.is_set():
            with abort_guard.armed(lambda: "tpwire: the other thread's collective"):
                pass

    other = threading.Thread(target=collectives)
    other.start()
    bad = 0
    try:
        for _ in range(150):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    if _guard_handler() == ours:
                        code = 1  # the parent's handler, nothing in flight here
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            bad += os.waitstatus_to_exitcode(status) != 0
    finally:
        stop.set()
        other.join()
    assert bad == 0
    # a child forked inside a block: the block ends in the child, its own guard then works
    with abort_guard.armed(lambda: "tpwire: the parent's collective"):
        pid = os.fork()
    if pid == 0:
        code = 3
        try:
            with abort_guard.armed(lambda: "tpwire: the child's collective"):
                inside = _guard_handler() == ours
            code = 0 if inside and _guard_handler() != ours else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
