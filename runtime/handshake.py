"""The open handshake of a channel (docs/runtime.md, parity; docs/architecture.md).

Every rank sets up its recorders first and shows the outcome in its parity record, so the
ranks decide together whether each recorder runs: all of them, or (one rank cannot) none.
Then the parity check of spec, plan, environment keys and flags, on the transport's
handshake group, under the channel's policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import parity, terminate
from .errors import ProtocolMismatch
from .escape import printable
from .policy import log
from .recorder import ChannelInfo, Recorders

if TYPE_CHECKING:
    from .channel import Channel


def shake(ch: Channel[Any, Any, Any]) -> parity.ParityMismatch | None:
    """Run the handshake for ``ch``: None when every rank agrees, else the mismatch to
    raise (its line already logged on this rank). Any other failure propagates, after the
    recorders were abandoned."""
    t = ch.transport
    info = ChannelInfo(ch.protocol, ch.rank, t.world(), t.name(), t.source(), ch.options.poison)
    status: dict[str, object] = {"rank": ch.rank, "recorders": ch.recorders.setup(info)}
    rec = parity.record(ch.protocol, ch.options.parity_env, ch.parity_flags, status=status)
    # from here on, SIGTERM (a launcher stopping the job) prints what the rank was doing
    ch.terminate_token = terminate.register(ch.rank, ch.policy.doing, ch.terminated)
    try:
        records = ch.policy.collective(
            "the open handshake",
            lambda: parity.check(rec, t.handshake_group()),
            agreed=(parity.ParityMismatch, ProtocolMismatch),
        )
    except parity.ParityMismatch as exc:
        # one line on every rank, in words; the exception, for callers who catch it, is that
        # line (its diff kept), raised by ``open``: a traceback of the caller's frames
        ch.not_opened()
        refused = parity.ParityMismatch(exc.diff, exc.words, rank=ch.rank)
        log(str(refused))
        return refused
    except BaseException:
        ch.not_opened()
        raise
    agree(ch.recorders, records)
    return None


def agree(recorders: Recorders, records: Sequence[Mapping[str, Any]]) -> None:
    """Every rank records, or, where one cannot, none does: one line on each."""
    ranks = parity.statuses(records, "rank")
    theirs = [s if isinstance(s, Mapping) else {} for s in parity.statuses(records, "recorders")]
    problems: dict[str, list[str]] = {}
    for name in {r.name for r in recorders.pending}:
        problems[name] = [  # a peer's text, on one visible line
            f"rank {printable(ranks[i] if ranks[i] is not None else i)}: {printable(p, 300)}"
            for i, p in enumerate(t.get(name) for t in theirs)
            if p is not None
        ]
    recorders.agree(problems)
