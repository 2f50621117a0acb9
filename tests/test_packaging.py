"""How tpwire is laid out and installed: one physical path per file, an import graph between
the real folders, dependencies by use (a missing extra is one line), the formatter pinned
exactly, hypothesis registration, the pre-commit hooks. `.ci/package` builds the wheel and
sdist and installs them into fresh environments; these tests cover the checkout."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tools import pkgtree
from tpwire.codegen import render
from tpwire.generated import tp_control as tc
from tpwire.generated import tp_control_strategies  # noqa: F401  (registers from_type)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def test_no_symlinks_in_the_repository() -> None:
    done = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    links = [line.split("\t")[1] for line in done.stdout.splitlines() if line.startswith("120000")]
    assert links == []
    on_disk = [p for p in (ROOT / "src").rglob("*") if p.is_symlink()]
    assert on_disk == []


def _module_files() -> dict[str, Path]:
    """Every module of the tpwire package -> its one file, from the package-dir mapping."""
    modules: dict[str, Path] = {}
    for package, folder in pkgtree.package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def _imports(name: str, path: Path) -> set[str]:
    """The tpwire modules ``path`` imports (absolute and relative), as module names."""
    tree = ast.parse(path.read_text("utf-8"))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == "tpwire" or m.startswith("tpwire.")}


def test_the_import_graph_joins_the_real_folders() -> None:
    """Each tpwire module resolves (through the installed package's own import machinery) to
    its one file in the design card's folders, and the parts import each other as the
    design says: codegen, generated and testing build on runtime; runtime on neither."""
    modules = _module_files()
    for name, path in modules.items():
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        assert Path(spec.origin).resolve() == path.resolve(), (name, spec.origin)
    edges: set[tuple[str, str]] = set()
    for name, path in modules.items():
        for target in _imports(name, path):
            if target in modules:
                edges.add((modules[name].parent.name, modules[target].parent.name))
    folders = {(a, b) for a, b in edges if a != b}
    assert {("codegen", "runtime"), ("generated", "runtime"), ("testing", "runtime")} <= folders
    assert ("tpwire", "codegen") in folders  # the CLI (src/tpwire) drives the compiler
    assert not {(a, b) for a, b in folders if a == "runtime" and b != "tpwire"}, folders
    assert ("generated", "codegen") not in folders and ("generated", "testing") in folders


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _without(*modules: str) -> str:
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


@pytest.mark.parametrize(
    ("blocked", "statement", "extra"),
    [
        (("yaml",), "import tpwire.codegen", "compiler"),
        (("jinja2",), "from tpwire.codegen import compile", "compiler"),
        (("hypothesis",), "import tpwire.testing.strategies", "testing"),
        (("hypothesis",), "import tpwire.generated.tp_control_strategies", "testing"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    blocked: tuple[str, ...], statement: str, extra: str
) -> None:
    code = _without(*blocked) + f"try:\n    {statement}\nexcept ImportError as e:\n    print(e)\n"
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"pip install 'tpwire[{extra}]'"), done.stdout
    assert len(done.stdout.strip().splitlines()) == 1


def test_the_cli_without_the_compiler_extra_says_so_in_one_line() -> None:
    code = _without("jsonschema") + (
        "from tpwire.cli import main\nraise SystemExit(main(['check', 'spec/tp_control.yaml']))\n"
    )
    done = _run(code)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tpwire: tpwire.codegen needs 'jsonschema' from the 'compiler' extra: "
        "pip install 'tpwire[compiler]'"
    ]


def test_bindings_and_in_process_compile_need_no_hypothesis() -> None:
    code = _without("hypothesis", "yaml") + (
        "from tpwire.generated import tp_control\nprint(tp_control.PROTOCOL)\n"
    )
    assert _run(code).stdout.strip() == "tp_control"
    code = _without("hypothesis") + (
        "from tpwire.codegen import compile\n"
        "m = compile('tests/specs/relay.yaml')\nprint(m.PROTOCOL)\n"
        "try:\n    m.strategies\nexcept ImportError as e:\n    print(e)\n"
    )
    done = _run(code)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "relay", done.stderr
    assert lines[1].endswith("pip install 'tpwire[testing]'")


def test_the_formatter_is_pinned_exactly_and_named_in_the_header() -> None:
    compiler_extra = PYPROJECT["project"]["optional-dependencies"]["compiler"]
    pins = [r for r in compiler_extra if r.startswith(render.FORMATTER)]
    assert pins == [f"{render.FORMATTER}=={render.FORMATTER_VERSION}"]
    for path in sorted((ROOT / "generated").glob("*.py")):
        head = path.read_text("utf-8").splitlines()[0]
        if path.name != "__init__.py":
            assert f"({render.FORMATTER} {render.FORMATTER_VERSION}) from spec/" in head, path


def test_another_formatter_version_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tpwire.cli import main

    monkeypatch.setattr(render, "FORMATTER_VERSION", "0.0.1")
    render._ruff.cache_clear()
    try:
        rc = main(["gen", str(ROOT / "tests" / "specs" / "relay.yaml"), "--out", str(tmp_path)])
    finally:
        render._ruff.cache_clear()
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert re.search(r"with ruff 0\.0\.1 .*this environment has ruff \d+\.\d+\.\d+", err), err
    assert not list(tmp_path.iterdir())


@settings(max_examples=25, deadline=None)
@given(st.from_type(tc.InferV1GeneratorOnly), st.from_type(tc.InferV0FullPipeline))
def test_from_type_draws_valid_messages_of_each_class(
    v1: tc.InferV1GeneratorOnly, v0: tc.InferV0FullPipeline
) -> None:
    assert isinstance(v1, tc.InferV1GeneratorOnly) and isinstance(v0, tc.InferV0FullPipeline)
    assert tc.validate(v1) == [] and tc.validate(v0) == []


@settings(max_examples=25, deadline=None)
@given(st.from_type(tc.Header))
def test_from_type_draws_valid_headers(header: tc.Header) -> None:
    assert tc.validate_header(header) == []


def test_pre_commit_hooks_run_on_the_whole_project() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text("utf-8"))
    assert {h["id"] for h in hooks} == {"tpwire-gen-check", "tpwire-breaking"}
    for hook in hooks:
        assert hook["pass_filenames"] is False and hook["always_run"] is True
        assert hook["entry"].split()[0] == "tpwire"
    gen = next(h for h in hooks if h["id"] == "tpwire-gen-check")
    done = subprocess.run(
        [sys.executable, "-m", "tpwire", *gen["entry"].split()[1:]],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "output up to date" in done.stdout, done.stdout + done.stderr


def test_journal_commands_run_without_the_compiler_extra(tmp_path: Path) -> None:
    """Journals are read where the workers run: a runtime-only install."""
    bogus = tmp_path / "rank0.tpj"
    bogus.write_bytes(b"not a journal")
    code = _without("yaml", "jsonschema") + (
        "from tpwire.cli import main\n"
        f"raise SystemExit(main(['journal', 'show', {str(bogus)!r}]))\n"
    )
    done = _run(code)
    assert "extra" not in done.stderr, done.stderr
    assert "0 records, 1 problem(s)" in done.stdout, done.stdout + done.stderr
    assert "@0        PROBLEM: 13 trailing bytes, not a record" in done.stdout
