"""Every spec under tests/bad_specs/ must fail with exactly the located errors it declares.

A case declares its errors in its leading comment block, one line per error::

    # expect: 14:20: error[unknown-name]
    # expect: 15:9: error[unknown-key]: did you mean 'doc'

``line:col`` and ``code`` must match exactly and in order (errors are reported sorted by
position); text after ``]:`` must occur in the message. A file that cannot hold a comment
(binary or empty) keeps the same lines in a sibling ``<stem>.expect`` file.
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from tpwire.codegen.check import check
from tpwire.codegen.errors import SpecError, SpecErrors
from tpwire.codegen.load import load_path

BAD_SPECS = Path(__file__).parent / "bad_specs"
EXPECT_SUFFIX = ".expect"
MIN_CASES = 30
TIME_LIMIT_S = 1.0

_EXPECT_RE = re.compile(
    r"^#?\s*expect:\s*(?P<line>\d+):(?P<col>\d+):\s*error\[(?P<code>[a-z0-9-]+)\]"
    r"(?::\s*(?P<text>.*\S))?\s*$"
)
_PRINTED_RE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): error\[(?P<code>[a-z0-9-]+)\]: \S"
)


@dataclass(frozen=True)
class Expected:
    line: int
    col: int
    code: str
    text: str | None  # must occur in the message, when given

    @property
    def where(self) -> tuple[int, int, str]:
        return (self.line, self.col, self.code)


def _cases() -> list[Path]:
    return sorted(p for p in BAD_SPECS.iterdir() if p.is_file() and p.suffix != EXPECT_SUFFIX)


def _expectation_lines(path: Path) -> list[str]:
    sibling = path.with_suffix(EXPECT_SUFFIX)
    if sibling.exists():
        return sibling.read_text("utf-8").splitlines()
    lines = []
    for line in path.read_text("utf-8").splitlines():
        if not line.startswith("#"):
            break  # only the leading comment block counts
        lines.append(line)
    return lines


def expectations(path: Path) -> list[Expected]:
    out = []
    for line in _expectation_lines(path):
        if "expect:" not in line:
            continue
        m = _EXPECT_RE.match(line.strip())
        assert m, f"{path.name}: malformed expectation line {line!r}"
        out.append(Expected(int(m["line"]), int(m["col"]), m["code"], m["text"]))
    return out


def run_case(path: Path) -> SpecErrors:
    """Load and check ``path``; it must raise ``SpecErrors`` and nothing else."""
    try:
        check(load_path(path, path.name))
    except SpecErrors as exc:
        return exc
    except Exception as exc:  # any other exception is a compiler bug
        pytest.fail(
            f"{path.name}: raised {type(exc).__name__} instead of SpecErrors:\n"
            + "".join(traceback.format_exception(exc))
        )
    pytest.fail(f"{path.name}: the bad spec was accepted")


CASES = _cases()
IDS = [p.name for p in CASES]


def test_enough_cases() -> None:
    assert len(CASES) >= MIN_CASES, f"only {len(CASES)} bad specs, want at least {MIN_CASES}"


def test_every_expect_file_has_a_spec() -> None:
    stems = {p.stem for p in CASES}
    orphans = [p.name for p in BAD_SPECS.glob(f"*{EXPECT_SUFFIX}") if p.stem not in stems]
    assert not orphans, f"expect files without a spec: {orphans}"


def test_expectations_are_unambiguous() -> None:
    """One spec per stem, so a sibling ``.expect`` file belongs to exactly one case."""
    stems = [p.stem for p in CASES]
    assert len(stems) == len(set(stems))


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_bad_spec_reports_declared_errors(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name}: declares no '# expect:' lines"
    errors = run_case(path).errors
    got = [(e.line, e.col, e.code) for e in errors]
    want = [e.where for e in expected]
    assert got == want, f"{path.name}:\n  got:  {got}\n  want: {want}\n" + "\n".join(
        str(e) for e in errors
    )
    for exp, err in zip(expected, errors, strict=True):
        assert err.file == path.name
        assert err.message.strip(), f"{err}: empty message"
        if exp.text is not None:
            assert exp.text in err.message, f"{err}: message lacks {exp.text!r}"


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_printed_form(path: Path) -> None:
    """What ``tpwire check`` prints: one ``file:line:col: error[code]: message`` per line."""
    exc = run_case(path)
    printed = str(exc).splitlines()
    assert printed == [str(e) for e in exc.errors]
    assert len(printed) == len(exc.errors) >= 1
    for line, err in zip(printed, exc.errors, strict=True):
        prefix = f"{path.name}:{err.line}:{err.col}: error[{err.code}]:"
        assert line.startswith(prefix), line
        m = _PRINTED_RE.match(line)
        assert m, f"not compiler-style: {line!r}"
        assert (m["file"], int(m["line"]), int(m["col"]), m["code"]) == (
            path.name,
            err.line,
            err.col,
            err.code,
        )
        assert err.line >= 1 and err.col >= 1
    assert list(exc.errors) == sorted(exc.errors), "errors must be sorted by position"
    assert all(isinstance(e, SpecError) for e in exc.errors)


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_bad_spec_fails_fast(path: Path) -> None:
    start = time.perf_counter()
    run_case(path)
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"{path.name}: took {elapsed:.2f}s"
