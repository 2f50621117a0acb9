"""Decoder hardening, bounded profile: hostile frames only ever raise the typed errors.

The properties live in ``fuzz.properties`` (shared with ``make fuzz`` and with the
seeded-bug checks); here they run on every shipped protocol and golden spec under the
active hypothesis profile. A short random campaign checks that mutations, re-sealed,
reach every check of the decoder rather than dying at the checksum.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(ROOT))

from fuzz import campaign, mutators, oracle, properties, targets  # noqa: E402
from fuzz.__main__ import main as fuzz_main  # noqa: E402
from fuzz.cases import Case, Seg, build, from_frames  # noqa: E402
from tpwire.runtime import wire  # noqa: E402
from tpwire.runtime.errors import EnvelopeInvalid, ProtocolMismatch, WireError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

TARGETS = list(targets.ALL)

#: Every code a re-sealing campaign must reach (the checks behind the checksum included).
DEEP_CODES = {
    "frame0",
    "magic",
    "wire-version",
    "checksum",
    "fingerprint",
    "action",
    "message-id",
    "message-version",
    "presence",
    "scalar",
    "dtype",
    "dim",
    "size",
    "frame1",
    "invalid",
    "ok",
}


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> targets.Target:
    return targets.load(request.param)


def test_typed_errors_are_wire_errors() -> None:
    assert issubclass(ProtocolMismatch, WireError)
    assert not issubclass(EnvelopeInvalid, WireError)  # the oracle accepts both, separately


def test_mutated_frames_decode_to_typed_outcomes(target: targets.Target) -> None:
    properties.mutated_frames_property(target)()


def test_manifest_mutations_stay_within_spec_bounds(target: targets.Target) -> None:
    properties.mutated_frames_property(target, properties.MANIFEST_OPS, max_ops=2)()


def test_mutants_are_refused_by_sender_and_receiver(target: targets.Target) -> None:
    properties.mutant_property(target)()


def test_raw_encode_lays_out_what_encode_does(target: targets.Target) -> None:
    """``raw_encode`` (a peer that skips the preflight) drives the generated encoder tables
    itself: for valid envelopes its frames must be ``encode``'s, byte for byte. (It answers
    None for values no frame can carry, and the mutant property skips those: an encoder
    interface it no longer fits would make that property pass without testing anything.)"""
    envelopes = campaign.draw(target.strategies.valid_envelopes(), 12, seed=3)
    assert envelopes
    for header, msg in envelopes:
        frames = campaign.raw_encode(target, msg, header)
        assert frames is not None, (header, msg)
        want = target.module.encode(msg, header)
        assert torch.equal(frames.frame0, want.frame0)
        assert [s.tolist() for s in frames.segments] == [s.tolist() for s in want.segments]


def test_short_campaign_reaches_every_check(tmp_path: Path) -> None:
    totals = campaign.run_decoder_campaign(
        targets.load_all(),
        seconds=0,
        min_inputs=3000,
        max_inputs=3000,
        seed=1,
        families=properties.PEER_FAMILIES,
        crash_dir=tmp_path,
        seeds_per_target=16,
    )
    assert totals.inputs == 3000
    assert not totals.findings, totals.signatures
    missing = DEEP_CODES - set(totals.labels)
    assert not missing, f"never reached: {missing}; got {dict(totals.labels)}"
    # the checksum must not swallow the campaign: most inputs get past it
    assert totals.labels["checksum"] < totals.inputs // 10
    assert {"range", "invariant"} <= set(totals.violations)
    assert totals.slowest < oracle.SLOW_S
    assert not list(tmp_path.iterdir())


# --- the oracle itself can fail ------------------------------------------------------------------


def test_oracle_flags_a_manifest_beyond_the_spec() -> None:
    t = targets.load("tp_control")
    case = _infer_case(t)
    m = t.module.read_frame0(build(case).frame0)  # type: ignore[attr-defined]
    assert m.message is not None and m.slots
    assert oracle.check_manifest(t, m) is None
    s = m.slots[0]
    too_wide = wire.TensorSlot(s.field, s.dtype, (10**6,), 10**6 * s.dtype.itemsize, 0, 0, (1,))
    bad = wire.Manifest(m.header, m.message, m.scalars, (too_wide,), (too_wide.nbytes,))
    assert oracle.check_manifest(t, bad) is not None
    huge = wire.Manifest(m.header, m.message, m.scalars, (), (t.max_frame1_nbytes + 1,))
    problem = oracle.check_manifest(t, huge)
    assert problem is not None and "exceeds the spec bound" in problem


def test_oracle_flags_untyped_exceptions_and_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    t = targets.load("pp_contract")
    header, msg = campaign.draw(t.strategies.valid_envelopes(), 1, 0)[0]
    frames = t.module.encode(msg, header)

    def boom(_: object) -> None:
        raise IndexError("list index out of range")

    def spin(_: object) -> None:
        while True:
            pass

    monkeypatch.setattr(t.module, "decode", boom)
    out = oracle.run_decoder(t, frames)
    assert (out.finding, out.label) == ("exception", "exception") and "IndexError" in out.detail
    monkeypatch.setattr(t.module, "decode", spin)
    out = oracle.run_decoder(t, frames, hang_s=0.2)
    assert out.finding == "hang"


# --- objects that are not frames -----------------------------------------------------------------


def _noop_case(t: targets.Target) -> Case:
    header = next(h for h, m in campaign.draw(t.strategies.valid_envelopes(), 30, 5) if m is None)
    return from_frames(t.name, t.module.encode(None, header))


def _infer_case(t: targets.Target) -> Case:
    """Frames of a message with tensors in frame 1."""
    for header, msg in campaign.draw(t.strategies.valid_envelopes(), 60, 5):
        frames = t.module.encode(msg, header)
        if frames.segments:
            return from_frames(t.name, frames, t.module.read_frame0(frames.frame0))
    raise AssertionError(f"{t.name}: no envelope with tensors drawn")


@pytest.mark.parametrize("kind", ["meta", "sparse", "none", "bytes", "nested"])
def test_hostile_segment_objects_are_frame1_errors(kind: str) -> None:
    t = targets.load("tp_control")
    case = _infer_case(t)
    case.segments[0].kind = kind
    out = oracle.run_decoder(t, build(case))
    assert (out.finding, out.label) == (None, "frame1"), out


@pytest.mark.parametrize(
    ("f0", "segs", "frames"),
    [
        ("list", "tuple", "frames"),
        ("none", "tuple", "frames"),
        ("str", "tuple", "frames"),
        ("int32", "tuple", "frames"),
        ("2d", "tuple", "frames"),
        ("tensor", "tuple", "tuple"),
        ("tensor", "tuple", "none"),
    ],
)
def test_hostile_frame_objects_are_frame0_errors(f0: str, segs: str, frames: str) -> None:
    t = targets.load("tp_control")
    case = _noop_case(t)
    case.f0, case.segs, case.frames = f0, segs, frames
    out = oracle.run_decoder(t, build(case))
    assert (out.finding, out.label) == (None, "frame0"), out


# Bugs the campaign found (fixed in runtime/wire.py): their reproducers stay as tests.
@pytest.mark.parametrize("kind", ["meta", "sparse", "nested"])
def test_frame0_without_dense_storage_is_a_frame0_error(kind: str) -> None:
    t = targets.load("tp_control")
    case = _noop_case(t)
    case.f0 = kind
    with pytest.raises(WireError) as err:
        t.module.decode(build(case))
    assert err.value.code == "frame0"


@pytest.mark.parametrize("segs", ["none", "int"])
def test_non_iterable_segments_are_a_wire_error(segs: str) -> None:
    t = targets.load("tp_control")
    case = _noop_case(t)
    case.segs = segs
    with pytest.raises(WireError):
        t.module.decode(build(case))


# --- saved examples replay -----------------------------------------------------------------------


def test_saved_example_replays_bit_for_bit(tmp_path: Path) -> None:
    t = targets.load("golden/odd")
    case = _infer_case(t)
    mutators.apply(case, t, __import__("random").Random(7), ["s_slot", "w_dim", "s_misalign"])
    case.segments.append(Seg(b"\x01\x02", dtype="int8", offset=3, step=2, rows=1))
    out = oracle.run_decoder(t, build(case))
    again = Case.from_json(json.loads(json.dumps(case.to_json())))
    assert again == case
    assert oracle.run_decoder(t, build(again)).label == out.label
    out.finding = "exception"  # pretend, to exercise the writer
    path = campaign.save_example(tmp_path, "test", t.name, case, out, {"input_seed": 1})
    assert path is not None and json.loads(path.read_text())["case"]["target"] == "golden/odd"
    assert fuzz_main(["replay", str(path)]) == 0  # not a finding when replayed for real


def test_frames_built_from_a_case_keep_their_bytes() -> None:
    t = targets.load("tp_control")
    case = _infer_case(t)
    frames = build(case)
    assert isinstance(frames, wire.Frames)
    assert frames.frame0.tolist() == case.words
    for seg, s in zip(frames.segments, case.segments, strict=True):
        assert isinstance(seg, torch.Tensor) and bytes(seg.numpy()) == s.data
    assert t.module.decode(frames)[0] is not None


def test_journal_reader_campaign_finds_nothing_and_reaches_every_check() -> None:
    """The journal reader (scan, replay, diff) under mutated journals: never an exception,
    and the mutations reach each kind of problem, the body parser, the typed metadata of each
    record kind and the replay's refusals."""
    from fuzz import journal

    totals = journal.run_journal_campaign(
        targets.load_all(["tp_control", "pp_contract", "golden/odd"]),
        seconds=0,
        min_inputs=1500,
        max_inputs=1500,
        seed=11,
    )
    assert totals.findings == []
    reached = set(totals.labels)
    for label in (
        "checksum mismatch",
        "torn",
        "malformed body",
        "wrong-typed metadata",
        "a record of another protocol",
        "replay refused",
        "clean",
        "no record here",
    ):
        assert label in reached, (label, totals.labels)
