"""A user's worker loop over a typed channel: checked with ``mypy --strict`` by
tests/test_typed_contract.py, never imported by the test suite."""

from __future__ import annotations

from typing import assert_type

import torch

from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel, Received


def serve(ch: BroadcastChannel[tc.Header, tc.Message]) -> int:
    got = ch.recv()
    assert_type(got, Received[tc.Header, tc.Message])
    assert_type(got.header, tc.Header)
    assert_type(got.msg, tc.InferV0FullPipeline | tc.InferV1GeneratorOnly | None)
    if isinstance(got.msg, tc.InferV1GeneratorOnly):
        steps: int = got.msg.tp_num_denoise_steps
        latents: torch.Tensor = got.msg.latents
        return steps + latents.dim()
    return got.header.call_id


def open_channel() -> BroadcastChannel[tc.Header, tc.Message]:
    ch = BroadcastChannel(tc.BINDINGS, poison="raise")
    assert_type(ch, BroadcastChannel[tc.Header, tc.Message, tc.TPAction])
    return ch.open()


def send_one(ch: BroadcastChannel[tc.Header, tc.Message], msg: tc.InferV1GeneratorOnly) -> None:
    header = tc.Header(
        call_id=ch.next_sequence(),
        chunk_index=0,
        control_epoch=0,
        cache_epoch=0,
        action=tc.TPAction.INFER,
    )
    ch.send(msg, header)
