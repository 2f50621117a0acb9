"""The Prometheus metrics recorder (runtime/metrics.py; docs/runtime.md, Metrics): on a
3-rank gloo stream its exposition counts what was sent, received and refused (under the
violation's code) and a poisoned run's cause; rank 0 serves it over HTTP."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.mp import _free_port, run_ranks
from tpwire.extras import MissingExtra
from tpwire.runtime.metrics import CAUSES, MetricsRecorder, poison_cause
from tpwire.runtime.recorder import EnvelopeEvent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by name and sorted labels (the parser checks naming)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def metered_stream(rank: int, world: int, port: int) -> Any:
    """Rank 0: two good envelopes, one its own preflight refuses, one forged that the workers
    refuse, then a forged duplicate id that poisons them (ordering)."""
    import torch  # noqa: F401  (spawned ranks: torch before the generated module)

    from tests.mp_scenarios import envelope, header
    from tpwire.generated import tp_control as tc
    from tpwire.runtime import wire
    from tpwire.runtime.channel import BroadcastChannel, ChannelPoisoned
    from tpwire.runtime.errors import EnvelopeInvalid
    from tpwire.runtime.options import ChannelOptions

    metrics = MetricsRecorder(port=port, addr="127.0.0.1")
    ch = BroadcastChannel(tc, options=ChannelOptions(poison="raise", recorders=[metrics]))
    ch.open()
    out: dict[str, Any] = {}
    if rank == 0:
        ch.send(envelope(1), header(1))
        try:
            ch.send(envelope(2, tp_num_denoise_steps=5), header(2))
        except EnvelopeInvalid as exc:
            out["preflight_code"] = exc.violations[0].code
            out["preflight_fm"] = exc.violations[0].fm or "none"
        frames = tc.encode(envelope(2), header(2))
        words = frames.frame0.tolist()
        steps = next(i for i in range(tc.W_SCALARS, tc.W_MANIFEST) if words[i] == 4)
        words[steps] = 5
        ch.sender.transmit(wire.Frames(wire.seal(words), frames.segments), header(2))
        ch.send(envelope(3), header(3))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            out["http"] = r.read().decode()
        out["latest"] = generate_latest(metrics.registry).decode()
        ch.sender.transmit(tc.encode(envelope(3), header(3)), header(3))  # a duplicate id
        return out
    got = []
    try:
        while True:
            try:
                got.append(ch.recv().header.call_id)
            except EnvelopeInvalid as exc:
                out["refused_code"] = exc.violations[0].code
                out["refused_fm"] = exc.violations[0].fm or "none"
    except ChannelPoisoned as exc:
        out["poisoned"] = str(exc)
    out["got"] = got
    out["latest"] = generate_latest(metrics.registry).decode()
    return out


@pytest.mark.timeout(150)
def test_a_stream_is_counted_by_action_direction_code_and_cause(tmp_path: Path) -> None:
    results = run_ranks(
        "metered_stream", tmp_path, world=3, timeout=120, module="test_metrics", port=_free_port()
    )
    src, *workers = (r.result for r in results)
    assert src is not None, results[0].log
    proto = {"protocol": "tp_control"}
    for text in (src["http"], src["latest"]):  # served over HTTP as generate_latest has it
        assert value(text, "tpwire_envelopes_total", action="INFER", direction="sent", **proto) == 3
        code, fm = src["preflight_code"], src["preflight_fm"]
        refused = "tpwire_envelopes_refused_total"
        assert value(text, refused, direction="sent", code=code, fm=fm, **proto) == 1
        assert value(text, "tpwire_envelope_seconds_count", direction="sent", **proto) == 3
        assert value(text, "tpwire_cpu_path_seconds_count", direction="sent", **proto) == 3
        assert 0 < value(text, "tpwire_cpu_path_seconds_sum", direction="sent", **proto) < 10
        assert value(text, "tpwire_last_sequence", direction="sent", **proto) == 3
        assert value(text, "tpwire_frame0_bytes_total", direction="sent", **proto) > 0
        assert value(text, "tpwire_frame1_bytes_total", direction="sent", **proto) > 0
    for w, result in zip(workers, results[1:], strict=True):
        assert w is not None, result.log
        text = w["latest"]
        assert w["got"] == [1, 3] and "ordering" in w["poisoned"]
        received = {"direction": "received", **proto}
        assert value(text, "tpwire_envelopes_total", action="INFER", **received) == 2
        assert value(text, "tpwire_envelope_seconds_count", **received) == 2
        assert value(text, "tpwire_cpu_path_seconds_count", **received) == 2
        assert value(text, "tpwire_head_wait_seconds_count", action="INFER", **proto) == 2
        # the wait and the CPU path are parts of the envelope's time on this rank
        spent = value(text, "tpwire_envelope_seconds_sum", **received)
        parts = value(text, "tpwire_head_wait_seconds_sum", action="INFER", **proto) + value(
            text, "tpwire_cpu_path_seconds_sum", **received
        )
        assert 0 < parts <= spent
        assert value(text, "tpwire_last_sequence", **received) == 3
        assert value(text, "tpwire_last_epoch", **received) == 0
        refused = "tpwire_envelopes_refused_total"
        assert value(text, refused, code=w["refused_code"], fm=w["refused_fm"], **received) == 1
        assert value(text, refused, code="ordering", fm="none", **received) == 1
        assert value(text, "tpwire_poisoned_total", cause="ordering", **proto) == 1
        assert value(text, "tpwire_watchdog_total", **proto) == 0
        # frame 0 is the same size on every end: what rank 0 counted for the two delivered
        frame0 = value(src["latest"], "tpwire_frame0_bytes_total", direction="sent", **proto)
        assert value(text, "tpwire_frame0_bytes_total", **received) == frame0 * 2 / 3


def test_poison_reasons_fall_in_a_fixed_set_of_causes() -> None:
    cases = {
        "ordering: call id 3 after 3": "ordering",
        "frame 0 refused: bad magic": "frame0",
        "head refused: trailer": "frame0",
        "frame 1 refused: short": "frame1",
        "frame 0 send of INFER failed: RuntimeError: gone": "send",
        "payload send of INFER failed after the header: x": "send",
        "waiting for frame 0 failed: RuntimeError: Connection closed by peer": "receive",
        "frame 1 receive failed: x": "receive",
        "gloo payload failed: x": "receive",
        "a heartbeat failed: x": "heartbeat",
        "decode step 7 failed: CUDA out of memory": "other",
        "": "other",
    }
    assert {reason: poison_cause(reason) for reason in cases} == cases
    assert set(cases.values()) <= set(CAUSES)


def test_watchdog_and_refusal_classes_without_a_channel() -> None:
    registry = CollectorRegistry()
    rec = MetricsRecorder(registry)
    rec.protocol = "p"
    rec.watchdog(None, "frame 0 not done within 5 s")
    rec.refused(EnvelopeEvent(None, None, "refused", b"x", 1, 0.0, code="frame0"))
    rec.refused(EnvelopeEvent(None, None, "received", b"x", 1, 0.0))
    text = generate_latest(registry).decode()
    assert value(text, "tpwire_watchdog_total", protocol="p") == 1
    refused = "tpwire_envelopes_refused_total"
    received = {"protocol": "p", "direction": "received", "fm": "none"}
    assert value(text, refused, code="frame0", **received) == 1
    assert value(text, refused, code="ordering", **received) == 1
    rec.refused(EnvelopeEvent(None, None, "unsent", b"", 0, 0.0, code="no such code"))
    # a failure-mode id as the spec spells one is its label; anything else is "other"
    rec.refused(EnvelopeEvent(None, None, "unsent", b"", 0, 0.0, code="range", fm="FM-03"))
    rec.refused(EnvelopeEvent(None, None, "unsent", b"", 0, 0.0, code="range", fm="x\ny z"))
    text = generate_latest(registry).decode()
    sent = {"protocol": "p", "direction": "sent"}
    assert value(text, refused, code="other", fm="none", **sent) == 1
    assert value(text, refused, code="range", fm="FM-03", **sent) == 1
    assert value(text, refused, code="range", fm="other", **sent) == 1
    with pytest.raises(ValueError, match="ranks must be"):
        MetricsRecorder(registry, ranks="1")


def test_one_recorder_in_two_channels_labels_each_envelope_with_its_protocol() -> None:
    from tests.envelopes import HEADER
    from tpwire.generated import pp_contract, tp_control
    from tpwire.runtime.recorder import ChannelInfo

    rec = MetricsRecorder(CollectorRegistry())
    for bindings in (tp_control.BINDINGS, pp_contract.BINDINGS):
        rec.setup(ChannelInfo(bindings, 0, 2, "rank0", None, "raise"))  # type: ignore[arg-type]
    pp_header = pp_contract.BINDINGS.control_header(None, pp_contract.BINDINGS.noop)
    for header in (HEADER, pp_header):
        rec.sent(EnvelopeEvent(header, header.action, "sent", b"x" * 8, 8, 0.001))
    text = generate_latest(rec.registry).decode()
    assert value(text, "tpwire_envelopes_total", protocol="tp_control", action="INFER",
                 direction="sent") == 1  # fmt: skip
    assert value(text, "tpwire_last_sequence", protocol="tp_control", direction="sent") == 7
    assert value(text, "tpwire_envelopes_total", protocol="pp_contract", action="NOOP",
                 direction="sent") == 1  # fmt: skip


def test_without_the_extra_the_recorder_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingExtra) as info:
        MetricsRecorder()
    assert str(info.value) == (
        "tpwire.runtime.metrics needs 'prometheus_client' from the 'metrics' extra: "
        "pip install 'tpwire[metrics]'"
    )
