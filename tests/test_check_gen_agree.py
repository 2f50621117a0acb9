"""``check`` and ``gen`` agree: what ``tpwire check`` accepts compiles into modules that import.

Issue 14's probes, and variants around them: spec names that collide with Python (keywords,
builtins) or with what the generated modules bind themselves, enum members that IntEnum
already has, control characters in doc strings and file names, numbers past double or int64,
derived fields in cycles. For every variant, ``check`` and ``gen`` give the same verdict; when
they accept, both generated modules import, the JSON Schema is strict JSON, and the strategies
draw envelopes the bindings accept and round-trip. When they refuse, every error is located and
``gen`` writes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpwire.generated
from tpwire.cli import main
from tpwire.codegen.check import generated_names

#: ``file:line:col: error[code]: message``
LOCATED_RE = re.compile(r"^.+:\d+:\d+: error\[[a-z0-9-]+\]: \S")
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")

SPEC = """\
tpwire: 1
protocol: {protocol}
doc: {doc}
enums:
  {act}:
    doc: {doc}
    values: {{NOOP: 0, RUN: 1, STOP: 2, FAIL: 3, {member}: 4}}
  {other}:
    values: {{slow: 0, quick: 1}}
header:
  slots: [seq, act]
  action: act
  roles: {{sequence: seq}}
  control: {{noop: NOOP, shutdown: STOP, error: FAIL}}
  fields:
    seq: {{type: int, range: {{min: 0}}}}
    act: {{type: {act}}}
messages:
  {msg}:
    id: 1
    version: 1
    action: RUN
    doc: {doc}
    dims: {{N: {{min: 1, max: {dim_max}}}}}
    fields:
      mode: {{type: {other}}}
      scale: {{type: float, range: {{min: 0, max: {float_max}}}}}
      count: {{type: int, range: {{min: 0, max: 100}}}}
      data: {{type: tensor, dtypes: [float32], shape: [N, {const_dim}], max_elements: {max_el}}}
{extra}"""

DEFAULTS = {
    "doc": "plain",
    "act": "Action",
    "member": "EXTRA",
    "other": "Mode",
    "msg": "Run",
    "dim_max": "4",
    "float_max": "10.0",
    "const_dim": "2",
    "max_el": "64",
    "extra": "",
}

#: Names from the issue and a few more of the same kind, then every name the templates bind
#: that a spec could spell (as itself, or as the ``X`` of the strategies' ``_X``).
_NAMED = (
    "None True False Invalid HEADER Header Message MESSAGES BINDINGS PROTOCOL Envelope MESSAGE "
    "VERSION ACTION NotImplemented Exception Ellipsis Final Any Literal Callable Run Go Zz"
).split()
_BOUND = {n for names in generated_names().fixed.values() for n in names}
NAMES = sorted(
    {*_NAMED, *(n for n in _BOUND if CLASS_NAME.fullmatch(n))}
    | {n[1:] for n in _BOUND if n.startswith("_") and CLASS_NAME.fullmatch(n[1:])}
)
MEMBERS = (
    "mro name value real imag numerator denominator conjugate bit_length to_bytes from_bytes "
    "as_integer_ratio True None self cls MESSAGE ACTION ok A"
).split()
DOCS = {
    "nul": "a \0 b",
    "soh": "a \x01 b",
    "esc": "\x1b[31mred",
    "cr": "a\rb",
    "del": "a \x7f b",
    "nel": "a \x85 b",
    "tab": "a\tb",
    "newline": "a\nb",
    "line-separator": "a \u2028 b",
    "quotes": 'say """hi""" and end with "',
    "backslash": "a \\ b \\N \\",
}
NUMBERS = {
    "float-1e308": {"float_max": "1.0e+308"},
    "float-2**1023": {"float_max": str(2**1023)},
    "float-2**1024": {"float_max": str(2**1024)},
    "float-10**400": {"float_max": "1" + "0" * 400},
    "float-inf": {"float_max": ".inf"},
    "float-nan": {"float_max": ".nan"},
    "dim-int64-max": {"dim_max": str(2**63 - 1), "max_el": str(2**63 - 1)},
    "dim-2**63": {"dim_max": str(2**63)},
    "const-dim-2**63": {"const_dim": str(2**63)},
    "max-elements-2**63": {"max_el": str(2**63)},
}
DERIVED = {
    "self": "      a: {type: int, derived: a + 1}\n",
    "cycle-2": "      a: {type: int, derived: b + 1}\n      b: {type: int, derived: a - 1}\n",
    "cycle-3": (
        "      a: {type: int, derived: b + 1}\n      b: {type: int, derived: c + 1}\n"
        "      c: {type: int, derived: count + a}\n"
    ),
    "chain": "      a: {type: int, derived: count + 1}\n      b: {type: int, derived: a * 2}\n",
    "chain-backward": "      b: {type: int, derived: a * 2}\n      a: {type: int, derived: count + 1}\n",
}

VARIANTS: dict[str, dict[str, str]] = {"plain": {}}
VARIANTS |= {f"action-enum-{n}": {"act": n} for n in NAMES}
VARIANTS |= {f"enum-{n}": {"other": n} for n in NAMES}
VARIANTS |= {f"message-{n}": {"msg": n} for n in NAMES}
VARIANTS |= {f"member-{n}": {"member": n} for n in MEMBERS}
VARIANTS |= {f"doc-{k}": {"doc": json.dumps(v)} for k, v in DOCS.items()}
VARIANTS |= {f"number-{k}": v for k, v in NUMBERS.items()}
VARIANTS |= {f"derived-{k}": {"extra": v} for k, v in DERIVED.items()}


def spec_text(protocol: str, **over: str) -> str:
    return SPEC.format(**{**DEFAULTS, "protocol": protocol, **over})


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def imported() -> Iterator[list[str]]:
    """Module names a test put into ``sys.modules``; removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        sys.modules.pop(name, None)
        vars(tpwire.generated).pop(name.rpartition(".")[2], None)


def assert_gen_agrees(
    capsys: pytest.CaptureFixture[str], spec: Path, root: Path, protocol: str, imported: list[str]
) -> bool:
    """``check`` and ``gen`` on ``spec`` agree; when they accept, the output works."""
    rc_check, _, err_check = run(capsys, "check", spec)
    out, docs = root / "out", root / "docs"
    rc_gen, _, err_gen = run(capsys, "gen", spec, "--out", out, "--docs", docs)
    assert "internal error" not in err_check + err_gen, err_check + err_gen
    assert "Traceback" not in err_check + err_gen
    assert rc_check in (0, 1)
    assert rc_gen == rc_check, f"check exited {rc_check}, gen {rc_gen}:\n{err_check}{err_gen}"
    if rc_check:
        assert err_gen == err_check
        errors = err_check.splitlines()[:-1]
        assert errors and all(LOCATED_RE.match(line) for line in errors), err_check
        assert not out.exists() and not docs.exists()
        return False
    # the generated modules import: the strategies module imports its bindings by their
    # package name, so the bindings are registered under it
    name = f"tpwire.generated.{protocol}"
    imported += [name, f"{name}_strategies"]
    module = _load(name, out / f"{protocol}.py")
    strategies = _load(f"{name}_strategies", out / f"{protocol}_strategies.py")
    for path in (out / f"{protocol}.py", out / f"{protocol}_strategies.py"):
        first, second = path.read_text("utf-8").splitlines()[:2]
        assert first.startswith("# @generated by tpwire ") and second.startswith('"""'), path
    json.loads(
        (docs / f"{protocol}.schema.json").read_text("utf-8"),
        parse_constant=lambda c: pytest.fail(f"JSON Schema holds {c}"),
    )

    @settings(
        max_examples=3,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def draws(data: st.DataObject) -> None:
        header, msg = data.draw(strategies.valid_envelopes())
        assert module.validate(msg, header) == []
        assert module.decode(module.encode(msg, header)) == (header, msg)

    draws()
    return True


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_check_and_gen_agree(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, imported: list[str], variant: str
) -> None:
    protocol = "agree_" + re.sub(r"\W", "_", variant.lower())[:40]
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(protocol, **VARIANTS[variant]), "utf-8")
    assert_gen_agrees(capsys, spec, tmp_path, protocol, imported)


#: Each of the issue's probes is refused (the rest of the variants may go either way).
REFUSED = {
    "action-enum-None": "bad-name",
    "enum-None": "bad-name",
    "message-None": "bad-name",
    "action-enum-Invalid": "bad-name",
    "message-HEADER": "bad-name",
    "action-enum-VERSION": "bad-name",
    "member-mro": "bad-name",
    "doc-nul": "control-char",
    "number-float-10**400": "bad-range",
    "number-dim-2**63": "bad-range",
    "number-const-dim-2**63": "bad-range",
    "number-max-elements-2**63": "bad-range",
    "derived-cycle-2": "derived-cycle",
    "derived-cycle-3": "derived-cycle",
}


@pytest.mark.parametrize(("variant", "code"), list(REFUSED.items()))
def test_issue_probes_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, variant: str, code: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("demo", **VARIANTS[variant]), "utf-8")
    rc, _, err = run(capsys, "check", spec)
    assert rc == 1
    assert [line for line in err.splitlines() if f"error[{code}]" in line], err


def test_accepted_variants_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The agreement test is not vacuous: ordinary names, docs and numbers are accepted."""
    for variant in ("plain", "message-Run", "doc-tab", "doc-quotes", "derived-chain"):
        spec = tmp_path / f"{variant}.yaml"
        spec.write_text(spec_text("demo", **VARIANTS[variant]), "utf-8")
        assert run(capsys, "check", spec)[0] == 0, variant


@pytest.mark.parametrize(
    "name",
    [
        "de\nimport os; os.system('echo pwned')\nmo.yaml",
        "carriage\rreturn.yaml",
        "tab\tbed.yaml",
        "escape\x1b[31m.yaml",
        "separator\u2028line.yaml",
        os.fsdecode(b"not-utf8-\xff.yaml"),
    ],
    ids=["newline", "cr", "tab", "esc", "u2028", "non-utf8"],
)
def test_spec_path_cannot_inject_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, imported: list[str], name: str
) -> None:
    """An odd spec file name is escaped wherever it is printed: error lines, the summary of
    ``check`` and the header comment of every generated file."""
    try:
        spec = tmp_path / name
        spec.write_text(spec_text("agree_path"), "utf-8")
    except (OSError, UnicodeEncodeError):
        pytest.skip("the file system refuses this name")
    rc, out, _ = run(capsys, "check", spec)
    assert rc == 0
    assert out.endswith("\n") and out[:-1].isprintable(), out
    assert assert_gen_agrees(capsys, spec, tmp_path, "agree_path", imported)
    for path in (tmp_path / "out").iterdir():
        header = path.read_text("utf-8").splitlines()[0]
        assert header.isprintable(), header
    page = (tmp_path / "docs" / "agree_path.md").read_text("utf-8").splitlines()[0]
    assert page.isprintable() and page.endswith("-->")
    # a bad spec under such a name: one located line per error
    spec.write_text(spec_text("agree_path", msg="None"), "utf-8")
    rc, _, err = run(capsys, "check", spec)
    assert rc == 1
    assert [line.isprintable() for line in err.splitlines()] == [True, True]


def test_derived_chain_declared_backwards_is_derived() -> None:
    """A derived field that reads one declared after it is filled after it."""
    import torch

    from tpwire.codegen.compiler import compile

    m = compile(spec_text("demo", **VARIANTS["derived-chain-backward"]))
    msg = m.Run(mode=m.Mode.slow, scale=1.0, count=3, data=torch.zeros(1, 2))
    assert (msg.a, msg.b) == (4, 8)
    assert m.validate(msg) == []


def test_a_field_named_inv_and_an_invariant_id_type_keep_their_own_rules() -> None:
    """Field rules are ``_R_<msg>_<field>_<kind>`` and invariant rules ``_I_<msg>_<id>``:
    a field ``inv`` and an invariant ``type`` no longer share one constant."""
    from tpwire.codegen.compiler import compile

    text = (Path(__file__).parent / "golden" / "mini.yaml").read_text("utf-8")
    text = text.replace(
        "      count: {type: int, range: {min: 1, max: 16}}\n",
        "      count: {type: int, range: {min: 1, max: 16}}\n      inv: {type: int | None}\n",
    ).replace("id: count-matches", "id: type")
    m = compile(text)
    assert m._R_Job_inv_type is not m._I_Job_type
    assert (m._R_Job_inv_type.code, m._I_Job_type.code) == ("type", "invariant")
