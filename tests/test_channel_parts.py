"""The channel's seams on their own: ``ChannelOptions``, the recorder events a channel
emits (on real gloo groups), and a recorder that raises (switched off, the stream goes on)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.mp import run_ranks
from tpwire.runtime.options import ChannelKnobs, ChannelOptions, options_of
from tpwire.runtime.recorder import EnvelopeEvent, Observation, Recorder, Recorders


def test_options_are_checked_and_frozen() -> None:
    for bad in (math.inf, math.nan, -1.0, 0.0, "30", True):
        with pytest.raises(ValueError, match="watchdog_s must be a number of seconds"):
            ChannelOptions(watchdog_s=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poison must be 'exit' or 'raise'"):
        ChannelOptions(poison="ignore")
    opts = ChannelOptions(watchdog_s=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.watchdog_s = 6  # type: ignore[misc]
    with pytest.raises(ValueError, match="poison"):
        opts.replace(poison="nope")


def test_knobs_are_the_options_fields_and_override_given_options() -> None:
    assert set(ChannelKnobs.__annotations__) == {f.name for f in dataclasses.fields(ChannelOptions)}
    base = ChannelOptions(watchdog_s=5, tripwires=True)
    merged = options_of(base, {"watchdog_s": 9})
    assert (merged.watchdog_s, merged.tripwires) == (9, True)
    assert options_of(base, {}) is base
    assert options_of(None, {}) == ChannelOptions()
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*watchdog"):
        options_of(None, {"watchdog": 5})


def test_the_head_carries_by_device_unless_told() -> None:
    cpu, dev = torch.device("cpu"), torch.device("meta")
    assert ChannelOptions().head_carry_limit(None) == 1 << 20
    assert ChannelOptions().head_carry_limit(cpu) == 1 << 20
    assert ChannelOptions().head_carry_limit(dev) == 1 << 62
    assert ChannelOptions(arena=True).head_carry_limit(cpu) == 1 << 62
    assert ChannelOptions(carry_limit=64).head_carry_limit(dev) == 64


class Listening(Recorder):
    """Every event, in order, with what identifies it."""

    name = "listening"

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def _ids(self, header: Any) -> Any:
        return getattr(header, "call_id", None)

    def setup(self, channel: Any) -> str | None:
        self.events.append(("setup", channel.rank, channel.world, channel.name))
        return None

    def opened(self) -> None:
        self.events.append(("opened",))

    def sent(self, event: EnvelopeEvent) -> None:
        assert event.frame0 and event.nbytes >= len(event.frame0) and event.seconds >= 0
        self.events.append(
            ("sent", event.action.name if event.action else None, self._ids(event.header))
        )

    def received(self, event: EnvelopeEvent) -> None:
        assert event.frame0 and event.nbytes >= len(event.frame0)
        self.events.append(
            ("received", event.action.name if event.action else None, self._ids(event.header))
        )

    def refused(self, event: EnvelopeEvent) -> None:
        self.events.append(("refused", event.state, self._ids(event.header), event.error))

    def observed(self, header: Any, observation: Observation) -> None:
        self.events.append(
            ("observed", observation.what, observation.state, dict(observation.counts))
        )

    def closed(self) -> None:
        self.events.append(("closed",))


class Raising(Recorder):
    name = "raising"

    def sent(self, event: EnvelopeEvent) -> None:
        raise OSError("disk on fire")


def events_of_a_stream(rank: int, world: int) -> Any:
    from tests.envelopes import HEADER, v1_message
    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel

    listening = Listening()
    opts = ChannelOptions(poison="raise", recorders=[listening, Raising()])
    ch = BroadcastChannel(tc, options=opts, watchdog_s=60).open()
    if rank == 0:
        for i in range(3):
            header = dataclasses.replace(HEADER, call_id=10 + i, chunk_index=i)
            ch.send(v1_message(current_start_frame=12 + i), header)
        ch.shutdown()
    else:
        while True:
            got = ch.recv()
            ch.observe(got.header, state="ran", steps=4)
            if got.action in tc.BINDINGS.terminal:
                break
    ch.close()
    return {"events": listening.events}


@pytest.mark.timeout(120)
def test_a_channel_tells_its_recorders_each_step_and_drops_one_that_raises(tmp_path: Path) -> None:
    results = run_ranks(
        "events_of_a_stream", tmp_path, world=2, timeout=90, module="test_channel_parts"
    )
    src, worker = (r.result["events"] for r in results)
    assert src[0] == ["setup", 0, 2, "rank0"] and src[1] == ["opened"]
    assert [e[0] for e in src[2:]] == ["sent"] * 4 + ["closed"], src
    assert [e[1:] for e in src[2:6]] == [
        ["INFER", 10],
        ["INFER", 11],
        ["INFER", 12],
        ["SHUTDOWN", 13],
    ]
    assert worker[0] == ["setup", 1, 2, "rank1"] and worker[1] == ["opened"]
    kinds = [e[0] for e in worker[2:]]
    assert kinds == ["received", "observed"] * 4 + ["closed"], worker
    assert worker[2] == ["received", "INFER", 10]
    assert worker[3] == ["observed", "observed", "ran", {"steps": 4}]
    assert worker[-3] == ["received", "SHUTDOWN", 13]
    # the raising recorder: one line, then off; the stream went on
    (line,) = [x for x in results[0].log.splitlines() if "raising off" in x]
    assert line == (
        "tpwire[rank 0]: raising off (the stream goes on): sent raised OSError: disk on fire"
    )


def test_recorders_fan_out_in_order_and_agree_per_name() -> None:
    a, b = Listening(), Listening()
    b.name = "other"
    recs = Recorders([a, b], rank=3)
    assert not recs  # nothing active before the handshake's verdict
    recs.agree({"listening": [], "other": ["rank 1: no disk"]})
    assert recs.active == [a] and a.events == [("opened",)] and b.events == []
    recs.emit("closed")
    assert a.events[-1] == ("closed",)
