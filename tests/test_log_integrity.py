"""Peer-supplied text reaches a log as one visible line (docs/runtime.md).

A reason in an ERROR frame comes from another process: a newline in it would forge a whole
log line (``tpwire[rank 2]: POISONED ...``), an ANSI or OSC escape would drive the terminal,
a bidi override would reorder what is shown. Every runtime log line (ERROR, poison,
watchdog, root cause) escapes what it quotes with ``runtime.escape.printable``. Real gloo
groups, every run under a hard timeout (tests/mp.py): a hang is a failure.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from mp import run_ranks

from tpwire.runtime.channel import EXIT_POISONED, EXIT_WATCHDOG

pytestmark = pytest.mark.timeout(120)

#: 62 bytes of UTF-8 (an ERROR reason holds 64): a CR and a newline, an ANSI "erase line",
#: then the line a forger wants the log to show
FORGED = "ok\r\n\x1b[2Ktpwire[rank 2]: POISONED call_id=7: forged; exiting 86"
#: bidi override, NEL, the line separator, an OSC title sequence ended by BEL (61 bytes)
BIDI = "\u202egnp.exe\x85tpwire[rank 1]: x\u2028\x1b]0;pwned\x07 done"
#: what no log line may hold raw: C0 controls (ESC, BEL, CR, LF), C1 (NEL), the bidi
#: override and the Unicode line and paragraph separators
RAW = ["\x1b", "\x07", "\r", "\x85", "\u202e", "\u2028", "\u2029"]

REASONS = {"forged": FORGED, "bidi": BIDI}


def _escaped(text: str) -> str:
    """``text`` as ``printable`` shows it (written out here, independently of it)."""
    named = {"\r": "\\r", "\n": "\\n", "\\": "\\\\"}
    out = []
    for c in text:
        if c in named:
            out.append(named[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) <= 0xFF:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(f"\\u{ord(c):04x}")
    return "".join(out)


def _lines(log: str) -> list[str]:
    """The log's lines as a terminal or ``str.splitlines`` (NEL, U+2028 too) cuts them."""
    return [line for line in log.splitlines() if line.strip()]


# -- scenarios (run on every rank by tests/mp.py) ---------------------------------------------


def error_reason(rank: int, world: int, reason: str, how: str) -> Any:
    """Rank 0 sends an envelope, then an ERROR whose reason is ``reason``: through
    ``error()`` (a real sender; it logs what it sent), or forged straight into frame 0 by a
    raw peer that logs nothing. Workers take both and return the reason they got."""
    from mp_scenarios import envelope, header

    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel
    from tpwire.runtime.wire import ErrorCode, put_reason

    ch = BroadcastChannel(tc, watchdog_s=30).open()
    if rank != 0:
        got = [ch.recv(), ch.recv()]
        last = got[-1]
        assert last.reason is not None
        return {
            "actions": [g.action.name for g in got],
            "reason": last.reason.text,
            "code": last.reason.code.name,
        }
    ch.send(envelope(0), header(0))
    if how == "error":
        ch.error(reason)
    else:
        assert len(reason.encode()) <= 64  # the wire's whole reason: nothing is cut
        hdr, prepared = ch.sender.control_frame(tc.TPAction.ERROR)
        put_reason(prepared.words, tc.BINDINGS.w_reason, ErrorCode.USER, reason)
        with ch.policy.locked():
            ch.sender.transmit(prepared, hdr)
    return {}


def poisoned_by_text(rank: int, world: int, text: str, poison: str) -> Any:
    """Each rank's guarded step fails with ``text`` in its name and in its exception."""
    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel, ChannelPoisoned

    ch = BroadcastChannel(tc, poison=poison, watchdog_s=30).open()
    try:
        with ch.guard(f"step {text}"):
            raise RuntimeError(f"the model crashed: {text}")
    except ChannelPoisoned as exc:
        return {"raised": str(exc)}
    return {"raised": None}


def wedged_by_text(rank: int, world: int, text: str) -> Any:
    """Each rank's guarded step, named with ``text``, outlives the watchdog."""
    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel

    ch = BroadcastChannel(tc, watchdog_s=0.5).open()
    with ch.guard(f"step {text}"):
        time.sleep(30)
    return {}


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["forged", "error"])
@pytest.mark.parametrize("kind", list(REASONS))
def test_an_error_reason_is_one_escaped_line_on_every_rank(
    tmp_path: Path, kind: str, how: str
) -> None:
    reason = REASONS[kind]
    results = run_ranks(
        "error_reason", tmp_path, world=3, module="test_log_integrity", reason=reason, how=how
    )
    shown = _escaped(f"USER: {reason}")
    for r in results:
        assert r.exitcode == 0, r.log
        for raw in RAW:
            assert raw not in r.log, (r.rank, raw, r.log)
        lines = _lines(r.log)
        if r.rank == 0:
            if how == "forged":  # a raw peer: it logs nothing of its own
                assert lines == [], lines
                continue
            (line,) = lines
            assert line.startswith("tpwire[rank 0]: ERROR sent call_id=1 "), line
            assert line.endswith(f": {shown}"), (line, shown)
            continue
        (line,) = lines  # the forged "tpwire[rank 2]: POISONED" is inside it, escaped
        assert line.startswith(f"tpwire[rank {r.rank}]: ERROR from the source call_id=1 "), line
        assert line.endswith(f": {shown}; stopping for the source's reason"), (line, shown)
        # the application gets the reason as the peer sent it
        assert r.result == {"actions": ["INFER", "ERROR"], "reason": reason, "code": "USER"}


@pytest.mark.parametrize("poison", ["exit", "raise"])
def test_a_poison_line_quoting_hostile_text_is_one_escaped_line(
    tmp_path: Path, poison: str
) -> None:
    results = run_ranks(
        "poisoned_by_text", tmp_path, module="test_log_integrity", text=BIDI, poison=poison
    )
    for r in results:
        for raw in RAW:
            assert raw not in r.log, (r.rank, raw, r.log)
        (line,) = _lines(r.log)
        assert line.startswith(f"tpwire[rank {r.rank}]: POISONED call_id=None "), line
        assert f"step {_escaped(BIDI)} failed: RuntimeError: the model crashed: " in line, line
        assert "\\x1b]0;pwned\\x07" in line, line
        if poison == "exit":
            assert r.exitcode == EXIT_POISONED, r.log
            assert line.endswith(f"; exiting {EXIT_POISONED}"), line
        else:
            assert r.exitcode == 0, r.log
            assert r.result["raised"] == line, (r.result, line)


def test_a_watchdog_line_naming_hostile_text_is_one_escaped_line(tmp_path: Path) -> None:
    results = run_ranks("wedged_by_text", tmp_path, module="test_log_integrity", text=FORGED)
    for r in results:
        assert r.exitcode == EXIT_WATCHDOG, r.log
        for raw in RAW:
            assert raw not in r.log, (r.rank, raw, r.log)
        (line,) = _lines(r.log)
        assert line.startswith(f"tpwire[rank {r.rank}]: WATCHDOG: step {_escaped(FORGED)} "), line
        assert line.endswith(f"; exiting {EXIT_WATCHDOG}"), line


def dead_source(rank: int, world: int, where: str) -> Any:
    """Rank 0 dies before frame 0 (``frame0``) or after frame 0, before frame 1
    (``frame1``): each worker's poison line quotes what gloo said of the lost peer."""
    import os

    from mp_scenarios import _big_envelope, header

    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel

    ch = BroadcastChannel(tc, watchdog_s=30).open()
    if rank != 0:
        ch.recv()
        return {"handed_over": True}
    if where == "frame0":
        time.sleep(0.5)
        os._exit(1)
    put = ch.transport.put

    def dies_after_frame0(tensor: Any, tag: int, *, frame0: bool) -> None:
        if not frame0:
            time.sleep(0.5)
            os._exit(1)
        put(tensor, tag, frame0=frame0)

    ch.transport.put = dies_after_frame0  # type: ignore[method-assign]
    ch.send(_big_envelope(), header(0))
    return {}


@pytest.mark.parametrize(
    ("where", "step"),
    [("frame0", "waiting for frame 0 failed"), ("frame1", "frame 1 receive failed")],
)
def test_a_lost_peer_is_named_without_the_backends_path_and_advice(
    tmp_path: Path, where: str, step: str
) -> None:
    results = run_ranks("dead_source", tmp_path, world=3, module="test_log_integrity", where=where)
    for r in results[1:]:
        assert r.exitcode == EXIT_POISONED, r.log
        (line,) = _lines(r.log)
        assert line.startswith(f"tpwire[rank {r.rank}]: POISONED call_id="), line
        # the reason as every other poison line gives it: Type: message, gloo's words kept
        assert f": {step}: " in line and "Error: " in line, line
        assert re.search(r"Connection (reset|closed) by peer|Read error", line), line
        for noise in (".cc:", "pair.cc", "This is typically caused", "GLHF"):
            assert noise not in line, line
        assert line.endswith(f"; exiting {EXIT_POISONED}"), line


def abort_line(rank: int, world: int, text: str) -> Any:
    """The line the abort guard writes if the transport aborts the process in a step named
    with ``text`` (made as the guard makes it, without aborting)."""
    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel

    ch = BroadcastChannel(tc).open()
    return {"line": ch.policy.abort_line(lambda: f"step {text}", None)}


def test_the_abort_guards_line_naming_hostile_text_is_one_escaped_line(tmp_path: Path) -> None:
    (r,) = run_ranks("abort_line", tmp_path, world=1, module="test_log_integrity", text=BIDI)
    assert r.exitcode == 0, r.log
    line = r.result["line"]
    assert _lines(line) == [line], line
    for raw in RAW:
        assert raw not in line, (raw, line)
    assert line.startswith("tpwire[rank 0]: POISONED call_id=None chunk_index=None "), line
    assert f"the transport aborted during step {_escaped(BIDI)}: " in line, line
