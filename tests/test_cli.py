"""The ``tpwire`` command line: gen, check, docs, schema (in-process via ``tpwire.cli.main``).

Most tests call ``main([...])`` with capsys (fast); two subprocess runs cover the entry
points (``python -m tpwire`` and the ``tpwire`` console script).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from tpwire.cli import main
from tpwire.codegen.compiler import GENERATED_MARK
from tpwire.generated import pp_contract, tp_control

REPO = Path(__file__).resolve().parents[1]
SPECS = {
    "tp_control": REPO / "spec" / "tp_control.yaml",
    "pp_contract": REPO / "spec" / "pp_contract.yaml",
}
MODULES = {"tp_control": tp_control, "pp_contract": pp_contract}

#: ``file:line:col: error[code]: message``, the documented diagnostic format.
LOCATED_RE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error\[(?P<code>[a-z0-9-]+)\]: \S"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """``main(argv)`` -> (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def located(err: str) -> list[re.Match[str]]:
    return [m for line in err.splitlines() if (m := LOCATED_RE.match(line))]


def snapshot(*dirs: Path) -> dict[Path, tuple[bytes, int]]:
    """Every file under ``dirs`` with its bytes and mtime (to prove nothing was touched)."""
    out: dict[Path, tuple[bytes, int]] = {}
    for d in dirs:
        if d.exists():
            for p in sorted(d.rglob("*")):
                if p.is_file():
                    out[p] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


# --- help and entry points --------------------------------------------------------------------

HELP_OPTIONS = {
    None: ["gen", "check", "docs", "schema", "--version"],
    "gen": ["SPEC", "--out", "--docs", "--check"],
    "check": ["SPEC"],
    "docs": ["SPEC", "--splice", "--name", "--check", "--page"],
    "schema": ["SPEC"],
}


@pytest.mark.parametrize("command", list(HELP_OPTIONS), ids=lambda c: c or "top")
def test_help_exits_0_and_mentions_options(
    capsys: pytest.CaptureFixture[str], command: str | None
) -> None:
    argv = [command, "--help"] if command else ["--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tpwire")
    for option in HELP_OPTIONS[command]:
        assert option in out, f"{option} missing from `tpwire {command or ''} --help`"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert re.fullmatch(r"tpwire \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: tpwire" in capsys.readouterr().err


def _console_script() -> Path:
    return Path(sys.executable).parent / "tpwire"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([sys.executable, "-m", "tpwire", "--help"], id="python-m-tpwire"),
        pytest.param([str(_console_script()), "--help"], id="tpwire-script"),
    ],
)
def test_entry_points(argv: list[str]) -> None:
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed")
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tpwire")
    for command in ("gen", "check", "docs", "schema"):
        assert command in done.stdout
    assert done.stderr == ""


# --- check -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_check_shipped_spec_ok(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(REPO)
    rc, out, err = run(capsys, "check", f"spec/{name}.yaml")
    assert rc == 0
    assert err == ""
    fingerprint = f"0x{MODULES[name].FINGERPRINT:016x}"
    (line,) = out.splitlines()
    assert line.startswith(f"spec/{name}.yaml: ok (protocol {name}, ")
    assert f"fingerprint {fingerprint}" in line
    assert f"frame 0 = {MODULES[name].FRAME0_LEN} words" in line


def test_check_both_specs_one_ok_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "check", SPECS["tp_control"], SPECS["pp_contract"])
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    assert all(": ok (protocol " in line for line in lines)


GOOD_SPEC = """\
tpwire: 1
protocol: demo
enums:
  Action:
    values:
      NOOP: 0
      RUN: 1
      STOP: 2
      FAIL: 3
header:
  slots: [action, seq]
  action: action
  roles: {sequence: seq}
  control: {noop: NOOP, shutdown: STOP, error: FAIL}
  fields:
    action: {type: Action}
    seq: {type: int, range: {min: 0}}
messages:
  Run:
    id: 1
    version: 1
    action: RUN
    fields:
      count:
        type: int
        range: {min: 0, max: 10}
      flag:
        type: bool
        required_when: count == 3
"""

#: Two independent errors: an unknown name in required_when, and an unknown type.
BAD_SPEC = GOOD_SPEC.replace("required_when: count == 3", "required_when: cuont == 3").replace(
    "      flag:\n", "      size:\n        type: integr\n      flag:\n"
)


def _position(text: str, needle: str) -> tuple[int, int]:
    """1-based (line, col) of the only occurrence of ``needle``."""
    assert text.count(needle) == 1
    before = text[: text.index(needle)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def test_good_spec_fixture_is_good(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "demo.yaml"
    spec.write_text(GOOD_SPEC, "utf-8")
    rc, out, err = run(capsys, "check", spec)
    assert (rc, err) == (0, "")
    assert out.startswith(f"{spec.as_posix()}: ok (protocol demo, ")


def test_check_bad_spec_reports_every_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, "utf-8")
    rc, out, err = run(capsys, "check", spec)
    assert rc == 1
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err
    found = located(err)
    lines = err.splitlines()
    # every line but the summary is a located error
    assert len(found) == len(lines) - 1
    assert lines[-1] == f"tpwire: {len(found)} errors"
    got = {(int(m["line"]), int(m["col"]), m["code"]) for m in found}
    assert {m["file"] for m in found} == {spec.as_posix()}
    assert (*_position(BAD_SPEC, "cuont"), "unknown-name") in got
    assert (*_position(BAD_SPEC, "integr"), "unknown-type") in got
    assert "'cuont'" in err
    # sorted by position
    positions = [(int(m["line"]), int(m["col"])) for m in found]
    assert positions == sorted(positions)


def test_check_good_and_bad_spec_together(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC, "utf-8")
    rc, out, err = run(capsys, "check", SPECS["tp_control"], bad)
    assert rc == 1
    assert ": ok (protocol tp_control, " in out
    assert {m["file"] for m in located(err)} == {bad.as_posix()}
    assert len(located(err)) >= 2


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.yaml", b"", "empty"),
        ("only_spaces.yaml", b"   \n\n", "empty"),
        ("garbage.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00", "encoding"),
        ("missing.yaml", None, "io"),
    ],
)
def test_check_unreadable_spec_located_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    content: bytes | None,
    code: str,
) -> None:
    spec = tmp_path / name
    if content is not None:
        spec.write_bytes(content)
    rc, out, err = run(capsys, "check", spec)
    assert rc == 1
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err
    found = located(err)
    assert found, err
    assert found[0]["file"] == spec.as_posix()
    assert found[0]["code"] == code


def test_check_directory_is_located_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, _, err = run(capsys, "check", tmp_path)
    assert rc == 1
    assert located(err) and "Traceback" not in err


# --- gen ---------------------------------------------------------------------------------------

ALL_SPECS = (SPECS["tp_control"], SPECS["pp_contract"])


def expected_files(out: Path, docs: Path) -> set[Path]:
    files = {out / "__init__.py"}
    for name in SPECS:
        files |= {out / f"{name}.py", out / f"{name}_strategies.py"}
        files |= {docs / f"{name}.md", docs / f"{name}.schema.json"}
    return files


@pytest.fixture(scope="module")
def generated_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One fresh ``gen`` of both specs (out/ and docs/), shared read-only by the tests."""
    root = tmp_path_factory.mktemp("gen")
    rc = main(
        ["gen", *map(str, ALL_SPECS), "--out", str(root / "out"), "--docs", str(root / "docs")]
    )
    assert rc == 0
    yield root


@pytest.fixture
def tree(generated_tree: Path, tmp_path: Path) -> Path:
    """A private copy of the freshly generated tree."""
    dst = tmp_path / "tree"
    shutil.copytree(generated_tree, dst)
    return dst


def gen(capsys: pytest.CaptureFixture[str], root: Path, *extra: str | Path) -> tuple[int, str, str]:
    return run(capsys, "gen", *ALL_SPECS, "--out", root / "out", "--docs", root / "docs", *extra)


def test_gen_writes_module_strategies_docs_and_schema(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, err = gen(capsys, tmp_path)
    assert rc == 0, err
    files = expected_files(tmp_path / "out", tmp_path / "docs")
    assert set(snapshot(tmp_path)) == files
    assert {line for line in out.splitlines()} == {f"wrote {p.as_posix()}" for p in files}
    for p in files:
        text = p.read_text("utf-8")
        if p.suffix == ".json":
            json.loads(text)
        else:
            assert GENERATED_MARK in text.splitlines()[0], p
    # the generated module compiles
    compile((tmp_path / "out" / "tp_control.py").read_text("utf-8"), "tp_control.py", "exec")


def test_gen_second_run_is_up_to_date_and_touches_nothing(
    capsys: pytest.CaptureFixture[str], tree: Path
) -> None:
    before = snapshot(tree)
    rc, out, err = gen(capsys, tree)
    assert rc == 0 and err == ""
    assert out == "tpwire: 2 spec(s), output up to date\n"
    assert snapshot(tree) == before  # byte-identical, not even rewritten


def test_gen_check_fresh_exits_0(capsys: pytest.CaptureFixture[str], tree: Path) -> None:
    before = snapshot(tree)
    rc, out, _ = gen(capsys, tree, "--check")
    assert rc == 0
    assert "up to date" in out
    assert snapshot(tree) == before


def test_gen_check_stale_file_exits_1_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tree: Path
) -> None:
    md = tree / "docs" / "tp_control.md"
    md.write_text(md.read_text("utf-8") + "hand edit\n", "utf-8")
    before = snapshot(tree)
    rc, out, err = gen(capsys, tree, "--check")
    assert rc == 1
    assert [x for x in out.splitlines() if x.startswith("would ")] == [
        f"would write {md.as_posix()}"
    ]
    assert "stale" in err
    assert snapshot(tree) == before


def test_gen_check_missing_file_exits_1(capsys: pytest.CaptureFixture[str], tree: Path) -> None:
    (tree / "out" / "pp_contract_strategies.py").unlink()
    before = snapshot(tree)
    rc, out, _ = gen(capsys, tree, "--check")
    assert rc == 1
    assert "would write" in out and "pp_contract_strategies.py" in out
    assert snapshot(tree) == before


#: the module a spec made before its protocol was renamed: stale when that spec is compiled
#: (the header records the spec and its project, this checkout's: tpwire)
STALE_GENERATED = (
    f"# {GENERATED_MARK} 0.1.0 from spec/tp_control.yaml (sha256 00, project tpwire) "
    "- do not edit\nX = 1\n"
)
HAND_WRITTEN = "# hand-written helper, not generated\nY = 2\n"


def test_gen_check_extra_stale_generated_file_exits_1_and_removes_nothing(
    capsys: pytest.CaptureFixture[str], tree: Path
) -> None:
    stale = tree / "out" / "old_protocol.py"
    stale.write_text(STALE_GENERATED, "utf-8")
    before = snapshot(tree)
    rc, out, err = gen(capsys, tree, "--check")
    assert rc == 1
    assert [x for x in out.splitlines() if x.startswith("would ")] == [
        f"would remove stale {stale.as_posix()}"
    ]
    assert "stale" in err
    assert stale.exists()
    assert snapshot(tree) == before


def test_gen_removes_stale_generated_file_keeps_hand_written(
    capsys: pytest.CaptureFixture[str], tree: Path
) -> None:
    stale_py = tree / "out" / "old_protocol.py"
    stale_md = tree / "docs" / "old_protocol.md"
    stale_py.write_text(STALE_GENERATED, "utf-8")
    stale_md.write_text(
        f"<!-- {GENERATED_MARK} 0.1.0 from spec/pp_contract.yaml (sha256 00, project tpwire) "
        "- do not edit -->\n# old\n",
        "utf-8",
    )
    hand = {
        tree / "out" / "helpers.py": HAND_WRITTEN,
        tree / "docs" / "README.md": "# Notes\n\nWritten by a person.\n",
        tree / "docs" / "notes.json": "{}\n",
    }
    for p, text in hand.items():
        p.write_text(text, "utf-8")
    rc, out, _ = gen(capsys, tree)
    assert rc == 0
    assert set(out.splitlines()) == {
        f"removed stale {stale_py.as_posix()}",
        f"removed stale {stale_md.as_posix()}",
    }
    assert not stale_py.exists() and not stale_md.exists()
    for p, text in hand.items():
        assert p.read_text("utf-8") == text
    assert set(snapshot(tree)) == expected_files(tree / "out", tree / "docs") | set(hand)


def test_gen_of_one_spec_leaves_the_other_specs_output_alone(
    capsys: pytest.CaptureFixture[str], tree: Path
) -> None:
    """Only files made from the specs being compiled (or from specs that are gone) are
    stale: compiling tp_control keeps pp_contract's module, strategies and docs."""
    before = snapshot(tree)
    rc, out, err = run(
        capsys, "gen", SPECS["tp_control"], "--out", tree / "out", "--docs", tree / "docs"
    )
    assert (rc, out.strip(), err) == (0, "tpwire: 1 spec(s), output up to date", "")
    assert snapshot(tree) == before


def test_gen_keeps_what_other_specs_made(capsys: pytest.CaptureFixture[str], tree: Path) -> None:
    """Output made from a spec this run does not compile stays, whether that spec is in
    another project, elsewhere, or deleted: only its own specs' leftovers are tpwire's to
    remove."""
    other = tree / "out" / "other.py"
    text = f"# {GENERATED_MARK} 0.1.0 from ../vendor/other.yaml (sha256 00) - do not edit\nX = 1\n"
    other.write_text(text)
    rc, out, _ = gen(capsys, tree)
    assert rc == 0 and other.read_text() == text and "removed" not in out
    assert "other" in (tree / "out" / "__init__.py").read_text()


def test_gen_with_a_bad_spec_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC, "utf-8")
    out_dir, docs_dir = tmp_path / "out", tmp_path / "docs"
    rc, out, err = run(
        capsys, "gen", SPECS["tp_control"], bad, "--out", out_dir, "--docs", docs_dir
    )
    assert rc == 1
    assert out == ""
    assert len(located(err)) >= 2 and "Traceback" not in err
    assert not out_dir.exists() and not docs_dir.exists()


def test_gen_with_a_bad_spec_leaves_existing_tree_alone(
    capsys: pytest.CaptureFixture[str], tree: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC, "utf-8")
    (tree / "out" / "old_protocol.py").write_text(STALE_GENERATED, "utf-8")
    (tree / "out" / "tp_control.py").write_text("# stale\n", "utf-8")
    before = snapshot(tree)
    rc, _, _ = run(capsys, "gen", *ALL_SPECS, bad, "--out", tree / "out", "--docs", tree / "docs")
    assert rc == 1
    assert snapshot(tree) == before


def test_gen_duplicate_protocol_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, _, err = run(
        capsys, "gen", SPECS["tp_control"], SPECS["tp_control"], "--out", tmp_path / "out"
    )
    assert rc == 1
    assert [m["code"] for m in located(err)] == ["duplicate-protocol"]
    assert not (tmp_path / "out").exists()


def test_gen_output_matches_checked_in_tree(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make gen` output is checked in: `gen --check` on the repository itself is clean."""
    monkeypatch.chdir(REPO)
    before = snapshot(REPO / "generated", REPO / "docs" / "spec")
    rc, out, err = run(
        capsys,
        "gen",
        "spec/pp_contract.yaml",
        "spec/tp_control.yaml",
        "--out",
        "generated",
        "--docs",
        "docs/spec",
        "--check",
    )
    assert rc == 0, out + err
    assert snapshot(REPO / "generated", REPO / "docs" / "spec") == before


# --- schema and docs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_schema_prints_valid_draft_2020_12(capsys: pytest.CaptureFixture[str], name: str) -> None:
    rc, out, err = run(capsys, "schema", SPECS[name])
    assert (rc, err) == (0, "")
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"0x{MODULES[name].FINGERPRINT:016x}")
    assert out == (REPO / "docs" / "spec" / f"{name}.schema.json").read_text("utf-8")


@pytest.mark.parametrize("name", list(SPECS))
def test_docs_prints_the_tables(capsys: pytest.CaptureFixture[str], name: str) -> None:
    rc, out, err = run(capsys, "docs", SPECS[name])
    assert (rc, err) == (0, "")
    assert "| field | type | required_when |" in out
    assert "#### Header" in out
    for class_name in MODULES[name].MESSAGES:
        assert f"`{class_name}`" in out
    assert "tpwire:begin" not in out  # only the tables, not the page
    assert out.endswith("\n")


@pytest.mark.parametrize("command", ["docs", "schema"])
def test_docs_and_schema_on_bad_spec_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC, "utf-8")
    rc, out, err = run(capsys, command, bad)
    assert rc == 1
    assert out == ""
    assert len(located(err)) >= 2 and "Traceback" not in err


# --- CI-friendly diagnostics -----------------------------------------------------------------


def test_check_formats_json_and_github(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC, "utf-8")
    rc, out, err = run(capsys, "check", bad, SPECS["tp_control"], "--format", "json")
    assert rc == 1 and err == ""
    doc = json.loads(out)
    assert [g["protocol"] for g in doc["ok"]] == ["tp_control"]
    assert doc["errors"] and {e["file"] for e in doc["errors"]} == {bad.as_posix()}
    assert {"unknown-name", "unknown-type"} <= {e["code"] for e in doc["errors"]}
    rc, out, err = run(capsys, "check", bad, "--format", "github")
    assert rc == 1 and err == ""
    lines = out.splitlines()
    assert lines and all(line.startswith("::error file=") for line in lines)
    assert any(",title=unknown-name::" in line for line in lines)


def test_gen_check_prints_a_unified_diff(capsys: pytest.CaptureFixture[str], tree: Path) -> None:
    module = tree / "out" / "tp_control.py"
    module.write_text(module.read_text() + "# edited by hand\n")
    rc, out, err = gen(capsys, tree, "--check")
    assert rc == 1 and "stale" in err
    assert f"would write {module.as_posix()}" in out
    assert "-# edited by hand" in out.splitlines()
    assert any(line.startswith("--- a/") for line in out.splitlines())


def test_gen_reports_spec_errors_as_github_annotations(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC, "utf-8")
    rc, out, _ = run(capsys, "gen", bad, "--out", tmp_path / "out", "--format", "github")
    assert rc == 1 and out.startswith("::error file=")
    assert not (tmp_path / "out").exists()
