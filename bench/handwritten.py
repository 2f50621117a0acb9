"""The hand-written baselines the codec is measured against (the ``bench`` extra).

``msgspec``: what a careful engineer writes by hand for the same v1 tp_control envelope
without a compiler: msgspec structs with the spec's range constraints (``msgspec.Meta``),
encoded as MessagePack arrays; the three lockstep invariants and the derived generator-call
count checked by hand; each tensor's dtype and rank checked by hand, its dims bound to the
latents geometry; the tensors packed into one buffer (16-byte aligned, like tpwire's packed
segment) and viewed back on the receiving side. Its send is validate + encode + pack,
its receive is decode (msgspec checks every type and range) + the hand checks + views.

``pydantic``: a pydantic v2 model of the same scalar fields with the same constraints,
strict (no coercion, as tpwire's validator), validating a dict of them.

Neither checks frame 1's bytes (tpwire's digest), an unknown field, a forbidden field, the
spec fingerprint or a version beyond a literal: the report says so beside the ratio.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch

try:
    import msgspec
    import pydantic
except ImportError:  # pragma: no cover - the bench extra is not installed
    msgspec = None  # type: ignore[assignment]
    pydantic = None  # type: ignore[assignment]

#: Why the baselines are missing, when they are (None: both importable).
MISSING = (
    None
    if msgspec is not None and pydantic is not None
    else "the hand-written baselines need the bench extra (pip install -e '.[bench]': "
    "msgspec, pydantic); `make bench` installs it"
)

I64 = 2**63 - 1
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "int64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}
ALIGN = 16
_PADS = [torch.zeros(n, dtype=torch.uint8) for n in range(ALIGN)]

if msgspec is not None:
    from msgspec import Meta

    NonNeg = Annotated[int, Meta(ge=0, le=I64)]

    class Header(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
        call_id: NonNeg
        chunk_index: NonNeg | None
        control_epoch: NonNeg
        cache_epoch: NonNeg
        action: Annotated[int, Meta(ge=0, le=3)]

    class TensorMeta(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
        name: Literal["denoising_step_list", "latents", "conditioning_embeds", "context"]
        dtype: Literal["bfloat16", "float16", "int64"]
        shape: list[Annotated[int, Meta(ge=1, le=8192)]]
        offset: Annotated[int, Meta(ge=0, le=1 << 32)]

    class InferV1(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
        tp_plan: Literal[1]
        tp_envelope_version: Literal[1]
        height: Annotated[int, Meta(ge=8, le=4096)]
        width: Annotated[int, Meta(ge=8, le=4096)]
        current_start_frame: NonNeg
        init_cache: bool
        manage_cache: bool
        tp_reset_kv_cache: bool
        tp_reset_crossattn_cache: bool
        conditioning_embeds_updated: bool
        kv_cache_attention_bias: Annotated[float, Meta(ge=0.0, le=1.0)]
        tp_do_kv_recompute: bool
        tp_num_denoise_steps: Annotated[int, Meta(ge=1, le=64)]
        tp_expected_generator_calls: Annotated[int, Meta(ge=1, le=65)]
        base_seed: NonNeg
        tensors: list[TensorMeta]
        nbytes: Annotated[int, Meta(ge=0, le=1 << 32)]

    class Envelope(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
        header: Header
        msg: InferV1

    _ENCODER = msgspec.msgpack.Encoder()
    _DECODER = msgspec.msgpack.Decoder(Envelope)

SCALARS = (
    "tp_envelope_version", "height", "width", "current_start_frame", "init_cache",
    "manage_cache", "tp_reset_kv_cache", "tp_reset_crossattn_cache",
    "conditioning_embeds_updated", "kv_cache_attention_bias", "tp_do_kv_recompute",
    "tp_num_denoise_steps", "tp_expected_generator_calls", "base_seed",
)  # fmt: skip
TENSORS = (
    ("denoising_step_list", "denoising_step_list", (torch.int64,), 1),
    ("latents", "latents", (torch.bfloat16, torch.float16), 5),
    ("conditioning_embeds", "conditioning_embeds", (torch.bfloat16, torch.float16), 3),
    ("context", "context_frames_override", (torch.bfloat16, torch.float16), 5),
)


class Invalid(ValueError):
    """The hand-written path refused an envelope."""


def _check_invariants(m: Any, steps: int, lh: int, lw: int, has_context: bool) -> None:
    """The three lockstep invariants and the derived count, by hand."""
    if m.tp_num_denoise_steps != steps:
        raise Invalid("tp_num_denoise_steps != len(denoising_step_list)")
    if m.tp_do_kv_recompute != has_context:
        raise Invalid("tp_do_kv_recompute != (context_frames_override is not None)")
    if lh * 8 != m.height or lw * 8 != m.width:
        raise Invalid("geometry does not match the latents")
    if m.tp_expected_generator_calls != int(m.tp_do_kv_recompute) + m.tp_num_denoise_steps:
        raise Invalid("tp_expected_generator_calls is not derived")


def send(header: Any, msg: Any) -> tuple[bytes, torch.Tensor]:
    """Validate + encode + pack: MessagePack bytes of the metadata and one tensor buffer."""
    metas = []
    parts = []
    offset = 0
    for name, attr, dtypes, rank in TENSORS:
        t = getattr(msg, attr)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.dtype not in dtypes or t.dim() != rank:
            raise Invalid(f"{attr}: a tensor of {dtypes} and rank {rank}")
        t = t.contiguous()
        metas.append([name, NAMES[t.dtype], list(t.shape), offset])
        raw = t.reshape(-1).view(torch.uint8)
        parts.append(raw)
        pad = -raw.numel() % ALIGN
        if pad:
            parts.append(_PADS[pad])
        offset += raw.numel() + pad
    lat = msg.latents.shape
    has_context = msg.context_frames_override is not None
    if has_context and msg.context_frames_override.shape[3:] != lat[3:]:
        raise Invalid("context frames geometry differs from the latents")
    values = [int(msg.tp_plan), *[getattr(msg, k) for k in SCALARS], metas, offset]
    # msgspec checks types and ranges when it builds a struct from data (convert), not in
    # a struct's constructor: the careful engineer converts (fields in order: array_like)
    m = msgspec.convert(values, InferV1, strict=True)
    h = msgspec.convert(
        [
            header.call_id,
            header.chunk_index,
            header.control_epoch,
            header.cache_epoch,
            int(header.action),
        ],
        Header,
        strict=True,
    )
    _check_invariants(m, len(msg.denoising_step_list), lat[3], lat[4], has_context)
    return _ENCODER.encode(Envelope(h, m)), torch.cat(parts)  # one copy of every tensor


def receive(raw: bytes, buf: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    """Decode (types and ranges) + the hand checks + views of the tensor buffer."""
    env = _DECODER.decode(raw)
    m = env.msg
    if buf.numel() != m.nbytes:
        raise Invalid(f"tensor buffer holds {buf.numel()} bytes, meta says {m.nbytes}")
    views = make_views(m, buf)
    for name, attr, dtypes, rank in TENSORS:  # each tensor's dtype and rank, as send does
        v = views.get(name)
        if v is not None and (v.dtype not in dtypes or v.dim() != rank):
            raise Invalid(f"{attr}: a tensor of {dtypes} and rank {rank}")
    lat = views.get("latents")
    steps = views.get("denoising_step_list")
    if lat is None or steps is None or "conditioning_embeds" not in views:
        raise Invalid("a required tensor is missing")
    ctx = views.get("context")
    if ctx is not None and ctx.shape[3:] != lat.shape[3:]:
        raise Invalid("context frames geometry differs from the latents")
    _check_invariants(m, steps.shape[0], lat.shape[3], lat.shape[4], ctx is not None)
    return env, views


def make_views(m: Any, buf: torch.Tensor) -> dict[str, torch.Tensor]:
    """The receive's tensor views of the buffer, each range-checked (timed alone too)."""
    views: dict[str, torch.Tensor] = {}
    for meta in m.tensors:
        dtype = DTYPES[meta.dtype]
        n = math.prod(meta.shape) * dtype.itemsize
        if meta.offset + n > m.nbytes or meta.name in views:
            raise Invalid(f"{meta.name}: outside the tensor buffer or twice")
        views[meta.name] = buf[meta.offset : meta.offset + n].view(dtype).view(meta.shape)
    return views


if pydantic is not None:
    from pydantic import BaseModel, ConfigDict, Field

    class InferScalars(BaseModel):
        """The v1 envelope's scalar fields with the spec's constraints, strict."""

        model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

        tp_plan: Literal[1]
        tp_envelope_version: Literal[1]
        height: int = Field(ge=8, le=4096)
        width: int = Field(ge=8, le=4096)
        current_start_frame: int = Field(ge=0, le=I64)
        init_cache: bool
        manage_cache: bool
        tp_reset_kv_cache: bool
        tp_reset_crossattn_cache: bool
        conditioning_embeds_updated: bool
        kv_cache_attention_bias: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
        tp_do_kv_recompute: bool
        tp_num_denoise_steps: int = Field(ge=1, le=64)
        tp_expected_generator_calls: int = Field(ge=1, le=65)
        base_seed: int = Field(ge=0, le=I64)


def scalars(msg: Any) -> dict[str, Any]:
    """The envelope's scalar fields as the dict pydantic validates."""
    values = {k: getattr(msg, k) for k in SCALARS}
    values["tp_plan"] = int(msg.tp_plan)
    return values


def pydantic_validate(values: dict[str, Any]) -> Any:
    return InferScalars.model_validate(values)
