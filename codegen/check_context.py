"""What every check shares: the limits, the collected errors, the spec and its enums.

The checks of stage 2 (``codegen/check*.py``) are plain functions of a ``Context``: each
reports through ``Context.fail`` and keeps going, so one run finds every problem. The
limits live here so the checks and ``codegen/check.py`` (which re-exports them) agree.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tpwire.runtime.dtypes import DTYPE_CODES

from . import expr
from .codes import Code
from .errors import SpecError
from .load import LoadedSpec, PathKey
from .model import CEnum

if TYPE_CHECKING:
    from .check_names import GeneratedNames

SPEC_LANGUAGE_VERSION = 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_FIELDS = 62  # presence bits fit one int64 word
MAX_HEADER_FIELDS = 16
MAX_RANK = 8
MAX_STR_LEN = 256
WIRE_DTYPE_NAMES = tuple(DTYPE_CODES)


@dataclass
class Context:
    """One run of the checks over one loaded spec."""

    spec: LoadedSpec
    #: the generated modules' own names (None while the probe derives them,
    #: codegen/reserved_probe.py)
    names: GeneratedNames | None
    #: apply the rules on what can carry a stream (``check``'s ``stream_rules``)
    stream_rules: bool = True
    errors: list[SpecError] = field(default_factory=list)
    enums: dict[str, CEnum] = field(default_factory=dict)
    #: tensor fields of rank 0 in the message being checked (len() is undefined)
    scalar_tensors: frozenset[str] = frozenset()

    @property
    def data(self) -> Any:
        return self.spec.data

    def fail(
        self,
        path: PathKey,
        code: Code,
        message: str,
        *,
        key: bool = False,
        offset: int | None = None,
    ) -> None:
        self.errors.append(self.spec.error(path, code.name, message, key=key, offset=offset))


def describe(path: PathKey) -> str:
    return ".".join(str(p) for p in path) or "the spec"


def did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def finite_double(value: int | float) -> bool:
    """Whether a bound is a finite double (an integer like 10**400 overflows to infinity)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def short(value: int | float) -> str:
    """A number for a message: a huge integer by its magnitude, not its 400 digits."""
    text = str(value)
    if isinstance(value, int) and len(text) > 24:
        return f"{text[:4]}...({len(text.lstrip('-'))} digits)"
    return text


def assignable(got: expr.Ty, want: expr.Ty) -> bool:
    return got == want or (want == expr.FLOAT and got == expr.INT)
