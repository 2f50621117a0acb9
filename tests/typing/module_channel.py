"""A channel built on a generated *module* (``BroadcastChannel(tc)``, the pattern of
examples/preview_protocol/stream.py) is as typed as one built on its ``BINDINGS``, and
``recv().action`` is the protocol's action enum: checked with ``mypy --strict`` by
tests/test_typed_modules.py, never imported by the test suite."""

from __future__ import annotations

import enum
from typing import assert_type

from tpwire.generated import pp_contract as pp
from tpwire.generated import tp_control as tc
from tpwire.runtime.bindings import Bindings, bindings_of
from tpwire.runtime.channel import BroadcastChannel, P2PChannel, Received
from tpwire.runtime.compat import CompatBroadcastChannel


def from_module() -> tc.TPAction:
    ch = BroadcastChannel(tc, poison="raise")
    assert_type(ch, BroadcastChannel[tc.Header, tc.Message, tc.TPAction])
    got = ch.open().recv()
    assert_type(got, Received[tc.Header, tc.Message, tc.TPAction])
    assert_type(got.action, tc.TPAction)
    if got.action is tc.TPAction.SHUTDOWN:
        ch.close()
    return got.action


def from_bindings() -> None:
    ch = BroadcastChannel(tc.BINDINGS)
    assert_type(ch, BroadcastChannel[tc.Header, tc.Message, tc.TPAction])
    assert_type(ch.recv().action, tc.TPAction)


def p2p_and_compat() -> None:
    p2p = P2PChannel(pp, peer=1)
    assert_type(p2p, P2PChannel[pp.Header, pp.Message, pp.PPAction])
    assert_type(p2p.recv().action, pp.PPAction)
    compat = CompatBroadcastChannel(tc)
    assert_type(compat, CompatBroadcastChannel[tc.Header, tc.Message, tc.TPAction])
    assert_type(compat.recv().action, tc.TPAction)


def the_bindings() -> None:
    assert_type(bindings_of(tc), Bindings[tc.Header, tc.Message, tc.TPAction])
    assert_type(tc.BINDINGS.shutdown, tc.TPAction)


def two_parameters_still_fit(ch: BroadcastChannel[tc.Header, tc.Message]) -> enum.IntEnum:
    """Code written against the two-parameter types keeps checking: the action parameter
    defaults to ``IntEnum``, and a channel of ``TPAction`` is one of ``IntEnum``."""
    typed: BroadcastChannel[tc.Header, tc.Message] = BroadcastChannel(tc)
    assert_type(ch.recv(), Received[tc.Header, tc.Message])
    return typed.recv().action
