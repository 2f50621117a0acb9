"""A protocol that shares no name with Scope's runs by its roles alone: header ``seq``,
``batch``, ``generation``; actions ``IDLE``/``RUN``/``HALT``/``FAIL`` (tests/specs/relay.yaml),
over a real 3-rank gloo broadcast channel, and in every id a violation or log line shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mp import run_ranks

from tpwire.codegen import compile as compile_spec
from tpwire.runtime.bindings import Roles, bindings_of
from tpwire.runtime.channel import EXIT_POISONED
from tpwire.runtime.lockstep import Ledger, LockstepError

RELAY = Path(__file__).parent / "specs" / "relay.yaml"


def test_the_runtime_reads_the_relay_roles() -> None:
    proto = compile_spec(RELAY)
    b = proto.BINDINGS
    assert bindings_of(proto) is b
    assert b.roles == Roles(sequence="seq", chunk="batch", epoch="generation")
    assert (b.noop, b.shutdown, b.error) == (proto.Step.IDLE, proto.Step.HALT, proto.Step.FAIL)
    assert b.terminal == {proto.Step.HALT, proto.Step.FAIL}
    last = proto.Header(seq=4, batch=2, generation=1, step=proto.Step.RUN)
    assert b.control_header(last, b.shutdown) == proto.Header(
        seq=5, batch=2, generation=1, step=proto.Step.HALT
    )
    assert b.ids_text(last) == "seq=4 batch=2 generation=1"


def test_violations_carry_the_spec_ids() -> None:
    proto = compile_spec(RELAY)
    header = proto.Header(seq=7, batch=3, generation=2, step=proto.Step.RUN)
    msg = proto.Decode(frames=5, latents=torch.zeros(2, 4, 8, 8), scale=1.0, tiled=False)
    (v,) = proto.validate(msg, header)
    assert (v.code, v.field) == ("invariant", "frames")
    assert v.ids == (("seq", 7), ("batch", 3), ("generation", 2))
    assert v.id("generation") == 2
    assert str(v).startswith("seq=7 batch=3 generation=2 frames: invariant")


def test_ledger_names_the_spec_ids() -> None:
    proto = compile_spec(RELAY)
    ledger = Ledger(proto)
    ledger.begin(1, proto.Header(seq=9, batch=4, generation=0, step=proto.Step.RUN))
    ledger.call()
    with pytest.raises(LockstepError, match="seq=9 batch=4 generation=0: generator call 2"):
        ledger.call()


def test_relay_ordering_names_seq_and_generation(tmp_path: Path) -> None:
    r0, *workers = run_ranks("other_names", tmp_path, world=3, timeout=60, case="order")
    assert r0.exitcode == 0, r0.log
    assert r0.result["next"] == 1
    assert (
        "refused before frame 0 seq=0 batch=1 generation=0: duplicate seq 0 after 0"
        in (r0.result["duplicate"])
    )
    for w in workers:
        assert w.result["got"] == [["RUN", 0], ["RUN", 1]], w.log
        assert (
            "POISONED seq=2 batch=2 generation=0: ordering: generation went back from 1 to 0"
            in (w.result["poisoned"])
        )


@pytest.mark.parametrize(("case", "last"), [("shutdown", ["HALT", 2]), ("error", ["FAIL", 6])])
def test_relay_control_actions(tmp_path: Path, case: str, last: list[object]) -> None:
    r0, *workers = run_ranks("other_names", tmp_path, world=3, timeout=60, case=case)
    assert r0.exitcode == 0, r0.log
    for w in workers:
        assert w.exitcode == 0 and w.exitcode != EXIT_POISONED, w.log
        got = w.result["got"]
        assert got[0] == ["RUN", 0] and got[-1] == last, got
    if case == "shutdown":
        assert workers[0].result["got"] == [["RUN", 0], ["IDLE", 1], ["HALT", 2]]
        assert all(w.result["reason"] is None for w in workers)
    else:
        assert workers[0].result["got"] == [["RUN", 0], ["RUN", 5], ["FAIL", 6]]
        # the root cause first, then the ERROR frame carrying it; each worker says why it stops
        cause = "FAILED after sending seq=5 batch=1 generation=0: ValueError: decoder out of memory"
        sent = "FAIL sent seq=6 batch=1 generation=0: EXCEPTION: ValueError: decoder out of memory"
        assert cause in r0.log and sent in r0.log, r0.log
        assert r0.log.index(cause) < r0.log.index(sent)
        for w in workers:
            assert w.result["reason"] == [2, "ValueError: decoder out of memory"]
            assert (
                "FAIL from the source seq=6 batch=1 generation=0: EXCEPTION: ValueError: "
                "decoder out of memory; stopping for the source's reason"
            ) in w.log, w.log


def test_control_headers_follow_the_header_rules() -> None:
    """A chunk id forbidden outside RUN and a bool header field: shutdown/error/noop headers
    built after a RUN drop the chunk id and keep a legal bool, so they validate."""
    text = RELAY.read_text("utf-8")
    text = text.replace(
        "batch: {type: int | None, range: {min: 0}, required_when: step == Step.RUN}",
        "batch: {type: int | None, range: {min: 0}, required_when: step == Step.RUN, "
        "forbidden_when: step != Step.RUN}\n    urgent: {type: bool}",
    ).replace(
        "slots: [seq, batch, generation, step]", "slots: [seq, batch, generation, step, urgent]"
    )
    proto = compile_spec(text)
    b = proto.BINDINGS
    last = proto.Header(seq=4, batch=2, generation=1, step=proto.Step.RUN, urgent=True)
    for action in (b.noop, b.shutdown, b.error):
        assert action is not None
        first = b.control_header(None, action)
        assert proto.validate(None, first) == [], first
        assert (first.seq, first.batch, first.urgent) == (0, None, False)
        after = b.control_header(last, action)
        assert proto.validate(None, after) == [], after
        assert (after.seq, after.batch, after.generation, after.urgent) == (5, None, 1, True)


@pytest.mark.parametrize("spec", ["codec.yaml", "telemetry.yaml"])
@pytest.mark.parametrize("case", ["shutdown", "error"])
def test_specs_with_their_own_control_actions_drive_a_channel(
    tmp_path: Path, spec: str, case: str
) -> None:
    """Heartbeats, SHUTDOWN on leaving ``with`` and ERROR on a failure inside it work for
    specs whose control members and bool header fields are their own (no KeyError, no
    EnvelopeInvalid from a control header, no watchdog firing while rank 0 idles)."""
    r0, *workers = run_ranks("control_actions", tmp_path, world=3, timeout=60, spec=spec, case=case)
    assert r0.exitcode == 0, r0.log
    names = {"codec.yaml": ("NOOP", "STOP", "ABORT"), "telemetry.yaml": ("PING", "BYE", "FAIL")}
    noop, shutdown, error = names[spec]
    for w in workers:
        assert w.exitcode == 0, w.log
        actions = w.result["actions"]
        assert noop in actions[:-1], actions  # the idle second carried heartbeats
        if case == "shutdown":
            assert actions[-1] == shutdown and w.result["reason"] is None
        else:
            assert actions[-1] == error
            assert w.result["reason"] == ["EXCEPTION", "ValueError: the encoder failed"]
