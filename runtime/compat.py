"""The compat transport: today's Scope wire behind the channel API.

A 5 x int64-style header (the spec's slot order; -1 for an absent field), then the
metadata pickled by ``broadcast_object_list``, then one broadcast per tensor in
``(key)`` order. It exists for staged rollout (ranks can move to tpwire's bindings first and
to its wire later) and as the baseline of the benchmarks.

UNSAFE WITH UNTRUSTED PEERS: ``broadcast_object_list`` unpickles what the peer sent, and
unpickling runs code. Use it only between ranks of one job you control; the default
channels never unpickle anything.

It keeps the sender-side guarantees: the whole ``encode`` preflight runs before the header,
and a failure after the header poisons the channel. The receiver validates what it rebuilt.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist

from .bindings import A, Bindings, GeneratedModule, H, M
from .channel import FRAME0_TAG, BroadcastChannel, Received, _log
from .errors import EnvelopeInvalid
from .plain import plain_value, value_from_plain
from .wire import DTYPE_BY_NAME, Frames, Prepared, materialize

_ABSENT = -1


class CompatBroadcastChannel(BroadcastChannel[H, M, A]):
    """``BroadcastChannel``'s API over Scope's current (pickle-based) wire."""

    def __init__(
        self, protocol: Bindings[H, M, A] | GeneratedModule[H, M, A], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(protocol, *args, **kwargs)
        self._slots = [f.name for f in dataclasses.fields(self.protocol.header)]  # type: ignore[arg-type]
        self._enums = dict(self.protocol.enums)
        self.parity_flags["tpwire.transport"] = "compat"

    def send(self, msg: M | None, header: H) -> None:
        self._ready(sender=True)
        cache = self._sent_cache
        across = cache.check(msg, header) if cache is not None else []  # cached_by rules
        try:
            self.protocol.prepare(msg, header, device=self.device)  # the preflight
        except EnvelopeInvalid as exc:
            if across:
                raise EnvelopeInvalid([*across, *exc.violations]) from None
            raise
        if across:
            self._refused(header, across)
            raise EnvelopeInvalid(across)
        with self._lock:
            self._ready(sender=True)
            self._check_order(header)
            self._send_compat(msg, header)
            if cache is not None:
                cache.commit(msg, header)

    def _transmit(self, frames: Frames | Prepared, header: H, *, watched: bool = True) -> None:
        """NOOP / SHUTDOWN / ERROR (and heartbeats): the header alone."""
        self._send_compat(None, header, watched=watched)

    def _send_compat(self, msg: Any, header: Any, *, watched: bool = True) -> None:
        values = [getattr(header, name) for name in self._slots]
        slots = torch.tensor([_ABSENT if v is None else int(v) for v in values], dtype=torch.int64)
        meta: dict[str, Any] | None = None
        tensors: list[tuple[str, torch.Tensor]] = []
        if msg is not None:
            fields: dict[str, Any] = {}
            for f in dataclasses.fields(msg):
                value = getattr(msg, f.name)
                if isinstance(value, torch.Tensor):
                    tensors.append((f.name, materialize(value, self.device)))
                else:
                    fields[f.name] = plain_value(value)
            tensors.sort(key=lambda kv: kv[0])
            meta = {
                "message": type(msg).__name__,
                "fields": fields,
                "tensor_specs": [
                    [k, str(t.dtype).removeprefix("torch."), list(t.shape)] for k, t in tensors
                ],
            }
        with self._deadline(lambda: f"send of {self._ids(header)}", armed=watched):
            try:
                self._put(slots, FRAME0_TAG, frame0=True)
            except BaseException as exc:
                self._poison(header, f"header broadcast failed: {exc!r}")
            try:
                if meta is not None:
                    dist.broadcast_object_list([meta], src=self.src, group=self.group)
                    for _, t in tensors:
                        self._put(t, 0, frame0=False)
            except BaseException as exc:
                self._poison(header, f"payload broadcast failed after the header: {exc}")
        self._sent_order.commit(header)
        self.last_sent = header
        self._last_send = time.monotonic()
        if self.protocol.action_of(header) in self._terminal:
            self.closed = True  # however it was sent: the workers have left their loops

    def recv(self) -> Received[H, M, A]:
        self._ready(sender=False)
        slots = torch.empty(len(self._slots), dtype=torch.int64)
        with self._deadline(lambda: f"a header after {self._ids(self.last_header)}"):
            try:
                self._get(slots, FRAME0_TAG, frame0=True)
            except BaseException as exc:
                self._poison(self.last_header, f"waiting for the header failed: {exc!r}")
        header: Any = self.last_header
        try:
            header = self._header_from(slots.tolist())
            action = self.protocol.action_of(header)
            msg = None
            if action in self.protocol.payload_actions:
                with self._deadline(lambda: f"the payload of {self._ids(header)}"):
                    msg = self._payload()
        except BaseException as exc:  # the sender is mid-message: this rank cannot follow
            self._poison(header, f"compat payload failed: {exc!r}")
        problem = self._recv_order.problem(header)
        if problem is not None:
            self._poison(header, f"ordering: {problem}")
        self._recv_order.commit(header)
        self.last_header = header
        violations = self.protocol.validate(msg, header)
        if violations:
            _log(f"tpwire[rank {self.rank}]: envelope refused after receive {self._ids(header)}")
            raise EnvelopeInvalid(violations)
        msg, kept = self._accept_cached(msg, header)
        if action in self._terminal:
            self.closed = True
        return Received(action, header, msg, None, kept)

    def _header_from(self, raw_slots: list[int]) -> Any:
        header_fields = {f.name: f for f in dataclasses.fields(self.protocol.header)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for name, raw in zip(self._slots, raw_slots, strict=True):
            hint = str(header_fields[name].type)
            enum_cls = self._enums.get(hint.replace(" | None", ""))
            kwargs[name] = None if raw == _ABSENT else (enum_cls(raw) if enum_cls else raw)
        return self.protocol.header(**kwargs)

    def _payload(self) -> Any:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=self.src, group=self.group)  # unpickles: unsafe
        meta: Mapping[str, Any] = box[0]
        cls: Any = self.protocol.messages[meta["message"]]
        kw: dict[str, Any] = {f.name: None for f in dataclasses.fields(cls)}
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for name, value in meta["fields"].items():
            kw[name] = value_from_plain(types[name], value, self._enums)
        specs: Sequence[Sequence[Any]] = meta["tensor_specs"]
        for key, dtype, shape in specs:
            t = torch.empty(shape, dtype=DTYPE_BY_NAME[dtype].torch_dtype, device=self.device)
            self._get(t, 0, frame0=False)
            kw[key] = t
        return cls(**kw)
