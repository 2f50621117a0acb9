"""The envelope streams the benchmark sends: one function per kind, the same on every rank.

A stream is a function ``(i) -> (message or None)`` of the chunk number; payload-free kinds
return None. ``cond_on_update`` is Scope's optimize mode, the shipped
``spec/tp_control_v2.yaml``: ``conditioning_embeds`` is cached by ``conditioning_epoch`` and
travels only on update chunks (every ``UPDATE_EVERY``th), where the shipped v1 spec sends it
every chunk (FM-17, bringup-safe). Its other inputs are those of ``scope``, chunk by chunk,
so the two rows compare v1 and the optimize mode on the same stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tpwire.generated import pp_contract, tp_control, tp_control_v2

SPEC_DIR = Path(__file__).resolve().parent.parent / "spec"
RECOMPUTE_EVERY = 3  # Scope recomputes the KV cache every few chunks (context frames attached)
UPDATE_EVERY = 8  # a prompt update every few chunks


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    protocol: Callable[[], ModuleType]
    message: Callable[[ModuleType, int], Any]  # None: NOOP
    #: for a stream that cycles through a few messages: message ``msg`` as chunk ``i`` of the
    #: stream (the optimize mode's epoch follows the stream, so it never goes back)
    restamp: Callable[[Any, int], Any] | None = None


def _v1(
    proto: ModuleType,
    i: int,
    *,
    size: tuple[int, int],
    tokens: tuple[int, int],
    recompute: bool,
    cond: bool = True,
    updated: bool = False,
    **extra: Any,
) -> Any:
    g = torch.Generator().manual_seed(i)
    lh, lw = size
    t, d = tokens
    return proto.InferV1GeneratorOnly(
        **extra,
        height=lh * 8,
        width=lw * 8,
        current_start_frame=3 * i,
        init_cache=i == 0,
        manage_cache=True,
        tp_reset_kv_cache=i == 0,
        tp_reset_crossattn_cache=updated,
        conditioning_embeds_updated=updated,
        kv_cache_attention_bias=0.3,
        tp_do_kv_recompute=recompute,
        tp_num_denoise_steps=4,
        tp_expected_generator_calls=4 + int(recompute),
        denoising_step_list=torch.tensor([1000, 750, 500, 250]),
        latents=torch.randn(1, 3, 16, lh, lw, generator=g).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, t, d, generator=g).to(torch.bfloat16) if cond else None,
        context_frames_override=(
            torch.randn(1, 1, 16, lh, lw, generator=g).to(torch.bfloat16) if recompute else None
        ),
        base_seed=1234,
    )


def recompute(i: int) -> bool:
    """Whether chunk ``i`` of the Scope streams recomputes its KV cache (context frames)."""
    return i % RECOMPUTE_EVERY == RECOMPUTE_EVERY - 1


def small(proto: ModuleType, i: int) -> Any:
    return _v1(proto, i, size=(4, 4), tokens=(8, 64), recompute=False, tp_envelope_version=1)


def scope(proto: ModuleType, i: int) -> Any:
    return _v1(
        proto,
        i,
        size=(40, 72),
        tokens=(512, 4096),
        recompute=recompute(i),
        tp_envelope_version=1,
    )


def cond_on_update(proto: ModuleType, i: int) -> Any:
    """The optimize mode: new conditioning (and its epoch) every ``UPDATE_EVERY`` chunks."""
    update = i % UPDATE_EVERY == 0
    return _v1(
        proto,
        i,
        size=(40, 72),
        tokens=(512, 4096),
        recompute=recompute(i),
        cond=update,
        updated=update,
        tp_envelope_version=2,
        conditioning_epoch=i // UPDATE_EVERY,
    )


def cond_epoch(msg: Any, i: int) -> Any:
    """``msg`` (one of a cycle of ``UPDATE_EVERY``-aligned messages) as chunk ``i``."""
    return dataclasses.replace(msg, conditioning_epoch=i // UPDATE_EVERY)


def pp_envelope(i: int) -> Any:
    g = torch.Generator().manual_seed(i)
    return pp_contract.PPEnvelope(
        pp_envelope_version=1, height=320, width=576, current_start_frame=3 * i,
        init_cache=i == 0, reset_kv_cache=i == 0, reset_crossattn_cache=False,
        kv_cache_attention_bias=0.3, do_kv_recompute=False, num_denoise_steps=4,
        expected_generator_calls=4, denoising_step_list=torch.tensor([1000, 750, 500, 250]),
        latents_in=torch.randn(1, 3, 16, 40, 72, generator=g).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, 512, 4096, generator=g).to(torch.bfloat16),
        context_frames=None, input_digest=None,
    )  # fmt: skip


def pp_result(i: int) -> Any:
    g = torch.Generator().manual_seed(10_000 + i)
    return pp_contract.PPResult(
        pp_result_version=1,
        latents_out=torch.randn(1, 3, 16, 40, 72, generator=g).to(torch.bfloat16),
        observed_generator_calls=4,
        output_digest=None,
    )


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("noop", "NOOP / heartbeat", lambda: tp_control, lambda p, i: None),
        Kind("small", "small v1 INFER", lambda: tp_control, small),
        Kind(
            "scope",
            "Scope v1 INFER 320x576, context frames every 3rd chunk",
            lambda: tp_control,
            scope,
        ),
        Kind(
            "cond_on_update",
            f"Scope optimize mode (v2), conditioning every {UPDATE_EVERY}th chunk",
            lambda: tp_control_v2,
            cond_on_update,
            cond_epoch,
        ),
    )
}


def header(proto: ModuleType, call_id: int, chunk: int, action: str = "INFER") -> Any:
    return proto.Header(
        call_id=call_id,
        chunk_index=chunk,
        control_epoch=0,
        cache_epoch=0,
        action=proto.TPAction[action],
    )


def to_device(msg: Any, device: torch.device) -> Any:
    """``msg`` with every tensor on ``device`` (itself when it is None or already there)."""
    if msg is None or device.type == "cpu":
        return msg
    moved = {
        f: v.to(device)
        for f in type(msg).__dataclass_fields__
        if isinstance(v := getattr(msg, f), torch.Tensor)
    }
    return dataclasses.replace(msg, **moved)


def tensor_bytes(msg: Any) -> int:
    """The bytes the floor broadcasts: every tensor of the envelope, nothing else."""
    if msg is None:
        return 0
    return sum(
        v.numel() * v.element_size()
        for v in (getattr(msg, f) for f in type(msg).__dataclass_fields__)
        if isinstance(v, torch.Tensor)
    )
