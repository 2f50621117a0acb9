"""Envelopes as plain data: what only plain data can get wrong (unknown keys, absent keys)."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from tpwire.generated import tp_control, tp_control_strategies
from tpwire.runtime.plain import from_plain, to_plain


def plain_v1() -> dict[str, Any]:
    header = {
        "call_id": 4,
        "chunk_index": 2,
        "control_epoch": 0,
        "cache_epoch": 1,
        "action": "INFER",
    }
    fields = {
        "tp_envelope_version": 1, "height": 320, "width": 576, "current_start_frame": 0,
        "init_cache": True, "manage_cache": True, "tp_reset_kv_cache": True,
        "tp_reset_crossattn_cache": True, "conditioning_embeds_updated": True,
        "kv_cache_attention_bias": 0.3, "tp_do_kv_recompute": False, "tp_num_denoise_steps": 4,
        "tp_expected_generator_calls": 4, "base_seed": 0,
        "denoising_step_list": {"dtype": "int64", "shape": [4], "data": [999, 750, 500, 250]},
        "latents": {"dtype": "bfloat16", "shape": [1, 3, 16, 40, 72]},
        "conditioning_embeds": {"dtype": "float16", "shape": [1, 4, 8]},
        "context_frames_override": None,
    }  # fmt: skip
    return {"header": header, "message": "InferV1GeneratorOnly", "fields": fields}


def test_valid_plain_envelope_builds_typed_objects() -> None:
    header, msg, violations = from_plain(tp_control, plain_v1())
    assert violations == []
    assert header.action is tp_control.TPAction.INFER
    assert isinstance(msg, tp_control.InferV1GeneratorOnly)
    assert msg.denoising_step_list.tolist() == [999, 750, 500, 250]


def test_unknown_and_absent_keys_are_violations_with_ids() -> None:
    data = plain_v1()
    data["fields"]["tp_num_steps"] = 4
    data["header"]["rank"] = 0
    del data["fields"]["context_frames_override"]  # T | None: the key must be given
    _, _, violations = from_plain(tp_control, data)
    got = {(v.code, v.field) for v in violations}
    assert got == {
        ("unknown_field", "tp_num_steps"),
        ("unknown_field", "header.rank"),
        ("missing", "context_frames_override"),
    }
    assert all(
        v.ids == (("call_id", 4), ("chunk_index", 2), ("cache_epoch", 1)) for v in violations
    )


def test_nothing_given_is_dropped_silently() -> None:
    """Fields without a message and keys beside header/message/fields are reported."""
    data = plain_v1()
    data["header"]["action"] = "NOOP"
    data["message"] = None
    data["fields"] = {"height": 320}
    data["meta"] = {"prompt": "x"}
    _, msg, violations = from_plain(tp_control, data)
    assert msg is None
    assert {(v.code, v.field) for v in violations} == {
        ("unknown_field", "height"),
        ("unknown_field", "meta"),
    }


def test_a_field_the_plan_forbids_is_forbidden_not_mistyped() -> None:
    data = plain_v1()
    data["fields"]["video"] = {"dtype": "uint8", "shape": [1, 8, 8, 3]}
    _, _, violations = from_plain(tp_control, data)
    assert {(v.code, v.field) for v in violations} == {("forbidden", "video")}


def test_bad_enum_names_and_message_names_are_reported() -> None:
    data = plain_v1()
    data["header"]["action"] = "INFERR"
    data["message"] = "InferV2"
    _, msg, violations = from_plain(tp_control, data)
    assert msg is None
    assert {v.code for v in violations} == {"type"}
    assert {v.field for v in violations} == {"message", "header.action"}


@given(tp_control_strategies.valid_envelopes())
def test_plain_form_of_valid_envelopes_is_valid(envelope: tuple[Any, Any]) -> None:
    header, msg = envelope
    plain = to_plain(header, msg)
    header2, _, violations = from_plain(tp_control, plain)
    assert header2 == header
    assert violations == []
