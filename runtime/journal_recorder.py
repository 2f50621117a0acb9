"""The envelope journal as a channel recorder (docs/journal.md; docs/architecture.md,
recorders): each event becomes a record of this rank's ``JournalWriter``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import journal as _journal
from .escape import printable
from .recorder import ChannelInfo, EnvelopeEvent, Observation, Recorder


class JournalRecorder(Recorder):
    """Every envelope, observation and the stream's end, in this rank's journal."""

    name = "journal"

    def __init__(self, config: _journal.JournalConfig | None) -> None:
        self.config = config
        #: the writer, once every rank agreed to journal (None before, and when off)
        self.writer: _journal.JournalWriter | None = None
        self._pending: _journal.JournalWriter | None = None
        self._info: ChannelInfo | None = None

    @property
    def wants_segments(self) -> bool:
        w = self.writer
        return w is not None and w.full and w.active  # no copies for a journal that stopped

    def parity(self) -> Mapping[str, object]:
        # journaling runs no collective, but every rank should agree whether it records
        return {"tpwire.journal": self.config.mode if self.config is not None else "off"}

    def setup(self, channel: ChannelInfo) -> str | None:
        """Create this rank's journal (its folder and first file) before the handshake."""
        self._info = channel
        if self.config is None:
            return None
        try:
            self._pending = _journal.JournalWriter(
                self.config,
                channel.bindings,
                rank=channel.rank,
                world=channel.world,
                name=channel.name,
                source=channel.source,
            )
        except _journal.JournalUnavailable as exc:  # one line already
            return str(exc)[:300]
        except Exception as exc:
            return printable(f"cannot set up the journal: {type(exc).__name__}: {exc}", 300)
        return None

    def opened(self) -> None:
        self.writer, self._pending = self._pending, None

    def abandoned(self) -> None:
        """The channel did not open: the writer set up for it goes, leaving no file."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.abandon()

    def _end(self, how: str, reason: str | None, header: Any, *, exiting: bool) -> None:
        """Journal why the stream ended and write what is queued (at most 2 s: the process
        may be about to exit). The writer stays open for observations until the channel is
        closed, unless the process exits now."""
        w = self.writer
        if w is None:
            self.abandoned()  # the handshake itself failed
            return
        w.end(how, reason, header)
        if exiting:
            w.close(timeout=2.0)
        else:
            w.drain(timeout=2.0)

    def _terminal(self, event: EnvelopeEvent) -> None:
        info = self._info
        if info is not None and event.action in info.bindings.terminal:
            assert event.action is not None
            self._end(event.action.name, event.reason, event.header, exiting=False)

    def sent(self, event: EnvelopeEvent) -> None:
        w = self.writer
        if w is not None:
            w.envelope(event.header, event.frame0, sent=True, state="sent", segments=event.segments)
            self._terminal(event)

    def received(self, event: EnvelopeEvent) -> None:
        w = self.writer
        if w is not None:
            w.envelope(
                event.header, event.frame0, sent=False, state=event.state,
                segments=event.segments,
            )  # fmt: skip
            self._terminal(event)

    def refused(self, event: EnvelopeEvent) -> None:
        w = self.writer
        if w is not None and event.frame0:
            w.envelope(
                event.header, event.frame0, sent=False, state=event.state,
                error=event.error, segments=event.segments,
            )  # fmt: skip

    def observed(self, header: Any, observation: Observation) -> None:
        w = self.writer
        if w is None:
            return
        meta: dict[str, Any] = {"what": observation.what}
        if observation.what == "observed":
            meta["state"] = observation.state
        if observation.input_digest is not None:
            meta["inputs"] = _journal.hex64(observation.input_digest)
        if observation.field_digests is not None:
            meta["fields"] = {k: _journal.hex64(v) for k, v in observation.field_digests.items()}
        if observation.output_digests:
            meta["outputs"] = {k: _journal.hex64(v) for k, v in observation.output_digests.items()}
        if observation.counts:
            meta["counts"] = dict(observation.counts)
        w.observe(header, meta)

    def poisoned(self, header: Any, reason: str, *, exiting: bool) -> None:
        self._end("poisoned", reason, header, exiting=exiting)

    def watchdog(self, header: Any, reason: str) -> None:
        self._end("watchdog", reason, header, exiting=True)

    def terminated(self, reason: str) -> None:
        self._end("terminated", reason, None, exiting=True)

    def closed(self) -> None:
        self._end("closed", None, None, exiting=True)


def journal_recorder(arg: _journal.JournalArg) -> JournalRecorder:
    """The journal recorder a channel's ``journal`` option (or ``TPWIRE_JOURNAL``) asks for;
    one whose config is None records nothing but its parity flag ("off")."""
    return JournalRecorder(_journal.resolve(arg))
