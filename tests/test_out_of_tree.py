"""`tpwire gen` into a user's own package, outside this repository: the output stands on its
own (its strategies test its own bindings), does not depend on the working directory, and
keeps what the user wrote and the other specs' output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELAY = ROOT / "tests" / "specs" / "relay.yaml"


def tpwire(cwd: Path, *args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tpwire", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def project(tmp_path: Path) -> Path:
    """A user's project: its own pyproject.toml, a spec named like a shipped one."""
    proj = tmp_path / "proj"
    (proj / "specs").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname = 'scope-workers'\n")
    text = RELAY.read_text("utf-8").replace("protocol: relay", "protocol: tp_control")
    (proj / "specs" / "tp_control.yaml").write_text(text, "utf-8")
    (proj / "specs" / "relay.yaml").write_text(RELAY.read_text("utf-8"), "utf-8")
    return proj


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_same_bytes_from_any_working_directory(tmp_path: Path) -> None:
    proj = project(tmp_path)
    tpwire(proj, "gen", "specs/tp_control.yaml", "--out", "a")
    tpwire(proj / "specs", "gen", "tp_control.yaml", "--out", proj / "b")
    assert files(proj / "a") == files(proj / "b")
    head = (proj / "a" / "tp_control.py").read_text().splitlines()[0]
    assert " from specs/tp_control.yaml (sha256 " in head, head
    # --check agrees from another directory too
    assert "up to date" in tpwire(
        proj / "specs", "gen", "tp_control.yaml", "--out", "../a", "--check"
    )


def test_strategies_test_their_own_bindings_and_a_hand_written_init_stays(
    tmp_path: Path,
) -> None:
    proj = project(tmp_path)
    pkg = proj / "workers"
    pkg.mkdir()
    mine = '"""Scope\'s worker protocols (hand-written)."""\n'
    (pkg / "__init__.py").write_text(mine)
    tpwire(proj, "gen", "specs/tp_control.yaml", "--out", "workers")
    assert (pkg / "__init__.py").read_text() == mine
    probe = (
        "import workers.tp_control_strategies as s, workers.tp_control as m\n"
        "from hypothesis import given, settings\n"
        "assert s._p is m and m.PROTOCOL == 'tp_control' and hasattr(m, 'Decode')\n"
        "@settings(max_examples=5, database=None)\n"
        "@given(s.valid_envelopes())\n"
        "def check(e):\n"
        "    header, msg = e\n"
        "    assert m.validate(msg, header) == []\n"
        "check()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(proj)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.stdout.strip() == "ok", done.stdout + done.stderr


def test_compiling_one_of_two_specs_leaves_the_other_alone(tmp_path: Path) -> None:
    proj = project(tmp_path)
    tpwire(proj, "gen", "specs/tp_control.yaml", "specs/relay.yaml", "--out", "pkg")
    before = files(proj / "pkg")
    assert {"relay.py", "tp_control.py", "__init__.py"} <= set(before)
    out = tpwire(proj, "gen", "specs/relay.yaml", "--out", "pkg")
    assert "up to date" in out and files(proj / "pkg") == before


# --- [tool.tpwire]: bare commands do the project's job ------------------------------------------


def configured(tmp_path: Path, table: str) -> Path:
    proj = project(tmp_path)
    text = (proj / "pyproject.toml").read_text() + "\n[tool.tpwire]\n" + table
    (proj / "pyproject.toml").write_text(text)
    return proj


def tpwire_rc(cwd: Path, *args: str | Path) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "tpwire", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_bare_gen_reads_the_project_table_from_any_folder(tmp_path: Path) -> None:
    proj = configured(tmp_path, 'specs = ["specs/*.yaml"]\nout = "pkg"\ndocs = "pkgdocs"\n')
    out = tpwire(proj, "gen")
    assert "wrote pkg/relay.py" in out and "wrote pkgdocs/tp_control.md" in out, out
    made = files(proj / "pkg")
    assert {"relay.py", "relay_strategies.py", "tp_control.py", "__init__.py"} <= set(made)
    # from a subfolder: the same project, the same bytes, nothing to do
    assert "2 spec(s), output up to date" in tpwire(proj / "specs", "gen")
    assert "2 spec(s), output up to date" in tpwire(proj / "specs", "gen", "--check")
    assert files(proj / "pkg") == made
    assert tpwire(proj / "specs", "check").count(": ok (protocol ") == 2
    # a hand edit makes the bare --check fail with a diff
    (proj / "pkg" / "relay.py").write_text(made["relay.py"].decode() + "# edited\n")
    rc, out, err = tpwire_rc(proj, "gen", "--check")
    assert rc == 1 and "-# edited" in out and "stale" in err


def test_bare_docs_splice_checks_every_configured_target(tmp_path: Path) -> None:
    proj = configured(
        tmp_path,
        'specs = ["specs/relay.yaml"]\nout = "pkg"\n'
        'splice = [{ spec = "specs/relay.yaml", file = "manual.md", name = "relay" }]\n',
    )
    manual = proj / "manual.md"
    manual.write_text(
        "# Manual\n\n<!-- tpwire:begin relay -->\n<!-- tpwire:end relay -->\n\nEnd.\n"
    )
    rc, _, err = tpwire_rc(proj / "specs", "docs", "--splice", "--check")
    assert rc == 1 and "block 'relay' is stale" in err
    assert "block 'relay' updated" in tpwire(proj / "specs", "docs", "--splice")
    assert manual.read_text().endswith("<!-- tpwire:end relay -->\n\nEnd.\n")
    assert "| field |" in manual.read_text()
    assert "is up to date" in tpwire(proj, "docs", "--splice", "--check")


def test_a_bad_project_table_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = {
        'specs = ["specs/*.yml"]\nout = "pkg"\n': "'specs/*.yml' matches no file",
        'specs = ["specs/relay.yaml"]\nouts = "pkg"\n': "unknown key(s) outs",
        'specs = "specs/relay.yaml"\nout = "pkg"\n': "specs must be a list of strings",
        'specs = ["specs/relay.yaml"]\n': "no --out given and no out = ...",
    }
    for i, (table, message) in enumerate(cases.items()):
        proj = configured(tmp_path / str(i), table)
        rc, out, err = tpwire_rc(proj, "gen")
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (table, out, err)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    rc, _, err = tpwire_rc(bare, "gen")
    assert rc == 2 and "no specs = [...]" in err


def test_the_example_project_is_fresh_and_stands_alone() -> None:
    example = ROOT / "examples" / "preview_protocol"
    assert "1 spec(s), output up to date" in tpwire(example, "gen", "--check")
    head = (example / "preview_wire" / "preview_strategies.py").read_text().splitlines()
    assert " from spec/preview.yaml (sha256 " in head[0]
    assert "from . import preview as _p" in head


def test_the_manual_names_the_bindings_by_their_import_path(tmp_path: Path) -> None:
    # issue 29: a package of one's own was named tpwire.generated.<protocol>
    def named(page: Path) -> str:
        line = next(x for x in page.read_text().splitlines() if "the generated bindings" in x)
        return line.split("`")[1]

    proj = configured(tmp_path, 'specs = ["specs/relay.yaml"]\nout = "vae_wire"\ndocs = "d"\n')
    tpwire(proj / "specs", "gen")
    assert named(proj / "d" / "relay.md") == "vae_wire.relay"
    # a scratch --out of a configured project documents the project's package (the page's
    # bytes do not depend on where a check writes)
    tpwire(proj, "gen", "specs/relay.yaml", "--out", tmp_path / "scratch", "--docs", "g")
    assert named(proj / "g" / "relay.md") == "vae_wire.relay"
    # without a configured out, the run's: the src layout's folder is no part of the name,
    # and an --out elsewhere names the module alone
    bare = configured(tmp_path / "bare", 'specs = ["specs/relay.yaml"]\n')
    tpwire(bare, "gen", "specs/relay.yaml", "--out", "src/scope/wire", "--docs", "e")
    assert named(bare / "e" / "relay.md") == "scope.wire.relay"
    tpwire(bare, "gen", "specs/relay.yaml", "--out", tmp_path / "elsewhere", "--docs", "f")
    assert named(bare / "f" / "relay.md") == "relay"
    # `docs --page` reads the project's out; tpwire's own maps generated/ to tpwire.generated
    example = ROOT / "examples" / "preview_protocol"
    page = tpwire(example, "docs", "spec/preview.yaml", "--page")
    assert "the generated bindings `preview_wire.preview`:" in page, page[:600]
    own = tpwire(ROOT, "docs", "spec/tp_control.yaml", "--page")
    assert "the generated bindings `tpwire.generated.tp_control`:" in own
    assert named(ROOT / "docs" / "spec" / "tp_control.md") == "tpwire.generated.tp_control"
