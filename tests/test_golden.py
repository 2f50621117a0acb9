"""Golden output, freshness and determinism of the generator."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tpwire.codegen import compile as compile_spec
from tpwire.codegen import compiler, render

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("TPWIRE_UPDATE_GOLDEN") == "1"


def _compare(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    expected = path.read_text("utf-8")
    if expected != text:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), text.splitlines(True), str(path), "generated", n=2
            )
        )
        pytest.fail(f"golden output changed (TPWIRE_UPDATE_GOLDEN=1 to accept):\n{diff[:4000]}")


@pytest.fixture(scope="module")
def mini_ir() -> compiler.ProtocolIR:
    return compiler.protocol_ir_from_text(
        (GOLDEN / "mini.yaml").read_bytes(), "tests/golden/mini.yaml"
    )


@pytest.mark.parametrize(
    ("name", "render_fn"),
    [
        ("mini.py.txt", render.render_module),
        ("mini_strategies.py.txt", render.render_strategies),
        ("mini.md", render.render_doc_page),
        ("mini.schema.json", render.render_schema),
    ],
)
def test_golden_output(mini_ir: compiler.ProtocolIR, name: str, render_fn: object) -> None:
    _compare(GOLDEN / "mini" / name, render_fn(mini_ir))  # type: ignore[operator]


def test_checked_in_output_is_fresh() -> None:
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "spec").glob("*.yaml"))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        changes = compiler.generate(specs, Path("generated"), Path("docs/spec"), check_only=True)
    finally:
        os.chdir(cwd)
    assert changes == [], "run `make gen` and commit the output"


def test_generation_ignores_hash_seed(tmp_path: Path) -> None:
    outs = []
    for seed in ("1", "4242"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tpwire",
                "gen",
                "spec/tp_control.yaml",
                "spec/pp_contract.yaml",
                str(GOLDEN / "mini.yaml"),
                "--out",
                str(out / "py"),
                "--docs",
                str(out / "docs"),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        outs.append(
            {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        )
    assert outs[0] == outs[1]
    assert len(outs[0]) == 3 * 4 + 1


def test_compile_matches_checked_in_bindings() -> None:
    module = compile_spec(ROOT / "spec" / "tp_control.yaml")
    from tpwire.generated import tp_control

    assert module.FINGERPRINT == tp_control.FINGERPRINT
    assert module.FRAME0_LEN == tp_control.FRAME0_LEN
    assert sorted(module.MESSAGES) == sorted(tp_control.MESSAGES)
    ir = compiler.protocol_ir(ROOT / "spec" / "tp_control.yaml")
    assert render.render_module(ir) == (ROOT / "generated" / "tp_control.py").read_text("utf-8")


def test_compile_from_text_gives_working_bindings() -> None:
    from hypothesis import given, settings

    mini = compile_spec((GOLDEN / "mini.yaml").read_text("utf-8"))
    assert mini.PROTOCOL == "mini"
    assert set(mini.MESSAGES) == {"JobFast", "JobCareful"}

    @settings(max_examples=50)
    @given(mini.strategies.valid_envelopes())
    def round_trip(envelope: tuple[object, object]) -> None:
        header, msg = envelope
        assert mini.decode(mini.encode(msg, header)) == (header, msg)

    round_trip()


def test_generated_code_for_unusual_specs_is_typed_and_lint_clean(
    tmp_path: Path, package_tree: Path
) -> None:
    """mypy --strict and ruff on the bindings of the golden specs (one-member discriminator,
    bool tensors, strings, quotes and backslashes in docs, float derived from int)."""
    pkg = tmp_path / "gencheck"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("mini", "odd"):
        ir = compiler.protocol_ir_from_text((GOLDEN / f"{name}.yaml").read_bytes(), f"{name}.yaml")
        (pkg / f"{name}.py").write_text(render.render_module(ir))
        strategies = render.render_strategies(ir)  # imports its bindings: from . import
        (pkg / f"{name}_strategies.py").write_text(strategies)
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(tmp_path), str(package_tree)])}
    typed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", "gencheck"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert typed.returncode == 0, typed.stdout
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), str(pkg)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout
