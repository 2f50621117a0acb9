"""The wire's dtype table and version, without torch: the compiler reads it too."""

from __future__ import annotations

#: 2: frame 0 carries the xxh3-64 digest of frame 1, the head collective ends in a trailer;
#: 3: an ERROR frame carries a reason (a code and a bounded text) in frame 0
WIRE_VERSION = 3

#: The interface between generated modules and the runtime (``codec.Codec`` and what the
#: generated functions hand it). A module states the contract it was generated for, and a
#: runtime that speaks another refuses it at import, naming both (``ContractMismatch``).
#: 2: encoders take the tensor signature ``validate`` found and return the segment plan.
CODEC_CONTRACT = 2

#: (spec name, stable wire code, item size in bytes); code 0 means "tensor absent".
DTYPE_TABLE: tuple[tuple[str, int, int], ...] = (
    ("float32", 1, 4),
    ("float16", 2, 2),
    ("bfloat16", 3, 2),
    ("float64", 4, 8),
    ("int64", 5, 8),
    ("int32", 6, 4),
    ("int16", 7, 2),
    ("int8", 8, 1),
    ("uint8", 9, 1),
    ("bool", 10, 1),
)
DTYPE_CODES: dict[str, int] = {name: code for name, code, _ in DTYPE_TABLE}

#: Frame 0 words of an ERROR frame's reason, before the frame 1 words: a code word, then a
#: UTF-8 text of at most REASON_TEXT_BYTES (a length word and the bytes)
REASON_TEXT_BYTES = 64
REASON_WORDS = 2 + REASON_TEXT_BYTES // 8
