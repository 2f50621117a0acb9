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

from typing import TYPE_CHECKING, Any

from tpwire.extras import require

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


def refusal_code(event: EnvelopeEvent) -> str:
    """A refused envelope's code: the event's (a violation code or a fixed class), else the
    state's class ("ordering" for an envelope received, then refused by the ordering)."""
    if event.code:
        return event.code[:64]  # a spec's code: bounded by the spec, cut in case
    return "ordering" if event.state == "received" else "other"


class MetricsRecorder(Recorder):
    """Every rank's envelopes, refusals and failures as Prometheus metrics in ``registry``
    (a fresh ``CollectorRegistry`` of its own unless given); with ``port``, the ranks that
    ``ranks`` names ("0", or "all") serve it (``prometheus_client.start_http_server``)."""

    name = "metrics"

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        port: int | None = None,
        ranks: str = "0",
    ) -> None:
        require("metrics", "tpwire.runtime.metrics")
        import prometheus_client as pc

        if ranks not in ("0", "all"):
            raise ValueError(f"ranks must be '0' or 'all', not {ranks!r}")
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.port = port
        self.ranks = ranks
        self.protocol = ""
        self.server: Any = None  # (server, thread) once this rank serves
        self._bindings: Any = None
        pd, pdc, pc_ = ("protocol", "direction"), ("protocol", "direction", "code"), ("protocol",)
        reg = self.registry
        self.envelopes = pc.Counter(
            "tpwire_envelopes", "Envelopes sent or received and accepted",
            ("protocol", "action", "direction"), registry=reg,
        )  # fmt: skip
        self.refused_total = pc.Counter(
            "tpwire_envelopes_refused", "Envelopes refused, by the first violation's code",
            pdc, registry=reg,
        )  # fmt: skip
        self.poisoned_total = pc.Counter(
            "tpwire_poisoned", "Channels poisoned, by cause", ("protocol", "cause"), registry=reg
        )
        self.watchdog_total = pc.Counter("tpwire_watchdog", "Watchdog exits", pc_, registry=reg)
        self.frame0_bytes = pc.Counter(
            "tpwire_frame0_bytes", "Frame 0 bytes of accepted envelopes", pd, registry=reg
        )
        self.frame1_bytes = pc.Counter(
            "tpwire_frame1_bytes", "Frame 1 bytes of accepted envelopes", pd, registry=reg
        )
        self.seconds = pc.Histogram(
            "tpwire_envelope_seconds", "Seconds from an envelope's first collective's start "
            "to its last one's end", pd, registry=reg, buckets=SECONDS_BUCKETS,
        )  # fmt: skip
        self.last_sequence = pc.Gauge(
            "tpwire_last_sequence", "The last accepted envelope's sequence id", pd, registry=reg
        )
        self.last_epoch = pc.Gauge(
            "tpwire_last_epoch", "The last accepted envelope's epoch id", pd, registry=reg
        )

    def setup(self, channel: ChannelInfo) -> str | None:
        self.protocol = channel.bindings.protocol
        self._bindings = channel.bindings
        if self.port is not None and (self.ranks == "all" or channel.rank == 0):
            self.serve(self.port)
        return None

    def serve(self, port: int) -> None:
        """Serve the registry on ``port`` (once; a second channel of this recorder reuses it)."""
        if self.server is None:
            import prometheus_client as pc

            # (server, thread) since prometheus-client 0.20; None before
            self.server = pc.start_http_server(port, registry=self.registry) or (None, None)

    def _count(self, event: EnvelopeEvent, direction: str) -> None:
        protocol = self.protocol
        action = event.action.name if event.action is not None else "unknown"
        self.envelopes.labels(protocol, action, direction).inc()
        frame0 = len(event.frame0)
        self.frame0_bytes.labels(protocol, direction).inc(frame0)
        self.frame1_bytes.labels(protocol, direction).inc(max(event.nbytes - frame0, 0))
        self.seconds.labels(protocol, direction).observe(event.seconds)
        ids = self._bindings.role_ids(event.header)
        if ids.sequence is not None:
            self.last_sequence.labels(protocol, direction).set(ids.sequence)
        if ids.epoch is not None:
            self.last_epoch.labels(protocol, direction).set(ids.epoch)

    def sent(self, event: EnvelopeEvent) -> None:
        self._count(event, "sent")

    def received(self, event: EnvelopeEvent) -> None:
        self._count(event, "received")

    def refused(self, event: EnvelopeEvent) -> None:
        direction = "sent" if event.state == "unsent" else "received"
        self.refused_total.labels(self.protocol, direction, refusal_code(event)).inc()

    def poisoned(self, header: Any, reason: str, *, exiting: bool) -> None:
        self.poisoned_total.labels(self.protocol, poison_cause(reason)).inc()

    def watchdog(self, header: Any, reason: str) -> None:
        self.watchdog_total.labels(self.protocol).inc()
