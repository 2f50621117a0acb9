"""Prometheus metrics as a channel recorder (docs/runtime.md, Metrics; docs/architecture.md,
recorders): counters of envelopes, bytes, refusals, poison and watchdog exits, a histogram of
envelope seconds and gauges of the last ids, per protocol and direction.

Labels stay bounded: the protocol, the action's name, the direction ("sent" or "received"),
a violation code or a fixed class of refusal, and a fixed class of poison cause. The ids
themselves are gauge values, never labels. Every rank records; the ranks named by ``ranks``
serve their registry over HTTP when a ``port`` is given. Needs the ``metrics`` extra
(``prometheus-client``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tpwire.extras import require

from .errors import VIOLATION_CODES
from .recorder import ChannelInfo, EnvelopeEvent, Recorder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: the poison reasons' classes: the first fragment (a prefix, or text within the part before
#: the first ":") that a reason holds names its class; else "other" (runtime/receiver.py,
#: runtime/sender.py and runtime/policy.py write these reasons)
POISON_CAUSES: tuple[tuple[str, str], ...] = (
    ("ordering", "ordering"),
    ("frame 0 refused", "frame0"),
    ("head refused", "frame0"),
    ("frame 1 refused", "frame1"),
    ("heartbeat", "heartbeat"),
    (" send of ", "send"),
    ("waiting for", "receive"),
    ("receive failed", "receive"),
    ("payload failed", "receive"),
)

#: every class a cause label can take
CAUSES: tuple[str, ...] = (*sorted({c for _, c in POISON_CAUSES}), "other")

#: seconds: from a heartbeat's tens of microseconds to a stalled multi-second collective
SECONDS_BUCKETS: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def poison_cause(reason: str) -> str:
    """The bounded class of a poison reason (``POISON_CAUSES``), for a label."""
    head = reason.split(":", 1)[0]
    for fragment, cause in POISON_CAUSES:
        if fragment in head or reason.startswith(fragment):
            return cause
    return "other"


#: every class a code label can take: the stable violation codes (docs/spec-language.md,
#: "Violation codes"), the refusals that have none, and "other"
REFUSAL_CODES: tuple[str, ...] = (*VIOLATION_CODES, "ordering", "wire", "frame0", "other")


#: a failure-mode id as the spec spells one (``FM-03``); anything else is "other"
_FM = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")


def refusal_fm(event: EnvelopeEvent) -> str:
    """A refused envelope's failure-mode id: the spec's (bounded by the spec), else "none"."""
    fm = event.fm
    if fm is None:
        return "none"
    return fm if _FM.fullmatch(fm) else "other"


def refusal_code(event: EnvelopeEvent) -> str:
    """A refused envelope's code (``REFUSAL_CODES``): the event's, else "ordering" for an
    envelope received, then refused by the ordering rules."""
    code = event.code or ("ordering" if event.state == "received" else "other")
    return code if code in REFUSAL_CODES else "other"


class MetricsRecorder(Recorder):
    """Every rank's envelopes, refusals and failures as Prometheus metrics in ``registry``
    (a fresh ``CollectorRegistry`` of its own unless given); with ``port``, the ranks that
    ``ranks`` names ("0", or "all") serve it (``prometheus_client.start_http_server``) on
    ``addr`` (every interface by default; "127.0.0.1" keeps it on the machine)."""

    name = "metrics"

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        port: int | None = None,
        addr: str = "0.0.0.0",
        ranks: str = "0",
    ) -> None:
        require("metrics", "tpwire.runtime.metrics")
        import prometheus_client as pc

        if ranks not in ("0", "all"):
            raise ValueError(f"ranks must be '0' or 'all', not {ranks!r}")
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.port = port
        self.addr = addr
        self.ranks = ranks
        #: the protocol of the channel set up last (events whose header tells none)
        self.protocol = ""
        self.server: Any = None  # (server, thread) once this rank serves
        #: header class -> its protocol's name and bindings: one recorder may be in the
        #: options of several channels (docs/runtime.md, Options and recorders)
        self._protocols: dict[type, tuple[str, Any]] = {}
        self._last: tuple[str, Any] = ("", None)
        self._cache: dict[tuple[type, str, str], tuple[Any, ...]] = {}
        pd, pdc, pc_ = (
            ("protocol", "direction"),
            ("protocol", "direction", "code", "fm"),
            ("protocol",),
        )
        reg = self.registry
        self.envelopes = pc.Counter(
            "tpwire_envelopes", "Envelopes sent or received and accepted",
            ("protocol", "action", "direction"), registry=reg,
        )  # fmt: skip
        self.refused_total = pc.Counter(
            "tpwire_envelopes_refused", "Envelopes refused, by the first violation's code and "
            "failure-mode id",
            pdc, registry=reg,
        )  # fmt: skip
        self.poisoned_total = pc.Counter(
            "tpwire_poisoned", "Channels poisoned, by cause", ("protocol", "cause"), registry=reg
        )
        self.watchdog_total = pc.Counter("tpwire_watchdog", "Watchdog exits", pc_, registry=reg)
        self.frame0_bytes = pc.Counter(
            "tpwire_frame0_bytes", "Frame 0 bytes of accepted envelopes (none for a wire of "
            "its own, such as compat's)", pd, registry=reg,
        )  # fmt: skip
        # nbytes less frame 0: a head's slots (used or not), padding and trailer count too,
        # so an envelope without segments counts its head's bytes past frame 0
        self.frame1_bytes = pc.Counter(
            "tpwire_frame1_bytes", "Bytes of accepted envelopes moved beyond frame 0: the "
            "head's segment slots, padding and trailer word, and the segments of their own",
            pd, registry=reg,
        )  # fmt: skip
        self.seconds = pc.Histogram(
            "tpwire_envelope_seconds", "Seconds an envelope took: sent, from its first "
            "collective's start to its last one's end; received, from when the rank waited "
            "for its head to its hand-over", pd, registry=reg, buckets=SECONDS_BUCKETS,
        )  # fmt: skip
        self.head_wait = pc.Histogram(
            "tpwire_head_wait_seconds", "Seconds a receiving rank waited for an envelope's "
            "head (the source preparing it, or a late peer), by the action it brought",
            ("protocol", "action"), registry=reg, buckets=SECONDS_BUCKETS,
        )  # fmt: skip
        self.cpu_path = pc.Histogram(
            "tpwire_cpu_path_seconds", "Seconds of tpwire's own work on an envelope outside "
            "its collectives (preflight and layout; checks, buffers and validation)", pd,
            registry=reg, buckets=SECONDS_BUCKETS,
        )  # fmt: skip
        self.last_sequence = pc.Gauge(
            "tpwire_last_sequence", "The last accepted envelope's sequence id", pd, registry=reg
        )
        self.last_epoch = pc.Gauge(
            "tpwire_last_epoch", "The last accepted envelope's epoch id", pd, registry=reg
        )

    def setup(self, channel: ChannelInfo) -> str | None:
        self.protocol = channel.bindings.protocol
        self._protocols[channel.bindings.header] = self._last = (self.protocol, channel.bindings)
        if self.port is not None and (self.ranks == "all" or channel.rank == 0):
            self.serve(self.port)
        return None

    def serve(self, port: int) -> None:
        """Serve the registry on ``port`` (once; a second channel of this recorder reuses it)."""
        if self.server is None:
            import prometheus_client as pc

            # (server, thread) since prometheus-client 0.20; None before
            served = pc.start_http_server(port, addr=self.addr, registry=self.registry)
            self.server = served or (None, None)

    def _protocol(self, header: Any) -> str:
        known = self._protocols.get(type(header))
        return known[0] if known is not None else self.protocol

    def _children(self, header: type, action: str, direction: str) -> tuple[Any, ...]:
        """The labelled series one envelope updates, made once per protocol, action and
        direction (``labels`` looks its labels up on every call)."""
        key = (header, action, direction)
        children = self._cache.get(key)
        if children is None:
            p, bindings = self._protocols.get(header, self._last)
            children = self._cache[key] = (
                self.envelopes.labels(p, action, direction),
                self.frame0_bytes.labels(p, direction),
                self.frame1_bytes.labels(p, direction),
                self.seconds.labels(p, direction),
                self.last_sequence.labels(p, direction),
                self.last_epoch.labels(p, direction),
                self.cpu_path.labels(p, direction),
                self.head_wait.labels(p, action) if direction == "received" else None,
                bindings.role_ids,
            )
        return children

    def _count(self, event: EnvelopeEvent, direction: str) -> None:
        action = event.action.name if event.action is not None else "unknown"
        header = event.header
        children = self._children(type(header), action, direction)
        envelopes, frame0, frame1, seconds, sequence, epoch, cpu, wait, role_ids = children
        envelopes.inc()
        # nbytes 0: a wire of its own (compat) moved it, and its frame 0 is one rebuilt for
        # the recorders, never sent: no bytes of tpwire's frames to count
        n0 = len(event.frame0) if event.nbytes else 0
        frame0.inc(n0)
        frame1.inc(max(event.nbytes - n0, 0))
        seconds.observe(event.seconds)
        cpu.observe(event.cpu)
        if wait is not None:
            wait.observe(event.waited)
        ids = role_ids(header)
        if ids.sequence is not None:
            sequence.set(ids.sequence)
        if ids.epoch is not None:
            epoch.set(ids.epoch)

    def sent(self, event: EnvelopeEvent) -> None:
        self._count(event, "sent")

    def received(self, event: EnvelopeEvent) -> None:
        self._count(event, "received")

    def refused(self, event: EnvelopeEvent) -> None:
        direction = "sent" if event.state == "unsent" else "received"
        protocol = self._protocol(event.header)
        code, fm = refusal_code(event), refusal_fm(event)
        self.refused_total.labels(protocol, direction, code, fm).inc()

    def poisoned(self, header: Any, reason: str, *, exiting: bool) -> None:
        self.poisoned_total.labels(self._protocol(header), poison_cause(reason)).inc()

    def watchdog(self, header: Any, reason: str) -> None:
        self.watchdog_total.labels(self._protocol(header)).inc()
