"""Field checks: a field's type, then each rule kind its body declares.

The value bounds (``range``, ``max_len``, ``dtypes``, ``shape``, ``max_elements``) are rule
kinds of ``codegen/field_rules.py``, registered at the bottom of this module; ``check_field``
dispatches through that registry, so a new kind is one ``register_field_rule`` call.
Conditions and derived values are expressions: ``codegen/check_exprs.py`` attaches them once
every field of the message is known.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Mapping
from typing import Any

from . import codes
from .check_context import (
    INT64_MAX,
    INT64_MIN,
    MAX_RANK,
    MAX_STR_LEN,
    WIRE_DTYPE_NAMES,
    Context,
    did_you_mean,
    finite_double,
    short,
)
from .field_rules import FieldInput, field_rules, register_field_rule
from .load import PathKey
from .model import CDim, CField, TypeRef

BASE_TYPES = ("int", "float", "bool", "str", "tensor")
#: Field names the generated classes use themselves, or that would shadow the type names
#: of their own annotations inside the class body.
RESERVED_FIELDS = frozenset(
    {"m", "h", "MESSAGE_ID", "MESSAGE_VERSION", "ACTION", "self", "cls"}
    | {"int", "float", "bool", "str", "torch", "enum", "None"}
)
#: The keys that say when a field is sent: a field with none of them (and no ``| None``)
#: is on every envelope.
PRESENCE_KEYS = ("required_when", "forbidden_when", "none_unless", "cached_by")
_CFIELD_ATTRS = frozenset(f.name for f in dataclasses.fields(CField))


def parse_type(ctx: Context, text: str, path: PathKey) -> TypeRef | None:
    parts = [p.strip() for p in text.split("|")]
    nullable = False
    if len(parts) == 2 and parts[1] == "None":
        nullable = True
        parts = parts[:1]
    if len(parts) != 1 or not parts[0]:
        ctx.fail(path, codes.BAD_TYPE, f"cannot read type {text!r}: use T or 'T | None'")
        return None
    base = parts[0]
    if base in BASE_TYPES:
        return TypeRef(base, None, nullable)
    if base in ctx.enums:
        return TypeRef("enum", base, nullable)
    options = [*BASE_TYPES, *ctx.enums]
    ctx.fail(path, codes.UNKNOWN_TYPE, f"unknown type {base!r}{did_you_mean(base, options)}")
    return None


def check_field(
    ctx: Context, name: str, body: Mapping[str, Any], path: PathKey, dims: Mapping[str, CDim]
) -> CField | None:
    """The field without its expressions, each registered rule kind checked."""
    if name in RESERVED_FIELDS or keyword.iskeyword(name):
        ctx.fail(path, codes.BAD_NAME, f"field name {name!r} is reserved", key=True)
    t = parse_type(ctx, body["type"], (*path, "type"))
    if t is None:
        return None
    field = FieldInput(name, path, body, t, dims, ctx.fail)
    decided: dict[str, Any] = {}
    for rule in field_rules():
        if rule.key in body and t.kind not in rule.kinds:
            field.error(
                rule.key,
                codes.BAD_KEY,
                f"{rule.key!r} does not apply to a {t} field",
                key_error=True,
            )
        elif t.kind in rule.kinds and (rule.always or rule.key in body):
            for attr, value in rule.check(field).items():
                # several kinds may each add their (key, value) to CField.extra
                join = attr == "extra" and attr in decided
                decided[attr] = (*decided[attr], *value) if join else value
    # 'derived' is an expression (check_exprs.attach_rules), on the scalar kinds it can spell
    if "derived" in body and t.kind not in ("int", "float", "bool"):
        field.error(
            "derived", codes.BAD_KEY, f"'derived' does not apply to a {t} field", key_error=True
        )
    unknown = set(decided) - _CFIELD_ATTRS
    if unknown:
        raise TypeError(f"field rules decided {sorted(unknown)}, which are no CField attributes")
    return CField(
        name=name,
        path=path,
        type=t,
        always_required=not t.nullable and not any(k in body for k in PRESENCE_KEYS),
        doc=body.get("doc", ""),
        why=body.get("why", ""),
        check=body.get("check", ""),
        fm=body.get("fm"),
        cached_by=body.get("cached_by"),
        **decided,
    )


# -- the built-in rule kinds ----------------------------------------------------------


def _check_range(f: FieldInput) -> Mapping[str, Any]:
    rmin, rmax = f.body["range"].get("min"), f.body["range"].get("max")
    for bound, key in ((rmin, "min"), (rmax, "max")):
        if bound is None:
            continue
        bpath = (*f.path, "range", key)
        if f.kind == "int" and type(bound) is not int:
            f.fail(bpath, codes.BAD_RANGE, f"int field bound must be an integer, got {bound!r}")
        elif f.kind == "int" and not INT64_MIN <= bound <= INT64_MAX:
            f.fail(bpath, codes.BAD_RANGE, f"bound {bound} does not fit int64")
        elif f.kind == "float" and not finite_double(bound):
            f.fail(bpath, codes.BAD_RANGE, f"bound {short(bound)} is not a finite double")
    if isinstance(rmin, int | float) and isinstance(rmax, int | float) and rmin > rmax:
        f.error("range", codes.IMPOSSIBLE_RANGE, f"range min {rmin} > max {rmax}: no value fits")
    return {"range_min": rmin, "range_max": rmax}


def _check_max_len(f: FieldInput) -> Mapping[str, Any]:
    max_len = f.body.get("max_len")
    if max_len is not None and type(max_len) is not int:
        f.error("max_len", codes.NOT_INTEGER, f"max_len must be an integer, got {max_len!r}")
        max_len = None
    elif max_len is None:
        f.fail(f.path, codes.MISSING_KEY, f"str field {f.name!r} needs max_len", key=True)
    elif not 1 <= max_len <= MAX_STR_LEN:
        f.error("max_len", codes.BAD_RANGE, f"max_len must be 1..{MAX_STR_LEN}, got {max_len}")
    return {"max_len": max_len}


def _check_dtypes(f: FieldInput) -> Mapping[str, Any]:
    dtypes = f.body.get("dtypes")
    if dtypes is None:
        f.fail(f.path, codes.MISSING_KEY, f"tensor field {f.name!r} needs dtypes", key=True)
        dtypes = []
    seen: set[str] = set()
    for i, d in enumerate(dtypes):
        if d not in WIRE_DTYPE_NAMES:
            hint = did_you_mean(d, WIRE_DTYPE_NAMES)
            f.fail((*f.path, "dtypes", i), codes.UNKNOWN_DTYPE, f"unknown dtype {d!r}{hint}")
        elif d in seen:
            f.fail((*f.path, "dtypes", i), codes.DUPLICATE_DTYPE, f"dtype {d!r} listed twice")
        seen.add(d)
    return {"dtypes": tuple(dtypes)}


def _check_shape(f: FieldInput) -> Mapping[str, Any]:
    shape = f.body.get("shape")
    if shape is None:
        f.fail(f.path, codes.MISSING_KEY, f"tensor field {f.name!r} needs shape", key=True)
        shape = []
    if len(shape) > MAX_RANK:
        f.error("shape", codes.IMPOSSIBLE_SHAPE, f"rank {len(shape)} exceeds {MAX_RANK}")
    for i, d in enumerate(shape):
        dpath = (*f.path, "shape", i)
        if isinstance(d, int) and not isinstance(d, bool):
            if d < 0:
                f.fail(dpath, codes.IMPOSSIBLE_SHAPE, f"dimension {d} is negative")
            elif d > INT64_MAX:
                f.fail(dpath, codes.BAD_RANGE, f"dimension {short(d)} does not fit int64")
        elif not (isinstance(d, str) and d in f.dims):
            hint = did_you_mean(str(d), f.dims)
            f.fail(
                dpath, codes.UNKNOWN_DIM, f"unknown dimension {d!r}; declare it under dims{hint}"
            )
    return {"shape": tuple(shape)}


def _smallest(shape: list[int | str], dims: Mapping[str, CDim]) -> int:
    """Elements of the smallest tensor the shape admits (what ``_check_shape`` refuses
    counts as it reads: a negative size as 0, an unknown dimension not at all)."""
    n = 1
    for d in shape:
        if isinstance(d, int) and not isinstance(d, bool):
            n *= max(d, 0)
        elif isinstance(d, str) and d in dims:
            n *= dims[d].min
    return n


def _check_max_elements(f: FieldInput) -> Mapping[str, Any]:
    max_elements = f.body["max_elements"]
    if type(max_elements) is not int:
        f.error(
            "max_elements",
            codes.NOT_INTEGER,
            f"max_elements must be an integer, got {max_elements!r}",
        )
        return {"max_elements": None}
    smallest = _smallest(f.body.get("shape") or [], f.dims)
    if max_elements < 1:
        f.error("max_elements", codes.BAD_RANGE, "max_elements must be >= 1")
    elif max_elements > INT64_MAX:
        f.error(
            "max_elements",
            codes.BAD_RANGE,
            f"max_elements {short(max_elements)} does not fit int64",
        )
    elif smallest > max_elements:
        f.error(
            "max_elements",
            codes.IMPOSSIBLE_SHAPE,
            f"the smallest legal shape has {smallest} elements, over max_elements {max_elements}",
        )
    return {"max_elements": max_elements}


# Each schema is None: codegen/meta_schema.json spells these keys' values already.
register_field_rule("range", ("int", "float"), None, _check_range)
register_field_rule("max_len", ("str",), None, _check_max_len, always=True)
register_field_rule("dtypes", ("tensor",), None, _check_dtypes, always=True)
register_field_rule("shape", ("tensor",), None, _check_shape, always=True)
register_field_rule("max_elements", ("tensor",), None, _check_max_elements)
