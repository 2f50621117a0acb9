"""Stage 2 - check: structure against the shipped meta-schema, then meaning.

Every problem becomes a located ``SpecError``; all of them are collected and raised
together, sorted by position. Nothing here raises anything else for any input tree.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import difflib
import enum
import json
import keyword
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from tpwire.runtime.dtypes import DTYPE_CODES

from . import expr
from .errors import SpecError, SpecErrors
from .load import LoadedSpec, PathKey
from .model import (
    CONTROLS,
    ROLES,
    CDim,
    CEnum,
    CExpr,
    CField,
    CHeader,
    CheckedSpec,
    CInvariant,
    CMessage,
    TypeRef,
    variant_class_name,
)

SPEC_LANGUAGE_VERSION = 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_FIELDS = 62  # presence bits fit one int64 word
MAX_HEADER_FIELDS = 16
MAX_RANK = 8
MAX_STR_LEN = 256
WIRE_DTYPE_NAMES = tuple(DTYPE_CODES)
_BASE_TYPES = ("int", "float", "bool", "str", "tensor")
#: Field names the generated classes use themselves, or that would shadow the type names
#: of their own annotations inside the class body.
_RESERVED = frozenset(
    {"m", "h", "MESSAGE_ID", "MESSAGE_VERSION", "ACTION", "self", "cls"}
    | {"int", "float", "bool", "str", "torch", "enum", "None"}
)
#: Enum member names that would shadow IntEnum/int attributes (``name``, ``value``, ``real``)
#: or what the enum class gets from its metaclass (``mro``).
_ENUM_ATTRS = frozenset(
    n
    for n in [*vars(enum.Enum), *dir(enum.IntEnum), *dir(type(enum.IntEnum)), *dir(int)]
    if not n.startswith("_")
)
#: Names a generated module sees without binding them: ``None``, ``NotImplemented``, ``len``...
_BUILTINS = frozenset(dir(builtins))


@cache
def meta_schema() -> dict[str, Any]:
    text = resources.files("tpwire.codegen").joinpath("meta_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


#: A spec that reaches every construct the templates spell (discriminated and plain messages,
#: derived fields, tensors, invariants, every role and control action). Its enum and message
#: names occur nowhere in the templates, so every other name its generated modules bind at
#: module scope is the templates' own, and every name containing one of them is spelled
#: from that enum or message (``_validate_<Message>``, the strategies' ``_<Message>``).
_PROBE_ENUMS = ("Zqaction", "Zqenum")
_PROBE_MESSAGES = ("Zqmessage", "Zqplain")
#: A field name (the probe's own, where a generated class body binds it).
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PROBE_SPEC = """\
tpwire: 1
protocol: zqprobe
doc: probe
enums:
  Zqaction:
    doc: probe
    values: {IDLE: 0, RUN: 1, STOP: 2, FAIL: 3, PLAIN: 4}
  Zqenum:
    doc: probe
    values: {fast: 0, careful: 1}
header:
  doc: probe
  slots: [seq, act, step, epoch]
  action: act
  roles: {sequence: seq, chunk: step, epoch: epoch}
  control: {noop: IDLE, shutdown: STOP, error: FAIL}
  fields:
    seq: {type: int, range: {min: 0}}
    act: {type: Zqaction}
    step: {type: int, range: {min: 0, max: 1000}, required_when: act == Zqaction.RUN}
    epoch: {type: int, range: {min: 0}}
messages:
  Zqmessage:
    id: 1
    version: 2
    action: RUN
    doc: probe
    discriminator: mode
    version_field: v
    dims:
      N: {min: 1, max: 16}
      K: {min: 2, max: 4}
    fields:
      mode: {type: Zqenum}
      v: {type: int}
      name: {type: str, max_len: 12, required_when: mode == Zqenum.careful}
      scale: {type: float, range: {min: 0.0, max: 2.0}}
      count: {type: int, range: {min: 1, max: 16}}
      total: {type: int, derived: count * 2 + 1}
      rows: {type: int | None, derived: N * K}
      check: {type: bool, none_unless: mode == Zqenum.careful}
      data: {type: tensor, dtypes: [float32, bool], shape: [N, K]}
      extra: {type: tensor | None, dtypes: [int32], shape: [N], required_when: check == True}
      legacy: {type: tensor, dtypes: [uint8], shape: [3], forbidden_when: mode == Zqenum.careful}
    invariants:
      - {id: count-matches, expr: count == len(data), message: rows, fm: FM-01}
  Zqplain:
    id: 2
    version: 1
    action: PLAIN
    fields:
      flag: {type: bool}
      ratio: {type: float | None, derived: int(flag) * 0.5}
"""


@dataclass(frozen=True)
class GeneratedNames:
    """What the generated modules bind at module scope, read off the templates' output."""

    #: module ("the generated module", "the generated strategies module") -> its own names
    fixed: Mapping[str, frozenset[str]]
    #: (module, "enum" or "message", pattern): a name the module spells from an enum's or a
    #: message's name, ``{}`` standing for that name (``_validate_{}``)
    patterns: frozenset[tuple[str, str, str]]

    def clash(self, name: str, kind: str) -> str | None:
        """Why ``name`` (an enum, message or class name) cannot be used, or None."""
        for where, names in self.fixed.items():
            if name in names:
                return f"a name {where} defines"
        for where, of, pattern in sorted(self.patterns):
            spelled = pattern.replace("{}", name)
            if of == kind and spelled in self.fixed[where]:
                return f"{where} would bind {spelled!r} for it, a name it defines already"
        return None


def _module_names(body: list[ast.stmt]) -> Iterator[str]:
    """Every name a module body binds at module scope."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield stmt.name
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                yield alias.asname or alias.name.split(".")[0]
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        yield node.id
        elif isinstance(stmt, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for part in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(stmt, part, [])
                if part == "handlers":
                    inner = [s for h in inner for s in h.body]
                yield from _module_names(inner)


@cache
def generated_names() -> GeneratedNames:
    """The module-scope names of the generated bindings and strategies modules, derived by
    rendering ``_PROBE_SPEC`` through the templates (so a new template name is covered)."""
    from .ir import build
    from .load import load_text
    from .render import render_module, render_strategies

    checker = _Checker(load_text(_PROBE_SPEC, "<probe>"), None)
    spec = checker.run()
    if spec is None or checker.errors:
        raise RuntimeError(f"the name probe spec does not check: {checker.errors}")
    p = build(spec)
    chosen = {*_PROBE_ENUMS, *_PROBE_MESSAGES, *p.all_classes}
    fixed: dict[str, frozenset[str]] = {}
    patterns: set[tuple[str, str, str]] = set()
    probes = [("enum", n) for n in _PROBE_ENUMS] + [("message", n) for n in _PROBE_MESSAGES]
    module = ast.parse(render_module(p, fmt=False))
    for where, tree in (
        ("the generated module", module),
        ("the generated strategies module", ast.parse(render_strategies(p, fmt=False))),
    ):
        bound = set(_module_names(tree.body)) - chosen
        spelled = {n for n in bound if any(probe in n for _, probe in probes)}
        fixed[where] = frozenset(bound - spelled)
        patterns |= {
            (where, kind, n.replace(probe, "{}"))
            for n in spelled
            for kind, probe in probes
            if probe in n
        }
    # A class body that binds ``VERSION`` and then reads an enum named ``VERSION`` reads its
    # own int. Field names (lowercase) and enum members are the spec's, not the templates'.
    fixed["the generated message classes"] = frozenset(
        n
        for c in module.body
        if isinstance(c, ast.ClassDef) and c.name not in _PROBE_ENUMS
        for n in _module_names(c.body)
        if not _FIELD_NAME.fullmatch(n)
    )
    return GeneratedNames(fixed, frozenset(patterns))


def _describe(path: PathKey) -> str:
    return ".".join(str(p) for p in path) or "the spec"


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def meta_errors(loaded: LoadedSpec) -> list[SpecError]:
    """Structural errors from the meta-schema, located at the offending key or value."""
    validator = jsonschema.Draft202012Validator(meta_schema())
    out: list[SpecError] = []
    for err in validator.iter_errors(loaded.data):
        path: PathKey = tuple(err.absolute_path)
        where = _describe(path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            if allowed:
                for key in sorted(set(err.instance) - allowed):
                    hint = _did_you_mean(key, allowed)
                    out.append(
                        loaded.error(
                            (*path, key),
                            "unknown-key",
                            f"unknown key {key!r} in {where}{hint}",
                            key=True,
                        )
                    )
                continue
        if err.validator == "required":
            out.append(loaded.error(path, "missing-key", f"{where}: {err.message}", key=True))
            continue
        if "propertyNames" in err.absolute_schema_path:
            bad = err.instance
            out.append(
                loaded.error(
                    (*path, bad) if isinstance(bad, str) else path,
                    "bad-name",
                    f"bad name {bad!r} in {where}: {err.message}",
                    key=True,
                )
            )
            continue
        if err.validator == "pattern" and len(path) and err.parent is None:
            out.append(loaded.error(path, "bad-name", f"{where}: {err.message}"))
            continue
        out.append(loaded.error(path, "schema", f"{where}: {err.message}"))
    return out


class _Checker:
    def __init__(
        self, loaded: LoadedSpec, names: GeneratedNames | None, *, stream_rules: bool = True
    ) -> None:
        self.spec = loaded
        #: apply the rules on what can carry a stream (``check``'s ``stream_rules``)
        self.stream_rules = stream_rules
        #: the generated modules' own names (None while deriving them from the probe spec)
        self.names = names
        self.data = loaded.data
        self.errors: list[SpecError] = []
        self.enums: dict[str, CEnum] = {}
        #: tensor fields of rank 0 in the message being checked (len() is undefined)
        self.scalar_tensors: frozenset[str] = frozenset()

    def fail(
        self,
        path: PathKey,
        code: str,
        message: str,
        *,
        key: bool = False,
        offset: int | None = None,
    ) -> None:
        self.errors.append(self.spec.error(path, code, message, key=key, offset=offset))

    # -- enums ------------------------------------------------------------------------

    def check_enums(self) -> tuple[CEnum, ...]:
        out = []
        for name, body in self.data["enums"].items():
            path: PathKey = ("enums", name)
            seen: dict[int, str] = {}
            members = []
            for member, value in body["values"].items():
                mpath = (*path, "values", member)
                why = (
                    "a Python keyword"
                    if keyword.iskeyword(member)
                    else "enum reserves names starting with '_'"
                    if member.startswith("_")
                    else "an attribute every IntEnum member or class has already"
                    if member in _ENUM_ATTRS
                    else None
                )
                if why is not None:
                    self.fail(
                        mpath, "bad-name", f"enum member {member!r} is reserved: {why}", key=True
                    )
                if type(value) is not int:
                    self.fail(
                        mpath, "not-integer", f"{name}.{member} = {value!r} is not an integer"
                    )
                    continue
                if not INT64_MIN <= value <= INT64_MAX:
                    self.fail(mpath, "range", f"{name}.{member} = {value} does not fit int64")
                if value in seen:
                    self.fail(
                        mpath,
                        "duplicate-value",
                        f"{name}.{member} reuses value {value} of {name}.{seen[value]}",
                    )
                seen[value] = member
                members.append((member, int(value)))
            enum = CEnum(name, body.get("doc", ""), tuple(members))
            self.enums[name] = enum
            out.append(enum)
        return tuple(out)

    # -- types and fields -------------------------------------------------------------

    def parse_type(self, text: str, path: PathKey) -> TypeRef | None:
        parts = [p.strip() for p in text.split("|")]
        nullable = False
        if len(parts) == 2 and parts[1] == "None":
            nullable = True
            parts = parts[:1]
        if len(parts) != 1 or not parts[0]:
            self.fail(path, "bad-type", f"cannot read type {text!r}: use T or 'T | None'")
            return None
        base = parts[0]
        if base in _BASE_TYPES:
            return TypeRef(base, None, nullable)
        if base in self.enums:
            return TypeRef("enum", base, nullable)
        options = [*_BASE_TYPES, *self.enums]
        self.fail(path, "unknown-type", f"unknown type {base!r}{_did_you_mean(base, options)}")
        return None

    def check_field(
        self, name: str, body: Mapping[str, Any], path: PathKey, dims: Mapping[str, CDim]
    ) -> CField | None:
        if name in _RESERVED or keyword.iskeyword(name):
            self.fail(path, "bad-name", f"field name {name!r} is reserved", key=True)
        t = self.parse_type(body["type"], (*path, "type"))
        if t is None:
            return None
        kind = t.kind

        def only_for(key: str, kinds: tuple[str, ...]) -> None:
            if key in body and kind not in kinds:
                self.fail(
                    (*path, key), "bad-key", f"{key!r} does not apply to a {t} field", key=True
                )

        only_for("range", ("int", "float"))
        only_for("max_len", ("str",))
        for key in ("dtypes", "shape", "max_elements"):
            only_for(key, ("tensor",))
        only_for("derived", ("int", "float", "bool"))
        rmin = rmax = None
        if kind in ("int", "float") and "range" in body:
            rmin, rmax = body["range"].get("min"), body["range"].get("max")
            for bound, key in ((rmin, "min"), (rmax, "max")):
                if bound is None:
                    continue
                bpath = (*path, "range", key)
                if kind == "int" and type(bound) is not int:
                    self.fail(
                        bpath, "bad-range", f"int field bound must be an integer, got {bound!r}"
                    )
                elif kind == "int" and not INT64_MIN <= bound <= INT64_MAX:
                    self.fail(bpath, "bad-range", f"bound {bound} does not fit int64")
                elif kind == "float" and not _finite_double(bound):
                    self.fail(bpath, "bad-range", f"bound {_short(bound)} is not a finite double")
            if isinstance(rmin, int | float) and isinstance(rmax, int | float) and rmin > rmax:
                self.fail(
                    (*path, "range"),
                    "impossible-range",
                    f"range min {rmin} > max {rmax}: no value fits",
                )
        max_len = None
        if kind == "str":
            max_len = body.get("max_len")
            if max_len is not None and type(max_len) is not int:
                self.fail(
                    (*path, "max_len"),
                    "not-integer",
                    f"max_len must be an integer, got {max_len!r}",
                )
                max_len = None
            elif max_len is None:
                self.fail(path, "missing-key", f"str field {name!r} needs max_len", key=True)
            elif not 1 <= max_len <= MAX_STR_LEN:
                self.fail(
                    (*path, "max_len"),
                    "bad-range",
                    f"max_len must be 1..{MAX_STR_LEN}, got {max_len}",
                )
        dtypes: tuple[str, ...] = ()
        shape: tuple[int | str, ...] = ()
        max_elements = None
        if kind == "tensor":
            dtypes, shape, max_elements = self.check_tensor(name, body, path, dims)
        required_always = not t.nullable and not any(
            k in body for k in ("required_when", "forbidden_when", "none_unless", "cached_by")
        )
        return CField(
            name=name,
            path=path,
            type=t,
            always_required=required_always,
            range_min=rmin,
            range_max=rmax,
            max_len=max_len,
            dtypes=dtypes,
            shape=shape,
            max_elements=max_elements,
            doc=body.get("doc", ""),
            why=body.get("why", ""),
            check=body.get("check", ""),
            fm=body.get("fm"),
            cached_by=body.get("cached_by"),
        )

    def check_tensor(
        self, name: str, body: Mapping[str, Any], path: PathKey, dims: Mapping[str, CDim]
    ) -> tuple[tuple[str, ...], tuple[int | str, ...], int | None]:
        dtypes = body.get("dtypes")
        shape = body.get("shape")
        if dtypes is None:
            self.fail(path, "missing-key", f"tensor field {name!r} needs dtypes", key=True)
            dtypes = []
        if shape is None:
            self.fail(path, "missing-key", f"tensor field {name!r} needs shape", key=True)
            shape = []
        seen: set[str] = set()
        for i, d in enumerate(dtypes):
            if d not in WIRE_DTYPE_NAMES:
                hint = _did_you_mean(d, WIRE_DTYPE_NAMES)
                self.fail((*path, "dtypes", i), "unknown-dtype", f"unknown dtype {d!r}{hint}")
            elif d in seen:
                self.fail((*path, "dtypes", i), "duplicate-dtype", f"dtype {d!r} listed twice")
            seen.add(d)
        if len(shape) > MAX_RANK:
            self.fail((*path, "shape"), "impossible-shape", f"rank {len(shape)} exceeds {MAX_RANK}")
        smallest = 1
        for i, d in enumerate(shape):
            dpath = (*path, "shape", i)
            if isinstance(d, int) and not isinstance(d, bool):
                if d < 0:
                    self.fail(dpath, "impossible-shape", f"dimension {d} is negative")
                elif d > INT64_MAX:
                    self.fail(dpath, "bad-range", f"dimension {_short(d)} does not fit int64")
                smallest *= max(d, 0)
            elif isinstance(d, str) and d in dims:
                smallest *= dims[d].min
            else:
                hint = _did_you_mean(str(d), dims)
                self.fail(
                    dpath, "unknown-dim", f"unknown dimension {d!r}; declare it under dims{hint}"
                )
        max_elements = body.get("max_elements")
        if max_elements is not None and type(max_elements) is not int:
            self.fail(
                (*path, "max_elements"),
                "not-integer",
                f"max_elements must be an integer, got {max_elements!r}",
            )
            max_elements = None
        if max_elements is not None:
            if max_elements < 1:
                self.fail((*path, "max_elements"), "bad-range", "max_elements must be >= 1")
            elif max_elements > INT64_MAX:
                self.fail(
                    (*path, "max_elements"),
                    "bad-range",
                    f"max_elements {_short(max_elements)} does not fit int64",
                )
            elif smallest > max_elements:
                self.fail(
                    (*path, "max_elements"),
                    "impossible-shape",
                    f"the smallest legal shape has {smallest} elements, over max_elements {max_elements}",
                )
        return tuple(dtypes), tuple(shape), max_elements

    # -- expressions ------------------------------------------------------------------

    def check_expr(
        self,
        source: str,
        path: PathKey,
        symbols: Mapping[str, expr.Sym],
        want: expr.Ty | None,
        what: str,
    ) -> CExpr | None:
        enums = {e.name: [m for m, _ in e.members] for e in self.enums.values()}
        try:
            node = expr.parse(source)
            ty = expr.typecheck(node, symbols, enums)
        except expr.ExprError as exc:
            self.fail(path, exc.code, f"{what}: {exc.message}", offset=exc.offset)
            return None
        if want is not None and not _assignable(ty, want):
            self.fail(path, "expr-type", f"{what} must be {want}, got {ty}", offset=0)
            return None
        for sub in expr.walk(node):
            if (
                isinstance(sub, expr.Call)
                and sub.func == "len"
                and isinstance(sub.arg, expr.Name)
                and sub.arg.id in self.scalar_tensors
            ):
                self.fail(
                    path,
                    "expr-type",
                    f"{what}: len() of 0-d tensor {sub.arg.id!r}",
                    offset=sub.offset,
                )
                return None
        return CExpr(source, node, path)

    def attach_rules(
        self, field: CField, body: Mapping[str, Any], symbols: Mapping[str, expr.Sym]
    ) -> CField:
        rules: dict[str, CExpr | None] = {}
        for key in ("required_when", "forbidden_when", "none_unless"):
            if key in body:
                rules[key] = self.check_expr(
                    body[key], (*field.path, key), symbols, expr.BOOL, f"{key} of {field.name!r}"
                )
        # 'derived' on other kinds is already reported as bad-key (and Ty("enum") would raise).
        if "derived" in body and field.type.kind in ("int", "float", "bool"):
            want = field.type.ty
            rules["derived"] = self.check_expr(
                body["derived"],
                (*field.path, "derived"),
                symbols,
                want,
                f"derived of {field.name!r}",
            )
            node = rules["derived"]
            if node is not None and field.name in expr.names(node.node):
                at = next(
                    n.offset
                    for n in expr.walk(node.node)
                    if isinstance(n, expr.Name) and n.id == field.name
                )
                self.fail(
                    (*field.path, "derived"),
                    "derived-cycle",
                    f"{field.name!r} is derived from itself",
                    offset=at,
                )
        return dataclasses.replace(
            field,
            required_when=rules.get("required_when"),
            forbidden_when=rules.get("forbidden_when"),
            none_unless=rules.get("none_unless"),
            derived=rules.get("derived"),
        )

    def check_cached(self, fields: dict[str, CField]) -> None:
        """``cached_by``: the epoch is an int field of the same message that is neither cached
        nor derived; the cached field has no rule that says when it is sent (its epoch does),
        no ``| None`` (absent means "unchanged") and is no epoch itself. Lowered to a
        single-envelope rule: absent whenever its epoch is (``none_unless``). The rules
        across envelopes are the runtime's (``tpwire.runtime.epochs``)."""
        for name, f in list(fields.items()):
            epoch_name = f.cached_by
            if epoch_name is None:
                continue
            at = (*f.path, "cached_by")
            epoch = fields.get(epoch_name)
            ok = True
            if epoch_name == name:
                self.fail(at, "bad-cached-by", f"{name!r} cannot be cached by itself")
                continue
            if epoch is None:
                hint = _did_you_mean(epoch_name, fields)
                self.fail(
                    at,
                    "unknown-field",
                    f"cached_by of {name!r}: {epoch_name!r} is not a field of this message{hint}",
                )
                continue
            if epoch.type.kind != "int" or epoch.type.nullable:
                self.fail(
                    at,
                    "bad-cached-by",
                    f"cached_by of {name!r}: epoch field {epoch_name!r} must be an int "
                    f"(a non-decreasing counter), got {epoch.type}",
                )
                ok = False
            elif epoch.cached_by is not None or epoch.derived is not None:
                what = "cached" if epoch.cached_by is not None else "derived"
                self.fail(
                    at,
                    "bad-cached-by",
                    f"cached_by of {name!r}: epoch field {epoch_name!r} is {what} itself; "
                    "the epoch must travel in every envelope that uses it",
                )
                ok = False
            for key, present in (
                ("required_when", f.required_when),
                ("forbidden_when", f.forbidden_when if self.stream_rules else None),
                ("none_unless", f.none_unless),
                ("derived", f.derived),
            ):
                if present is not None:
                    self.fail(
                        (*f.path, key),
                        "bad-cached-by",
                        f"{name!r} is cached_by {epoch_name!r}: it is sent exactly when that "
                        f"epoch increments, so it cannot also declare {key}",
                    )
                    ok = False
            if f.type.nullable:
                self.fail(
                    (*f.path, "type"),
                    "bad-cached-by",
                    f"{name!r} is cached_by {epoch_name!r}: absent means 'unchanged', so its "
                    f"type cannot also admit None ({f.type})",
                )
                ok = False
            if not ok:
                continue
            if not epoch.always_required:
                # absent whenever the epoch is: the only rule one envelope can check
                source = f"{epoch_name} is not None"
                fields[name] = dataclasses.replace(
                    f, none_unless=CExpr(source, expr.parse(source), at)
                )

    def check_cached_reads(
        self, fields: Mapping[str, CField], invariants: Sequence[CInvariant]
    ) -> None:
        """No rule reads a field cached by an epoch, nor a dimension such a field binds.

        Every end checks an envelope as it travels, where a cached field is absent while
        its epoch holds, and a receiver hands it over with the kept value filled in: a rule
        that reads the cached field (its value or its presence) would be checked on one of
        the two and could fail on the other, so a worker would get a message its own
        ``validate`` refuses. For the same reason a cached tensor shares its dimensions
        only with fields cached by the same epoch (they travel together)."""
        cached = {
            n: f.cached_by
            for n, f in fields.items()
            if f.cached_by is not None and f.cached_by != n and f.cached_by in fields
        }
        if not cached:
            return
        binder: dict[str, str] = {}  # dimension -> the first cached tensor that binds it
        for name, f in fields.items():
            epoch = cached.get(name)
            if epoch is None:
                continue
            seen: set[str] = set()
            for i, d in enumerate(f.shape):
                if not isinstance(d, str) or d in seen:
                    continue
                seen.add(d)
                binder.setdefault(d, name)
                other = next(
                    (
                        g
                        for g in fields.values()
                        if g.name != name and d in g.shape and cached.get(g.name) != epoch
                    ),
                    None,
                )
                if other is not None:
                    how = (
                        f"is cached_by {cached[other.name]!r}"
                        if other.name in cached
                        else "travels in every envelope"
                    )
                    self.fail(
                        (*f.path, "shape", i),
                        "bad-cached-by",
                        f"dimension {d!r} of {name!r} (cached_by {epoch!r}) is also bound by "
                        f"{other.name!r}, which {how}: while {name!r} is held it binds "
                        f"nothing, and handed over with the kept value it must match again; "
                        "a cached tensor's dimensions are its own",
                    )
        rules: list[tuple[str, CExpr]] = [
            (f"{key} of {name!r}", rule)
            for name, f in fields.items()
            if name not in cached  # a cached field's own rules: check_cached
            for key in ("required_when", "forbidden_when", "none_unless", "derived")
            if (rule := getattr(f, key)) is not None
        ]
        rules += [(f"invariant {inv.id!r}", inv.expr) for inv in invariants]
        for what, rule in rules:
            for node in expr.walk(rule.node):
                if not isinstance(node, expr.Name):
                    continue
                if node.id in cached:
                    epoch = cached[node.id]
                    read = f"{node.id!r}, which is cached_by {epoch!r}"
                    held = f"without {node.id!r} while {epoch!r} holds"
                elif node.id in binder and node.id not in fields:
                    tensor = binder[node.id]
                    epoch = cached[tensor]
                    read = (
                        f"dimension {node.id!r}, bound by {tensor!r}, which is cached_by {epoch!r}"
                    )
                    held = f"unbound while {epoch!r} holds"
                else:
                    continue
                self.fail(
                    rule.path,
                    "bad-cached-by",
                    f"{what} reads {read}: the envelope is checked as it travels ({held}) "
                    "and handed over with the kept value, so the two could disagree; a rule "
                    "cannot read a cached field",
                    offset=node.offset,
                )
                break  # one error per rule

    def check_derived_cycles(self, fields: Mapping[str, CField]) -> None:
        """Derived fields that depend on each other in a cycle (one error per cycle, at the
        first field of it in spec order; a field derived from itself is reported already)."""
        deps = {
            n: [
                d
                for d in expr.names(f.derived.node)
                if d != n and d in fields and fields[d].derived
            ]
            for n, f in fields.items()
            if f.derived is not None
        }
        order = {n: i for i, n in enumerate(fields)}

        def path(start: str, goal: str) -> list[str] | None:
            """The shortest chain of derived fields from ``start`` to ``goal``."""
            came: dict[str, str] = {start: start}
            frontier = [start]
            while frontier:
                nxt = []
                for n in frontier:
                    for d in sorted(deps[n], key=order.__getitem__):
                        if d == goal:
                            chain = [n]
                            while chain[-1] != start:
                                chain.append(came[chain[-1]])
                            return chain[::-1]
                        if d not in came:
                            came[d] = n
                            nxt.append(d)
                frontier = nxt
            return None

        reported: set[str] = set()
        for name in deps:
            if name in reported:
                continue
            chain = path(name, name)
            if chain is None or len(chain) < 2:
                continue
            reported.update(chain)
            derived = fields[name].derived
            assert derived is not None
            at = next(
                n.offset
                for n in expr.walk(derived.node)
                if isinstance(n, expr.Name) and n.id == chain[1]
            )
            loop = " -> ".join(repr(n) for n in [*chain, name])
            self.fail(
                derived.path,
                "derived-cycle",
                f"derived fields depend on each other in a cycle: {loop}",
                offset=at,
            )

    # -- header -----------------------------------------------------------------------

    def check_header(self) -> CHeader | None:
        body = self.data["header"]
        fields_body: dict[str, Any] = body["fields"]
        slots: list[str] = body["slots"]
        hpath: PathKey = ("header",)
        if len(fields_body) > MAX_HEADER_FIELDS:
            self.fail(
                (*hpath, "fields"), "too-many-fields", f"header has over {MAX_HEADER_FIELDS} fields"
            )
        seen: set[str] = set()
        for i, s in enumerate(slots):
            if s in seen:
                self.fail((*hpath, "slots", i), "slot-order", f"slot {s!r} listed twice")
            elif s not in fields_body:
                hint = _did_you_mean(s, fields_body)
                self.fail(
                    (*hpath, "slots", i), "slot-order", f"slot {s!r} is not a header field{hint}"
                )
            seen.add(s)
        for name in fields_body:
            if name not in seen:
                self.fail(
                    (*hpath, "fields", name),
                    "slot-order",
                    f"header field {name!r} has no slot",
                    key=True,
                )
        fields: dict[str, CField] = {}
        for name, fbody in fields_body.items():
            f = self.check_field(name, fbody, (*hpath, "fields", name), {})
            if f is None:
                continue
            if f.cached_by is not None:
                self.fail(
                    (*hpath, "fields", name, "cached_by"),
                    "bad-cached-by",
                    f"header field {name!r} cannot be cached_by an epoch: only message fields "
                    "are (the header travels with every frame)",
                )
                continue
            if f.type.kind not in ("int", "bool", "enum"):
                self.fail(
                    (*hpath, "fields", name, "type"),
                    "bad-type",
                    f"header field {name!r} must be int, bool or an enum, got {f.type}",
                )
                continue
            fields[name] = f
        action = body["action"]
        if action not in fields_body:
            self.fail(
                (*hpath, "action"),
                "unknown-field",
                f"action field {action!r} is not a header field{_did_you_mean(action, fields_body)}",
            )
        elif action in fields and (
            fields[action].type.kind != "enum" or not fields[action].always_required
        ):
            self.fail(
                (*hpath, "action"), "bad-type", f"action field {action!r} must be a required enum"
            )
        symbols = {n: expr.Sym(f.type.ty, not f.always_required) for n, f in fields.items()}
        for name, f in list(fields.items()):
            fields[name] = self.attach_rules(f, fields_body[name], symbols)
        self.check_derived_cycles(fields)
        ordered = tuple(fields[s] for s in slots if s in fields)
        roles = self.check_roles(body["roles"], fields_body, fields)
        return CHeader(tuple(slots), action, ordered, body.get("doc", ""), roles)

    def check_roles(
        self, body: Mapping[str, str], fields_body: Mapping[str, Any], fields: dict[str, CField]
    ) -> tuple[tuple[str, str], ...]:
        """Each role names a header int field that never goes negative; sequence and epoch
        are on every envelope (a chunk id may be absent where no payload follows)."""
        out: list[tuple[str, str]] = []
        taken: dict[str, str] = {}
        for role in ROLES:
            name = body.get(role)
            if name is None:
                continue
            path: PathKey = ("header", "roles", role)
            if name not in fields_body:
                hint = _did_you_mean(name, fields_body)
                self.fail(
                    path, "unknown-field", f"{role} role: {name!r} is not a header field{hint}"
                )
                continue
            if name in taken:
                self.fail(path, "bad-role", f"{role} role: {name!r} already plays {taken[name]}")
                continue
            taken[name] = role
            f = fields.get(name)
            if f is None:
                continue  # its own error is reported already
            if f.type.kind != "int":
                self.fail(path, "bad-role", f"{role} role: {name!r} must be an int, got {f.type}")
                continue
            if f.range_min is None or f.range_min < 0:
                self.fail(
                    path,
                    "bad-role",
                    f"{role} role: {name!r} must be non-negative (range: {{min: 0}} or more)",
                )
                continue
            if role != "chunk" and not f.always_required:
                self.fail(
                    path,
                    "bad-role",
                    f"{role} role: {name!r} must be on every envelope (a required int, not "
                    f"{f.type}{' with required_when' if f.required_when else ''})",
                )
                continue
            if role == "sequence" and f.derived is not None and self.stream_rules:
                self.fail(
                    f.derived.path,
                    "bad-role",
                    f"sequence role: {name!r} cannot be derived: a control frame (heartbeat, "
                    "shutdown, error) takes the next sequence id and keeps the other header "
                    "fields of the envelope before it, so a value computed from them could "
                    "not increase with every envelope",
                )
                continue
            out.append((role, name))
        return tuple(out)

    def check_control(
        self, body: Mapping[str, str], action_enum: CEnum | None, actions: Mapping[str, str]
    ) -> tuple[tuple[str, str], ...]:
        """Each control role names an action member that carries no message."""
        out: list[tuple[str, str]] = []
        taken: dict[str, str] = {}
        for role in CONTROLS:
            member = body.get(role)
            if member is None:
                continue
            path: PathKey = ("header", "control", role)
            members = dict(action_enum.members) if action_enum is not None else {}
            if action_enum is not None and member not in members:
                hint = _did_you_mean(member, members)
                self.fail(
                    path,
                    "unknown-action",
                    f"{role} control: {member!r} is not a member of {action_enum.name}{hint}",
                )
                continue
            if member in taken:
                self.fail(path, "bad-role", f"{role} control: {member} is already {taken[member]}")
                continue
            taken[member] = role
            if member in actions:
                self.fail(
                    path,
                    "bad-role",
                    f"{role} control: {member} carries {actions[member]}; control actions carry "
                    "no message",
                )
                continue
            out.append((role, member))
        return tuple(out)

    # -- messages ---------------------------------------------------------------------

    def check_message(
        self, name: str, body: Mapping[str, Any], action_enum: CEnum | None
    ) -> CMessage | None:
        path: PathKey = ("messages", name)
        for key in ("id", "version"):
            v = body[key]
            if type(v) is not int or not 1 <= v <= 2**31 - 1:
                self.fail(
                    (*path, key),
                    "bad-version" if key == "version" else "bad-id",
                    f"message {key} must be an integer >= 1, got {v!r}",
                )
        action = body["action"]
        if action_enum is not None and action not in dict(action_enum.members):
            hint = _did_you_mean(action, dict(action_enum.members))
            self.fail(
                (*path, "action"),
                "unknown-action",
                f"{action!r} is not a member of {action_enum.name}{hint}",
            )
        dims: dict[str, CDim] = {}
        for dname, dbody in body.get("dims", {}).items():
            dmin, dmax = dbody.get("min", 0), dbody["max"]
            if type(dmin) is not int or type(dmax) is not int:
                self.fail(
                    (*path, "dims", dname),
                    "not-integer",
                    f"dimension {dname} bounds must be integers",
                )
                continue
            for key, bound in (("min", dmin), ("max", dmax)):
                if bound > INT64_MAX:
                    self.fail(
                        (*path, "dims", dname, key),
                        "bad-range",
                        f"dimension {dname} {key} {_short(bound)} does not fit int64",
                    )
            if dmin < 0 or dmin > dmax:
                self.fail(
                    (*path, "dims", dname),
                    "impossible-range",
                    f"dimension {dname} range {dmin}..{dmax} is empty or negative",
                )
            dims[dname] = CDim(dname, dmin, dmax, dbody.get("doc", ""))
        fields_body: dict[str, Any] = body["fields"]
        if len(fields_body) > MAX_FIELDS:
            self.fail(
                (*path, "fields"),
                "too-many-fields",
                f"message has {len(fields_body)} fields, the limit is {MAX_FIELDS}",
            )
        fields: dict[str, CField] = {}
        for fname, fbody in fields_body.items():
            if fname in dims:
                self.fail(
                    (*path, "fields", fname),
                    "duplicate-name",
                    f"{fname!r} is both a field and a dimension",
                    key=True,
                )
            f = self.check_field(fname, fbody, (*path, "fields", fname), dims)
            if f is not None:
                fields[fname] = f
        used = {d for f in fields.values() for d in f.shape if isinstance(d, str)}
        for dname in dims:
            if dname not in used:
                self.fail(
                    (*path, "dims", dname),
                    "unused-dim",
                    f"dimension {dname} is bound by no tensor",
                    key=True,
                )
        symbols: dict[str, expr.Sym] = {
            n: expr.Sym(f.type.ty, not f.always_required) for n, f in fields.items()
        }
        self.scalar_tensors = frozenset(
            n for n, f in fields.items() if f.type.kind == "tensor" and not f.shape
        )
        for dname in dims:
            binders = [f for f in fields.values() if dname in f.shape]
            symbols[dname] = expr.Sym(expr.INT, not any(f.always_required for f in binders))
        for fname, f in list(fields.items()):
            fields[fname] = self.attach_rules(f, fields_body[fname], symbols)
        self.check_derived_cycles(fields)
        self.check_cached(fields)
        disc = body.get("discriminator")
        if disc is not None:
            f = fields.get(disc)
            if f is None:
                self.fail(
                    (*path, "discriminator"),
                    "unknown-field",
                    f"discriminator {disc!r} is not a field{_did_you_mean(disc, fields)}",
                )
            elif f.type.kind != "enum" or not f.always_required:
                self.fail(
                    (*path, "discriminator"),
                    "bad-type",
                    f"discriminator {disc!r} must be a required enum field without rules",
                )
        vfield = body.get("version_field")
        if vfield is not None:
            f = fields.get(vfield)
            if f is None:
                self.fail(
                    (*path, "version_field"),
                    "unknown-field",
                    f"version_field {vfield!r} is not a field{_did_you_mean(vfield, fields)}",
                )
            elif f.type.kind != "int":
                self.fail(
                    (*path, "version_field"),
                    "bad-type",
                    f"version_field {vfield!r} must be an int field",
                )
        invariants = []
        seen_ids: set[str] = set()
        for i, inv in enumerate(body.get("invariants", [])):
            ipath = (*path, "invariants", i)
            if inv["id"] in seen_ids:
                self.fail(
                    (*ipath, "id"),
                    "duplicate-invariant",
                    f"invariant id {inv['id']!r} is used twice",
                )
            seen_ids.add(inv["id"])
            ce = self.check_expr(
                inv["expr"], (*ipath, "expr"), symbols, expr.BOOL, f"invariant {inv['id']!r}"
            )
            if ce is not None:
                invariants.append(CInvariant(inv["id"], ce, inv["message"], inv.get("fm")))
        if self.stream_rules:
            self.check_cached_reads(fields, invariants)
        return CMessage(
            name=name,
            path=path,
            id=body["id"],
            version=body["version"],
            action=action,
            discriminator=disc,
            version_field=vfield,
            doc=body.get("doc", ""),
            dims=tuple(dims.values()),
            fields=tuple(fields.values()),
            invariants=tuple(invariants),
        )

    def check_names(self, messages: list[CMessage]) -> None:
        """Names that would collide in the generated modules."""
        protocol = self.data["protocol"]
        if keyword.iskeyword(protocol) or protocol.endswith("_strategies"):
            self.fail(("protocol",), "bad-name", f"protocol name {protocol!r} is reserved")
        taken: dict[str, str] = {}

        def claim(name: str, path: PathKey, what: str, kind: str) -> None:
            why = self.reserved(name, kind)
            if why is not None:
                self.fail(path, "bad-name", f"{what} {name!r} is reserved: {why}", key=True)
            elif name in taken:
                self.fail(
                    path, "duplicate-name", f"{what} {name!r} collides with {taken[name]}", key=True
                )
            else:
                taken[name] = f"{what} {name!r}"

        for name in self.enums:
            claim(name, ("enums", name), "enum", "enum")
        for m in messages:
            claim(m.name, m.path, "message", "message")
            disc = next((f for f in m.fields if f.name == m.discriminator), None)
            if disc is not None and disc.type.enum in self.enums:
                for member, _ in self.enums[disc.type.enum].members:
                    claim(
                        variant_class_name(m.name, member),
                        m.path,
                        f"class of {m.name}.{member}",
                        "class",
                    )

    def reserved(self, name: str, kind: str) -> str | None:
        """Why a module-scope name from the spec would break the generated modules, or None."""
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            return "a Python keyword"
        if name in _BUILTINS:
            return "a Python builtin"
        return None if self.names is None else self.names.clash(name, kind)

    def run(self) -> CheckedSpec | None:
        version = self.data["tpwire"]
        if version != SPEC_LANGUAGE_VERSION:
            self.fail(
                ("tpwire",),
                "unsupported-version",
                f"spec language version {version!r} is not supported (this tpwire reads {SPEC_LANGUAGE_VERSION})",
            )
        enums = self.check_enums()
        header = self.check_header()
        action_enum = None
        if header is not None:
            action_field = next((f for f in header.fields if f.name == header.action), None)
            if action_field is not None and action_field.type.enum in self.enums:
                action_enum = self.enums[action_field.type.enum]
        messages = []
        ids: dict[int, str] = {}
        actions: dict[str, str] = {}
        for name, body in self.data["messages"].items():
            m = self.check_message(name, body, action_enum)
            if m is None:
                continue
            if m.id in ids:
                self.fail(
                    (*m.path, "id"),
                    "duplicate-id",
                    f"message id {m.id} is already used by {ids[m.id]}",
                )
            ids[m.id] = name
            if m.action in actions:
                self.fail(
                    (*m.path, "action"),
                    "duplicate-action",
                    f"action {m.action} already carries {actions[m.action]}",
                )
            actions[m.action] = name
            messages.append(m)
        self.check_names(messages)
        if header is None:
            return None
        control = self.check_control(self.data["header"]["control"], action_enum, actions)
        header = dataclasses.replace(header, control=control)
        return CheckedSpec(
            file=self.spec.file,
            sha256=self.spec.sha256,
            protocol=self.data["protocol"],
            doc=self.data.get("doc", ""),
            enums=enums,
            header=header,
            messages=tuple(messages),
        )


def _finite_double(value: int | float) -> bool:
    """Whether a bound is a finite double (an integer like 10**400 overflows to infinity)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _short(value: int | float) -> str:
    """A number for a message: a huge integer by its magnitude, not its 400 digits."""
    text = str(value)
    if isinstance(value, int) and len(text) > 24:
        return f"{text[:4]}...({len(text.lstrip('-'))} digits)"
    return text


def _assignable(got: expr.Ty, want: expr.Ty) -> bool:
    return got == want or (want == expr.FLOAT and got == expr.INT)


def check(loaded: LoadedSpec, *, stream_rules: bool = True) -> CheckedSpec:
    """Run every check; raise ``SpecErrors`` with all problems found.

    ``stream_rules=False`` leaves out the rules on what can carry a stream that a spec
    compiled without before (a rule reading a cached field, a cached field with
    ``forbidden_when``, a derived sequence role): ``breaking``'s old side, a spec that old
    peers ran, only has to compile."""
    errors = meta_errors(loaded)
    if errors:
        raise SpecErrors(errors)
    checker = _Checker(loaded, generated_names(), stream_rules=stream_rules)
    try:
        spec = checker.run()
    except (RecursionError, MemoryError):
        raise SpecErrors([loaded.error((), "too-large", "spec is too complex to check")]) from None
    if checker.errors or spec is None:
        raise SpecErrors(checker.errors)
    return spec
