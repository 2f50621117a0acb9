"""Hand-built envelopes shared by the wire tests (a Scope-sized v1 chunk)."""

from __future__ import annotations

import torch

from tpwire.generated import tp_control

HEADER = tp_control.Header(
    call_id=7, chunk_index=3, control_epoch=1, cache_epoch=2, action=tp_control.TPAction.INFER
)


def v1_message(**changes: object) -> tp_control.InferV1GeneratorOnly:
    fields: dict[str, object] = dict(
        tp_envelope_version=1,
        height=320,
        width=576,
        current_start_frame=12,
        init_cache=False,
        manage_cache=True,
        tp_reset_kv_cache=False,
        tp_reset_crossattn_cache=False,
        conditioning_embeds_updated=False,
        kv_cache_attention_bias=0.25,
        tp_do_kv_recompute=True,
        tp_num_denoise_steps=4,
        tp_expected_generator_calls=5,
        denoising_step_list=torch.tensor([1000, 750, 500, 250]),
        latents=torch.randn(1, 3, 16, 40, 72).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, 8, 64).to(torch.float16),
        context_frames_override=torch.randn(1, 1, 16, 40, 72).to(torch.bfloat16),
        base_seed=1234,
    )
    fields.update(changes)
    return tp_control.InferV1GeneratorOnly(**fields)  # type: ignore[arg-type]
