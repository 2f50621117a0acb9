"""The compat transport: today's Scope wire behind the channel API.

A 5 x int64-style header (the spec's slot order; -1 for an absent field), then the
metadata pickled by ``broadcast_object_list``, then one broadcast per tensor in
``(key)`` order. It exists for staged rollout (ranks can move to tpwire's bindings first and
to its wire later) and as the baseline of the benchmarks.

UNSAFE WITH UNTRUSTED PEERS: ``broadcast_object_list`` unpickles what the peer sent, and
unpickling runs code. Use it only between ranks of one job you control; the default
channels never unpickle anything.

It is a broadcast transport with a wire of its own (a ``Carrier``): the channel keeps the
sender-side guarantees (the whole preflight before the header; a failure after it poisons)
and validates what the receiver rebuilt.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist

from .bindings import A, Bindings, H, M
from .channel import BroadcastChannel
from .framing import FRAME0_TAG
from .plain import plain_value, value_from_plain
from .transport import BroadcastTransport, Carrier
from .wire import DTYPE_BY_NAME, materialize

_ABSENT = -1


class CompatTransport(BroadcastTransport):
    """A broadcast transport whose envelopes travel on Scope's current (pickle) wire."""

    kind = "compat"

    def carrier(self, bindings: Bindings[Any, Any], device: torch.device | None) -> Carrier:
        return CompatWire(self, bindings, device)


class CompatWire:
    """One envelope as Scope sends it today: header slots, pickled metadata, tensors."""

    def __init__(
        self,
        transport: BroadcastTransport,
        bindings: Bindings[Any, Any],
        device: torch.device | None,
    ) -> None:
        self.transport = transport
        self.bindings = bindings
        self.device = device
        self.slots = [f.name for f in dataclasses.fields(bindings.header)]
        self.enums = dict(bindings.enums)

    def stage(self, msg: Any, header: Any) -> tuple[torch.Tensor, Any, list[torch.Tensor]]:
        """The header slots, the metadata and the tensors, built before any byte leaves."""
        values = [getattr(header, name) for name in self.slots]
        slots = torch.tensor([_ABSENT if v is None else int(v) for v in values], dtype=torch.int64)
        if msg is None:
            return slots, None, []
        fields: dict[str, Any] = {}
        tensors: list[tuple[str, torch.Tensor]] = []
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
                [k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in tensors
            ],
        }
        return slots, meta, [t for _, t in tensors]

    def send_header(self, staged: tuple[torch.Tensor, Any, list[torch.Tensor]]) -> None:
        self.transport.put(staged[0], FRAME0_TAG, frame0=True)

    def send_payload(self, staged: tuple[torch.Tensor, Any, list[torch.Tensor]]) -> None:
        _, meta, tensors = staged
        if meta is None:
            return
        t = self.transport
        dist.broadcast_object_list([meta], src=t.src, group=t.group)
        for tensor in tensors:
            t.put(tensor, 0, frame0=False)

    def receive_header(self) -> Any:
        slots = torch.empty(len(self.slots), dtype=torch.int64)
        self.transport.get(slots, FRAME0_TAG, frame0=True)
        return self._header_from(slots.tolist())

    def receive_payload(self, header: Any) -> Any:
        if self.bindings.action_of(header) not in self.bindings.payload_actions:
            return None
        return self._payload()

    def _header_from(self, raw_slots: list[int]) -> Any:
        header_fields = {f.name: f for f in dataclasses.fields(self.bindings.header)}
        kwargs: dict[str, Any] = {}
        for name, raw in zip(self.slots, raw_slots, strict=True):
            hint = str(header_fields[name].type)
            enum_cls = self.enums.get(hint.replace(" | None", ""))
            kwargs[name] = None if raw == _ABSENT else (enum_cls(raw) if enum_cls else raw)
        return self.bindings.header(**kwargs)

    def _payload(self) -> Any:
        t = self.transport
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=t.src, group=t.group)  # unpickles: unsafe
        meta = box[0]
        cls: Any = self.bindings.messages[meta["message"]]
        kw: dict[str, Any] = {f.name: None for f in dataclasses.fields(cls)}
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for name, value in meta["fields"].items():
            kw[name] = value_from_plain(types[name], value, self.enums)
        for key, dtype, shape in meta["tensor_specs"]:
            tensor = torch.empty(shape, dtype=DTYPE_BY_NAME[dtype].torch_dtype, device=self.device)
            t.get(tensor, 0, frame0=False)
            kw[key] = tensor
        return cls(**kw)


class CompatBroadcastChannel(BroadcastChannel[H, M, A]):
    """``BroadcastChannel``'s API over Scope's current (pickle-based) wire."""

    transport_class = CompatTransport
