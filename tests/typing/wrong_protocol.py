"""A send of another protocol's envelope on a ``tp_control`` channel: ``mypy --strict`` must
refuse it (tests/test_typed_contract.py); never imported by the test suite."""

from __future__ import annotations

from tpwire.generated import pp_contract as pp
from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel


def send_wrong(ch: BroadcastChannel[tc.Header, tc.Message], msg: pp.PPEnvelope) -> None:
    header = pp.Header(call_id=1, chunk_index=0, cache_epoch=0, action=pp.PPAction.INFER)
    ch.send(msg, header)  # two errors: a pp_contract message, a pp_contract header
