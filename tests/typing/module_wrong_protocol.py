"""A channel built on the ``pp_contract`` module refuses ``tp_control``'s envelopes under
``mypy --strict`` (tests/test_typed_modules.py); never imported by the test suite."""

from __future__ import annotations

from tpwire.generated import pp_contract as pp
from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel


def send_wrong(msg: tc.InferV1GeneratorOnly, header: tc.Header) -> None:
    ch = BroadcastChannel(pp)
    ch.send(msg, header)  # two errors: a tp_control message, a tp_control header
    action: pp.PPAction = ch.recv().action
    wrong: tc.TPAction = ch.recv().action  # a third: the action is pp_contract's
    del action, wrong
