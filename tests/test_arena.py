"""Copy-free sends (``BroadcastChannel(..., arena=True)``, ``alloc``) on real gloo groups.

Every scenario runs under a hard timeout (tests/mp.py): a hang is a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mp import run_ranks

pytestmark = pytest.mark.timeout(90)

PLAN = "AAARAA.APAGGGAAA"


@pytest.mark.parametrize("world", [2, 3])
def test_a_steady_envelope_built_in_the_arena_is_one_collective_and_no_copy(
    tmp_path: Path, world: int
) -> None:
    results = run_ranks("stream", tmp_path, world=world, module="arena_scenarios", plan=PLAN)
    assert all(r.exitcode == 0 for r in results), [r.log for r in results]
    # A A A R A A . A P A G G G A A A SHUTDOWN. No layout is agreed for the first two A: the
    # head is frame 0 and each of the 3 segments follows. From the third on an A is one
    # collective (every segment in the head: no carry limit). R has one segment more than A
    # holds slots for: its context frames ride in the latents' slot, its latents follow. G
    # (another geometry) is two collectives until two G in a row make it the agreed layout;
    # then A is two until it is agreed again.
    expected = [4, 4, 1, 2, 1, 1, 1, 1, 1, 1, 2, 2, 1, 2, 2, 1, 1]
    assert [r.result["counts"] for r in results] == [expected] * world
    for r in results[1:]:
        assert r.result["equal"] == [True] * (len(PLAN) - 1)  # every envelope but the NOOP
    stats = results[0].result["stats"]

    def did(views: int = 0, fresh: int = 0, in_place: int = 0, moved: int = 0) -> dict[str, int]:
        return {"fresh": fresh, "in_place": in_place, "moved": moved, "views": views}

    # before a layout is agreed, alloc gives ordinary tensors (latents, conditioning)
    assert stats[0] == stats[1] == did(fresh=2)
    # steady state: both tensors built in the head and sent from there, nothing copied
    for i in (2, 4, 5, 7, 9, 15):
        assert stats[i] == did(views=2, in_place=2), (i, stats[i])
    # R: conditioning in place; its latents' place is taken by the context frames (a fresh
    # tensor: the agreed layout has none), so the latents view is copied out first
    assert stats[3] == did(views=2, fresh=1, in_place=1, moved=1)
    assert stats[6] == stats[8] == stats[16] == did()  # NOOP, P (no alloc), SHUTDOWN
    # G's latents have another shape: a fresh tensor until G is agreed; its conditioning
    # keeps its place and is sent from the head
    assert stats[10] == stats[11] == did(views=1, fresh=1, in_place=1)
    assert stats[12] == did(views=2, in_place=2)
    # A after G: its latents are placed again once A is agreed again (from the third A)
    assert stats[13] == stats[14] == did(views=1, fresh=1, in_place=1)


@pytest.fixture(scope="module")
def misuse(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:  # type: ignore[type-arg]
    r0, r1 = run_ranks("misuse", tmp_path_factory.mktemp("misuse"), module="arena_scenarios")
    assert (r0.exitcode, r1.exitcode) == (0, 0), (r0.log, r1.log)
    return r0.result, r1.result


def test_misuse_raises_before_frame0_and_sends_nothing(misuse: tuple[dict, dict]) -> None:  # type: ignore[type-arg]
    out, _ = misuse
    for case, error, text in [
        ("unknown_field", "ArenaError", "'nope': not a tensor field"),
        ("scalar_field", "ArenaError", "'height': not a tensor field"),
        ("bad_dtype", "ArenaError", "carries no torch.complex64"),
        ("made_from_view", "ArenaError", "latents: a tensor made from an arena view"),
        ("stale", "ArenaError", "latents: an arena view handed out before the last send"),
        ("other_field", "ArenaError", "context_frames_override: an arena view handed out"),
        ("invalid", "EnvelopeInvalid", "tp_num_denoise_steps"),
        ("ordering", "OrderingError", "call_id 0 after 1"),
        ("no_arena", "ArenaError", "alloc needs a channel opened with arena=True"),
        # no view alive, and a view's alias through a storage of its own: found by address
        ("spent_slice", "ArenaError", "latents: a tensor made from an arena view"),
        ("dlpack_alias", "ArenaError", "latents: a tensor made from an arena view"),
    ]:
        assert out[case]["error"] == error, (case, out[case])
        assert text in out[case]["text"], (case, out[case])
        assert out[case]["sent"] == 0, (case, out[case])


def test_bytes_in_the_head_are_refused_even_with_no_view_alive(
    misuse: tuple[dict, dict],  # type: ignore[type-arg]
) -> None:
    out, _ = misuse
    assert out["views_alive"] == 0  # the spent slice is no view the arena knows of
    assert out["spent_slice"]["sent"] == out["dlpack_alias"]["sent"] == 0


def test_alloc_does_not_wait_for_a_heartbeat_when_no_view_can_be_placed(tmp_path: Path) -> None:
    r0, r1 = run_ranks("alloc_beside_heartbeat", tmp_path, module="arena_scenarios")
    assert (r0.exitcode, r1.exitcode) == (0, 0), (r0.log, r1.log)
    assert r0.result["waited"] < 0.5, r0.result  # the lock is held the whole time
    assert "'nope': not a tensor field" in r0.result["error"]
    assert r0.result["stats"]["fresh"] == 1 and r0.result["stats"]["views"] == 0
    assert r1.result["actions"] == ["INFER"]


def test_views_stay_valid_across_refusals_and_expire_with_the_next_send(
    misuse: tuple[dict, dict],  # type: ignore[type-arg]
) -> None:
    out, worker = misuse
    assert out["first_is_view"] is False  # no agreed layout yet: an ordinary tensor
    assert out["view_in_head"] is True
    assert out["same_view_twice"] is True
    # the envelope refused as invalid, out of order and as made from a view went out once fixed,
    # from the very views alloc gave before the refusals, in place
    assert out["valid_after_refusals"] == {"error": None, "sent": 1}
    assert out["after_other_field"] == {"error": None, "sent": 1}
    # a spent view still reads the bytes it held: the stale-view refusal is what protects a
    # caller, not garbage
    assert out["stale_bytes_kept"] is True
    assert out["after_noop"] == {"error": None, "sent": 1}
    assert out["in_place_after_noop"] == 2
    assert out["stats"]["in_place"] == 6  # chunks 2, 3 and 4, latents and conditioning each
    # the worker got exactly what was sent: chunks 0..4 bit for bit, the NOOP, SHUTDOWN
    assert worker["seen"] == [
        {"call_id": 0, "action": "INFER", "equal": True},
        {"call_id": 1, "action": "INFER", "equal": True},
        {"call_id": 2, "action": "INFER", "equal": True},
        {"call_id": 3, "action": "INFER", "equal": True},
        {"call_id": 4, "action": "NOOP"},
        {"call_id": 5, "action": "INFER", "equal": True},
        {"call_id": 6, "action": "SHUTDOWN"},
    ]
    assert worker["collectives"] == out["collectives"]


def test_alloc_on_a_worker_is_a_clear_error(tmp_path: Path) -> None:
    r0, r1 = run_ranks("worker_alloc", tmp_path, module="arena_scenarios")
    assert (r0.exitcode, r1.exitcode) == (0, 0), (r0.log, r1.log)
    assert "only the source rank may call this" in r1.result["error"]
    assert r1.result["actions"] == ["INFER", "SHUTDOWN"]


def test_a_p2p_stage_builds_its_envelopes_in_the_arena(tmp_path: Path) -> None:
    r0, r1 = run_ranks("p2p", tmp_path, module="arena_scenarios")
    assert (r0.exitcode, r1.exitcode) == (0, 0), (r0.log, r1.log)
    # every tensor of this small envelope is packed into one segment: head + that segment
    # until the layout is agreed, then the head alone
    assert r0.result["counts"] == r1.result["counts"] == [2, 2, 1, 1, 1]
    assert r1.result["equal"] == [True] * 5
    # three tensors per envelope; placed from the third envelope on, all sent in place
    assert r0.result["stats"] == {"views": 9, "fresh": 6, "in_place": 9, "moved": 0}


# -- alloc holds dtype and shape to the field's spec, before allocating ----------------------

#: (case, field, shape, dtype name, the text the refusal names): each refused by ``alloc``
#: before anything is allocated, whether or not a layout is agreed
BAD_ALLOCS = [
    # LH in 1..512: 320,000,000,000 bytes would reach the allocator
    ("beyond_bounds", "latents", (1, 1, 16, 100000, 100000), "bfloat16", "outside 1..512"),
    # 2**62 * 2**62 elements: the storage size would overflow
    ("overflowing", "latents", (1, 1, 16, 2**62, 2**62), "bfloat16", "outside 1..512"),
    ("non_integer", "latents", (1, 1, 16, 64.9, 64), "bfloat16", "dim 3 is 64.9 (float)"),
    ("integral_float", "latents", (1, 1, 16, 64.0, 64), "bfloat16", "dim 3 is 64.0 (float)"),
    ("bool_dim", "latents", (1, True, 16, 64, 64), "bfloat16", "dim 1 is True (bool)"),
    ("negative", "latents", (1, 1, 16, -64, 64), "bfloat16", "dim 3 (LH) = -64 outside 1..512"),
    ("wrong_dtype", "latents", (1, 1, 16, 64, 64), "float32", "float32; expected bfloat16"),
    ("wrong_rank", "latents", (16, 64, 64), "bfloat16", "rank 3 [16, 64, 64]"),
    ("fixed_dim", "latents", (2, 1, 16, 64, 64), "bfloat16", "dim 0 is 2, not 1"),
    ("not_a_shape", "latents", 64, "bfloat16", "shape of type int; expected a sequence of ints"),
    ("string_shape", "latents", "1,1,16,64,64", "bfloat16", "shape of type str"),
    # every dim within its range, the element bound (268435456) exceeded: 51 GB
    ("elements", "video", (1024, 4096, 4096, 3), "uint8", "elements exceed 268435456"),
]


def bad_allocs(rank: int, world: int) -> dict[str, object]:
    """The source calls ``alloc`` with each of ``BAD_ALLOCS`` before a layout is agreed and
    again once one is (the view path), then sends envelopes built by ``alloc`` as usual."""
    import torch
    from arena_scenarios import built_in_arena, message
    from mp_scenarios import header

    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel

    ch = BroadcastChannel(tc, poison="raise", arena=True).open()
    if rank != 0:
        seen = []
        while (got := ch.recv()).action is not tc.TPAction.SHUTDOWN:
            seen.append(got.msg == message(got.header.call_id, "A"))
        return {"seen": seen}

    def attempt() -> dict[str, object]:
        out: dict[str, object] = {}
        for case, field, shape, dtype, _ in BAD_ALLOCS:
            try:
                t = ch.alloc(field, shape, getattr(torch, dtype))
            except Exception as exc:
                out[case] = {
                    "error": type(exc).__name__,
                    "text": str(exc),
                    "attrs": [
                        getattr(exc, "field", None),
                        getattr(exc, "expected", None),
                        getattr(exc, "actual", None),
                    ],
                }
            else:
                out[case] = {"error": None, "shape": list(t.shape), "dtype": str(t.dtype)}
        return out

    before = attempt()  # no layout agreed: ordinary tensors
    for i in range(2):
        ch.send(built_in_arena(ch, message(i, "A")), header(i))
    agreed = attempt()  # a layout agreed: views of the head
    ch.send(built_in_arena(ch, message(2, "A")), header(2))
    ch.shutdown()
    return {"before": before, "agreed": agreed, "stats": ch.arena_stats.as_dict()}


def test_alloc_refuses_a_dtype_or_shape_the_field_cannot_have(tmp_path: Path) -> None:
    r0, r1 = run_ranks("bad_allocs", tmp_path, module="test_arena")
    assert (r0.exitcode, r1.exitcode) == (0, 0), (r0.log, r1.log)
    for path in ("before", "agreed"):
        out = r0.result[path]
        for case, field, _, _, text in BAD_ALLOCS:
            got = out[case]
            assert got["error"] == "AllocRefused", (path, case, got)
            assert got["text"].startswith(f"alloc of {field!r}: "), (path, case, got)
            assert text in got["text"], (path, case, got)
            name, expected, actual = got["attrs"]
            assert name == field and expected and actual, (path, case, got)
            assert "expected" in got["text"], (path, case, got)
            assert "\n" not in got["text"], (path, case, got)
    # the refusals allocated nothing and sent nothing; the stream went on from the views
    assert r1.result["seen"] == [True, True, True]
    assert r0.result["stats"] == {"views": 2, "fresh": 4, "in_place": 2, "moved": 0}


def test_the_arena_knows_each_tensor_field_by_its_spec() -> None:
    import torch

    from tpwire.generated import pp_contract as pp
    from tpwire.generated import tp_control as tc
    from tpwire.runtime.arena import AllocRefused, Arena, tensor_specs

    specs = tensor_specs(tc.BINDINGS)
    assert sorted(specs) == [
        "conditioning_embeds", "context_frames_override", "denoising_step_list", "latents",
        "video",
    ]  # fmt: skip
    assert sorted(tensor_specs(pp.BINDINGS)) == [
        "conditioning_embeds", "context_frames", "denoising_step_list", "latents_in",
        "latents_out",
    ]  # fmt: skip
    arena = Arena(specs)
    # what torch itself takes as a dimension: a torch.Size, a 0-d integer tensor
    assert arena.check("latents", torch.Size([1, 2, 16, 8, 8]), torch.float16) == (1, 2, 16, 8, 8)
    assert arena.check("denoising_step_list", [torch.tensor(4)], torch.int64) == (4,)
    with pytest.raises(AllocRefused) as refused:
        arena.check("denoising_step_list", [torch.tensor(4.0)], torch.int64)
    assert (refused.value.field, refused.value.code) == ("denoising_step_list", "shape")
    with pytest.raises(AllocRefused, match="rank 2") as refused:
        arena.check("denoising_step_list", (4, 1), torch.int64)
    assert refused.value.expected.startswith("[S] with S in 1..64")
    # a huge rank is one short line, not the whole shape
    with pytest.raises(AllocRefused) as refused:
        arena.check("denoising_step_list", (1,) * 100_000, torch.int64)
    assert len(str(refused.value)) < 400
