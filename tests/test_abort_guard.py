"""The abort guard (runtime/abort_guard.py) owns no signal state: an abort that is not the
transport's, a user's SIGABRT handler and faulthandler behave as without tpwire, during a
worker's receive and after it; gloo's own abort of an overlong message is still the
poison line. Real gloo groups and real SIGABRTs, each run under a hard timeout.

The scenarios below run on the ranks (``run_ranks(..., module="test_abort_guard", timeout=120)``):
rank 0 is the source, rank 1 the worker; a second group (``side``) carries the test's own
go/done messages, so rank 0 stays alive, sending nothing, until the worker is done.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from mp import run_ranks

from tpwire.generated import tp_control as tc
from tpwire.runtime import abort_guard
from tpwire.runtime.channel import EXIT_POISONED, BroadcastChannel

# --- on the ranks ---------------------------------------------------------------------------


def _side_group() -> Any:
    return dist.new_group(list(range(dist.get_world_size())), backend="gloo")


def _signal(side: Any, to: int) -> None:
    dist.send(torch.ones(1), dst=to, group=side)


def _wait(side: Any, peer: int) -> None:
    """Block until ``peer`` signals; return (without raising) when it has died instead."""
    try:
        dist.recv(torch.zeros(1), src=peer, group=side)
    except RuntimeError:
        pass  # the peer is gone (what most scenarios make the worker do)


def _until_receiving(seconds: float = 60.0) -> None:
    """Wait until one of this process's channel collectives is in flight (the worker's
    receive of the next head)."""
    deadline = time.monotonic() + seconds
    while not abort_guard._in_flight:
        if time.monotonic() > deadline:
            raise AssertionError("the receive never started")
        time.sleep(0.01)


def _the_envelope() -> tuple[tc.Header, Any]:
    from mp_scenarios import envelope, header

    return header(0), envelope(0)


def _receive_in_a_thread(ch: BroadcastChannel[Any, Any]) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(ch.recv().header.call_id), daemon=True)
    t.start()
    _until_receiving()
    return t, got


def abort_in_another_thread(rank: int, world: int) -> Any:
    """The worker's other thread calls os.abort() while the main thread waits for a head."""
    import faulthandler

    side = _side_group()
    ch = BroadcastChannel(tc).open()
    if rank == 0:
        _wait(side, 1)
        return {}
    faulthandler.enable()

    def culprit_of_the_abort() -> None:
        _until_receiving()
        import os

        os.abort()

    threading.Thread(target=culprit_of_the_abort, daemon=True).start()
    ch.recv()
    return {"received": True}


def user_handler_installed_during_a_receive(rank: int, world: int) -> Any:
    """The worker installs a Python SIGABRT handler while a receive is in flight; after the
    receive it still runs (a SIGABRT sent to the process is handled, the process lives)."""
    import os

    side = _side_group()
    ch = BroadcastChannel(tc).open()
    if rank == 0:
        _wait(side, 1)  # go
        hdr, msg = _the_envelope()
        ch.send(msg, hdr)
        _wait(side, 1)  # done
        return {}
    receiving, got = _receive_in_a_thread(ch)
    handled: list[int] = []
    signal.signal(signal.SIGABRT, lambda signum, frame: handled.append(signum))
    _signal(side, 0)
    receiving.join(60)
    after = abort_guard.terminate_handler() == abort_guard.HANDLER
    os.kill(os.getpid(), signal.SIGABRT)
    deadline = time.monotonic() + 30
    while not handled and time.monotonic() < deadline:
        time.sleep(0.01)  # the handler runs in the main thread, between bytecodes
    _signal(side, 0)
    return {"received": got, "handled": handled, "guard_left_installed": after}


def faulthandler_toggled_during_a_receive(rank: int, world: int) -> Any:
    """The worker enables faulthandler while a receive is in flight and disables it after;
    then an abort is an abort (not exit 86)."""
    import faulthandler
    import os

    side = _side_group()
    ch = BroadcastChannel(tc).open()
    if rank == 0:
        _wait(side, 1)  # go
        hdr, msg = _the_envelope()
        ch.send(msg, hdr)
        _wait(side, 1)  # done
        return {}
    receiving, got = _receive_in_a_thread(ch)
    faulthandler.enable()
    _signal(side, 0)
    receiving.join(60)
    faulthandler.disable()
    print(f"RECEIVED {got}", flush=True)
    _signal(side, 0)
    os.abort()


def hostile_head_beside_a_user_handler(rank: int, world: int) -> Any:
    """The case the guard is for: a peer sends a head longer than the worker's buffer, while
    the worker has faulthandler enabled and a SIGABRT handler of its own."""
    import faulthandler

    side = _side_group()
    ch = BroadcastChannel(tc).open()
    if rank == 0:
        _wait(side, 1)  # go
        hdr, msg = _the_envelope()
        frame0 = tc.encode(msg, hdr).frame0
        head = torch.zeros(ch.sender.framing.head_nbytes + 64, dtype=torch.uint8)
        head[: tc.FRAME0_LEN * 8] = frame0.view(torch.uint8)
        ch.transport.put(head, 0, frame0=True)
        _wait(side, 1)  # the worker is gone
        return {}
    faulthandler.enable()
    signal.signal(signal.SIGABRT, lambda signum, frame: print("USER HANDLER", flush=True))
    threading.Thread(target=lambda: (_until_receiving(), _signal(side, 0)), daemon=True).start()
    got = ch.recv()
    print(f"HANDED OVER {got.header}", flush=True)
    return {"handed_over": True}


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_another_thread_s_abort_during_a_receive_is_an_abort_with_faulthandler_s_traceback(
    tmp_path: Path,
) -> None:
    _, worker = run_ranks(
        "abort_in_another_thread", tmp_path, module="test_abort_guard", timeout=120
    )
    assert worker.exitcode == -signal.SIGABRT, worker.log
    assert "POISONED" not in worker.log and "exiting" not in worker.log, worker.log
    assert "Fatal Python error: Aborted" in worker.log, worker.log
    assert "culprit_of_the_abort" in worker.log, worker.log  # the real culprit's traceback


@pytest.mark.timeout(180)
def test_a_user_s_sigabrt_handler_installed_during_a_receive_outlives_it(
    tmp_path: Path,
) -> None:
    r0, worker = run_ranks(
        "user_handler_installed_during_a_receive", tmp_path, module="test_abort_guard", timeout=120
    )
    assert worker.exitcode == 0, worker.log
    assert worker.result == {
        "received": [0],
        "handled": [int(signal.SIGABRT)],
        "guard_left_installed": False,
    }
    assert r0.exitcode == 0, r0.log


@pytest.mark.timeout(180)
def test_faulthandler_enabled_during_a_receive_and_disabled_after_leaves_aborts_alone(
    tmp_path: Path,
) -> None:
    _, worker = run_ranks(
        "faulthandler_toggled_during_a_receive", tmp_path, module="test_abort_guard", timeout=120
    )
    assert "RECEIVED [0]" in worker.log, worker.log
    assert worker.exitcode == -signal.SIGABRT, worker.log
    assert "POISONED" not in worker.log and "exiting" not in worker.log, worker.log


@pytest.mark.timeout(180)
def test_an_overlong_head_is_the_poison_line_whoever_owns_sigabrt(tmp_path: Path) -> None:
    _, worker = run_ranks(
        "hostile_head_beside_a_user_handler", tmp_path, module="test_abort_guard", timeout=120
    )
    assert worker.exitcode == EXIT_POISONED, worker.log
    assert worker.result is None and "HANDED OVER" not in worker.log, worker.log
    (line,) = [x for x in worker.log.splitlines() if "POISONED" in x]
    assert line.startswith("tpwire[rank 1]: POISONED call_id="), line
    assert "the transport aborted during a header" in line, line
    assert line.endswith(f"exiting {EXIT_POISONED}"), line
    assert "USER HANDLER" not in worker.log and "Traceback" not in worker.log, worker.log


def _in_a_process(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or abort_guard._SET is None, reason="needs libstdc++"
)
def test_a_terminate_that_is_not_the_transport_s_goes_to_the_handler_before() -> None:
    """``std::terminate`` without gloo's exception inside a guarded collective: the C++
    runtime's own handler runs (its message, SIGABRT), no poison line."""
    done = _in_a_process(
        """
        import ctypes
        import threading
        from tpwire.runtime import abort_guard

        def elsewhere():
            ctypes.CDLL("libstdc++.so.6")._ZSt9terminatev()  # std::terminate()

        with abort_guard.armed(lambda: "tpwire: a collective"):
            t = threading.Thread(target=elsewhere)
            t.start()
            t.join()
        """
    )
    assert done.returncode == -signal.SIGABRT, done.stderr
    assert "terminate called without an active exception" in done.stderr, done.stderr
    assert "POISONED" not in done.stderr and "exiting" not in done.stderr, done.stderr


def _sigabrt_action() -> bytes:
    """SIGABRT's handler and the first word of its mask now (sigaction with no new action;
    glibc leaves the mask's words past the kernel's undefined)."""
    libc = ctypes.CDLL(None, use_errno=True)
    now = ctypes.create_string_buffer(512)
    assert libc.sigaction(int(signal.SIGABRT), None, ctypes.byref(now)) == 0
    return now.raw[:16]


def test_a_guarded_collective_leaves_sigabrt_alone() -> None:
    before = _sigabrt_action()
    with abort_guard.armed(lambda: "tpwire: a collective"):
        inside = _sigabrt_action()
    assert inside == before
    assert _sigabrt_action() == before


@pytest.mark.skipif(abort_guard._SET is None, reason="no C++ runtime")
def test_the_terminate_handler_is_the_guard_s_only_inside_and_one_set_inside_stays() -> None:
    before = abort_guard.terminate_handler()
    assert before not in (0, abort_guard.HANDLER)
    with abort_guard.armed(lambda: "tpwire: a collective"):
        assert abort_guard.terminate_handler() == abort_guard.HANDLER
        with abort_guard.armed(lambda: "tpwire: nested"):
            pass
        assert abort_guard.terminate_handler() == abort_guard.HANDLER  # still one in flight
    assert abort_guard.terminate_handler() == before
    # something else sets its own handler inside the block: the guard leaves it in place
    theirs = abort_guard._SET
    marker = ctypes.CFUNCTYPE(None)(lambda: None)
    marker_at = ctypes.cast(marker, ctypes.c_void_p).value
    try:
        with abort_guard.armed(lambda: "tpwire: a collective"):
            theirs(marker_at)
        assert abort_guard.terminate_handler() == marker_at
    finally:
        theirs(before)


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or abort_guard._SET is None, reason="needs libstdc++"
)
def test_the_transport_s_termination_prints_every_line_in_flight_even_one_that_raises() -> None:
    """The handler's own path, through the real C++ runtime: a termination it reads as gloo's
    (the exception's type stubbed: no peer here) with two collectives in flight, one whose
    line cannot be made, is two lines and exit 86."""
    done = _in_a_process(
        """
        import ctypes
        import threading
        from tpwire.runtime import abort_guard

        abort_guard._exception_type = lambda current: abort_guard._TRANSPORT_EXCEPTION
        abort_guard.set_exit_code(86)
        inside = threading.Event()

        def other():
            with abort_guard.armed(lambda: "tpwire: the other thread's collective"):
                inside.set()
                threading.Event().wait(60)

        threading.Thread(target=other, daemon=True).start()
        inside.wait(60)
        with abort_guard.armed(lambda: 1 / 0):
            ctypes.CDLL("libstdc++.so.6")._ZSt9terminatev()  # std::terminate()
        """
    )
    assert done.returncode == EXIT_POISONED, done.stderr
    lines = sorted(done.stderr.splitlines())
    assert lines == [
        "tpwire: POISONED: the transport aborted during a collective (ZeroDivisionError "
        "describing it); exiting 86",
        "tpwire: the other thread's collective; exiting 86",
    ], done.stderr
