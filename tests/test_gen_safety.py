"""What `tpwire gen`, `tpwire docs --splice` and `tpwire breaking` refuse to do to a user's
project, driven as a careless operator would: hand-written files that share an output's name,
two projects sharing one `out`, paths that leave the project, git refs that are options, and
malformed `[tool.tpwire]` tables. Each refusal is one line and exit 2; nothing is written.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tpwire import cli
from tpwire.cli import main

ROOT = Path(__file__).resolve().parents[1]
RELAY = ROOT / "tests" / "specs" / "relay.yaml"
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")

pytestmark = pytest.mark.timeout(120)


def spec_text(protocol: str) -> str:
    return RELAY.read_text("utf-8").replace("protocol: relay", f"protocol: {protocol}")


def make_project(
    where: Path, table: str = "", *, name: str | None = "app", protocol: str = "relay"
) -> Path:
    """A user's project: pyproject.toml (``[project] name`` and ``[tool.tpwire]``), spec/a.yaml."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "spec").mkdir(exist_ok=True)
    (where / "spec" / "a.yaml").write_text(spec_text(protocol), "utf-8")
    head = f"[project]\nname = {name!r}\n" if name is not None else ""
    tool = f"\n[tool.tpwire]\n{table}" if table else ""
    (where / "pyproject.toml").write_text(head + tool, "utf-8")
    return where


def run_in(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cwd: Path,
    *argv: str | Path,
) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative name -> bytes)."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def one_line_refusal(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tpwire"), err
    assert "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


# --- 5: never write over a file tpwire did not write ------------------------------------------


HAND = "# My index\n\nWritten by a person; not generated.\n"


@pytest.mark.parametrize(
    ("protocol", "table", "victim"),
    [
        ("index", 'specs = ["spec/a.yaml"]\nout = "pkg"\ndocs = "docs"\n', "docs/index.md"),
        (
            "index",
            'specs = ["spec/a.yaml"]\nout = "pkg"\ndocs = "docs"\n',
            "docs/index.schema.json",
        ),
        ("models", 'specs = ["spec/a.yaml"]\nout = "app"\n', "app/models.py"),
        ("models", 'specs = ["spec/a.yaml"]\nout = "app"\n', "app/models_strategies.py"),
    ],
)
@pytest.mark.parametrize("check", [False, True])
def test_gen_refuses_to_replace_a_hand_written_file_of_the_same_name(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    protocol: str,
    table: str,
    victim: str,
    check: bool,
) -> None:
    proj = make_project(tmp_path / "proj", table, protocol=protocol)
    target = proj / victim
    target.parent.mkdir(parents=True)
    target.write_text(HAND, "utf-8")
    before = tree(proj)
    rc, out, err = run_in(capsys, monkeypatch, proj, "gen", *(["--check"] if check else []))
    one_line_refusal(rc, err, victim, "not written by tpwire")
    assert out == ""
    assert tree(proj) == before  # the file untouched, and nothing else written either


def test_gen_refuses_an_output_name_held_by_a_folder_a_fifo_or_a_symlink(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text("KEEP = 1\n", "utf-8")
    holders = {
        "folder": lambda p: p.mkdir(),
        "fifo": lambda p: os.mkfifo(p),
        "symlink": lambda p: p.symlink_to(outside),
    }
    for kind, make in holders.items():
        proj = make_project(tmp_path / kind, 'specs = ["spec/a.yaml"]\nout = "pkg"\n')
        (proj / "pkg").mkdir()
        make(proj / "pkg" / "relay.py")
        rc, out, err = run_in(capsys, monkeypatch, proj, "gen")
        one_line_refusal(rc, err, "pkg/relay.py")
        assert out == "" and not (proj / "pkg" / "relay_strategies.py").exists(), kind
    assert outside.read_text("utf-8") == "KEEP = 1\n"


def test_gen_still_replaces_its_own_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The refusal is about other people's files: tpwire's own output, even edited below its
    header, is rewritten as before."""
    proj = make_project(tmp_path / "proj", 'specs = ["spec/a.yaml"]\nout = "pkg"\n')
    rc, _, err = run_in(capsys, monkeypatch, proj, "gen")
    assert rc == 0, err
    made = tree(proj / "pkg")
    module = proj / "pkg" / "relay.py"
    module.write_text(made["relay.py"].decode() + "# an edit\n", "utf-8")
    rc, out, err = run_in(capsys, monkeypatch, proj, "gen")
    assert (rc, out.strip()) == (0, "wrote pkg/relay.py"), err
    assert tree(proj / "pkg") == made


def test_a_write_that_fails_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj = make_project(tmp_path / "proj", 'specs = ["spec/a.yaml"]\nout = "pkg"\n')

    def full(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    rc, _, err = run_in(capsys, monkeypatch, proj, "gen")
    one_line_refusal(rc, err, "cannot write pkg/relay.py", os.strerror(errno.ENOSPC))


# --- 6: one project's gen never deletes (or replaces) another project's output ---------------


def test_two_projects_sharing_one_out_keep_each_others_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both projects compile ``spec/a.yaml`` (the same project-relative name) into ``shared``:
    the header records the project, so neither run takes the other's files for its own."""
    a = make_project(tmp_path / "a", name="alpha-app", protocol="alpha")
    b = make_project(tmp_path / "b", name="beta-app", protocol="beta")
    shared = tmp_path / "shared"
    for proj in (a, b, a):
        rc, _, err = run_in(capsys, monkeypatch, proj, "gen", "spec/a.yaml", "--out", shared)
        assert rc == 0, err
    names = set(tree(shared))
    assert {"alpha.py", "alpha_strategies.py", "beta.py", "beta_strategies.py"} <= names
    head = (shared / "beta.py").read_text("utf-8").splitlines()[0]
    assert " from spec/a.yaml (sha256 " in head and "project beta-app" in head, head
    # project a renames its protocol: its old module goes, project b's stays
    (a / "spec" / "a.yaml").write_text(spec_text("gamma"), "utf-8")
    rc, out, err = run_in(capsys, monkeypatch, a, "gen", "spec/a.yaml", "--out", shared)
    assert rc == 0, err
    assert f"removed stale {shared / 'alpha.py'}" in out.splitlines(), out
    assert "beta" not in out
    assert {"gamma.py", "beta.py", "beta_strategies.py"} <= set(tree(shared))
    assert not (shared / "alpha.py").exists()


def test_gen_refuses_to_replace_another_projects_module_of_the_same_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a = make_project(tmp_path / "a", name="alpha-app", protocol="relay")
    b = make_project(tmp_path / "b", name="beta-app", protocol="relay")
    shared = tmp_path / "shared"
    rc, _, err = run_in(capsys, monkeypatch, a, "gen", "spec/a.yaml", "--out", shared)
    assert rc == 0, err
    before = tree(shared)
    rc, out, err = run_in(capsys, monkeypatch, b, "gen", "spec/a.yaml", "--out", shared)
    one_line_refusal(rc, err, "relay.py", "alpha-app")
    assert out == ""
    assert tree(shared) == before


def _as_older_output(folder: Path, project: str) -> None:
    """Rewrite ``project``'s output in ``folder`` as a tpwire older than the project in the
    headers wrote it: ``(sha256 ...)`` alone, or no parenthesis at all (JSON schemas)."""
    for f in folder.iterdir():
        text = f.read_text("utf-8")
        if f"project {project}" in text.split("\n", 2)[0] + text[:400]:
            text = text.replace(f", project {project})", ")")
            text = text.replace(f" (project {project})", "")
            f.write_text(text, "utf-8")


def test_older_output_of_another_project_is_never_removed_as_stale(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Output written before headers recorded the project names only ``spec/a.yaml``, which
    every project may have: it cannot be told from this project's, so it is kept (a note on
    stderr says so), never deleted, and ``--check`` does not count it as a change."""
    a = make_project(tmp_path / "a", name="alpha-app", protocol="alpha")
    b = make_project(tmp_path / "b", name="beta-app", protocol="beta")
    shared, docs = tmp_path / "shared", tmp_path / "docs"
    rc, _, err = run_in(
        capsys, monkeypatch, b, "gen", "spec/a.yaml", "--out", shared, "--docs", docs
    )
    assert rc == 0, err
    _as_older_output(shared, "beta-app")
    _as_older_output(docs, "beta-app")
    head = (shared / "beta.py").read_text("utf-8").splitlines()[0]
    assert head.endswith(") - do not edit") and "project" not in head, head
    before_b = {k: v for k, v in tree(shared).items() if k.startswith("beta")}
    before_docs = tree(docs)
    assert len(before_b) == 2 and len(before_docs) == 2
    for extra in (["--check"], [], ["--check"]):
        rc, out, err = run_in(
            capsys,
            monkeypatch,
            a,
            "gen",
            "spec/a.yaml",
            "--out",
            shared,
            "--docs",
            docs,
            *extra,
        )
        changes = [x for x in out.splitlines() if x.startswith(("wrote ", "would ", "removed "))]
        assert not [x for x in changes if "remove" in x or "beta" in x], out
        notes = [line for line in err.splitlines() if line.startswith("tpwire gen: note: kept ")]
        assert len(notes) == 4 and all("'spec/a.yaml'" in n for n in notes), err
        if extra and rc == 1:  # the first --check: alpha's own files are not written yet
            assert "would write" in out
        else:
            assert rc == 0, err
    assert {k: v for k, v in tree(shared).items() if k.startswith("beta")} == before_b
    assert {k: v for k, v in tree(docs).items() if k.startswith("beta")} == before_docs


def test_this_projects_older_output_is_still_replaced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The upgrade path: this project's files from an older tpwire, at the names this run
    writes, are rewritten with the project in their headers (make gen: headers only)."""
    proj = make_project(tmp_path / "p", 'specs = ["spec/a.yaml"]\nout = "pkg"\ndocs = "d"\n')
    assert run_in(capsys, monkeypatch, proj, "gen")[0] == 0
    new = tree(proj)
    _as_older_output(proj / "pkg", "app")
    _as_older_output(proj / "d", "app")
    assert tree(proj) != new
    rc, out, err = run_in(capsys, monkeypatch, proj, "gen")
    assert rc == 0 and err == "", err
    assert sorted(out.splitlines()) == sorted(
        f"wrote {f}"
        for f in ("pkg/relay.py", "pkg/relay_strategies.py", "d/relay.md", "d/relay.schema.json")
    ), out
    assert tree(proj) == new


def test_out_and_docs_in_one_folder_remove_a_renamed_protocols_files_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``out = docs``: the folder is scanned once, so each stale file is removed once (a
    second removal of the same file failed the run: exit 2, 'No such file')."""
    proj = make_project(tmp_path / "p", 'specs = ["spec/a.yaml"]\nout = "g"\ndocs = "g"\n')
    assert run_in(capsys, monkeypatch, proj, "gen")[0] == 0
    (proj / "spec" / "a.yaml").write_text(spec_text("renamed"), "utf-8")
    for extra, verb in ((["--check"], "would remove"), ([], "removed")):
        rc, out, err = run_in(capsys, monkeypatch, proj, "gen", *extra)
        assert rc == (1 if extra else 0), err
        gone = sorted(x for x in out.splitlines() if x.startswith(verb))
        assert gone == [
            f"{verb} stale g/relay{s}" for s in (".md", ".py", ".schema.json", "_strategies.py")
        ], out
    assert sorted(tree(proj / "g")) == [
        "__init__.py",
        "renamed.md",
        "renamed.py",
        "renamed.schema.json",
        "renamed_strategies.py",
    ]


def test_the_project_in_the_header_does_not_depend_on_the_checkout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two clones of one project in folders of different names, generated from different
    working directories: the same bytes (the project is its name, not its path)."""
    one = make_project(tmp_path / "clone-one", 'specs = ["spec/a.yaml"]\nout = "pkg"\n')
    two = tmp_path / "elsewhere" / "clone-two"
    shutil.copytree(one, two)
    assert run_in(capsys, monkeypatch, one, "gen")[0] == 0
    assert run_in(capsys, monkeypatch, two / "spec", "gen")[0] == 0
    assert tree(one / "pkg") == tree(two / "pkg")
    assert "project app)" in (one / "pkg" / "relay.py").read_text("utf-8").splitlines()[0]


def test_a_project_without_a_name_regenerates_after_its_folder_is_renamed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No ``[project] name``: the project is its folder's name, which a rename or a clone
    into another folder changes. Inside the project, its output (made from the same spec)
    is still its own: rewritten, not refused as another project's."""
    one = make_project(tmp_path / "one", 'specs = ["spec/a.yaml"]\nout = "pkg"\n', name=None)
    assert run_in(capsys, monkeypatch, one, "gen")[0] == 0
    assert "project one)" in (one / "pkg" / "relay.py").read_text("utf-8").splitlines()[0]
    two = tmp_path / "two"
    one.rename(two)
    rc, out, err = run_in(capsys, monkeypatch, two, "gen")
    assert rc == 0, err
    assert "project two)" in (two / "pkg" / "relay.py").read_text("utf-8").splitlines()[0]
    # outside the project, the other name is still another project's
    shared = tmp_path / "shared"
    assert run_in(capsys, monkeypatch, two, "gen", "spec/a.yaml", "--out", shared)[0] == 0
    two.rename(tmp_path / "three")
    rc, out, err = run_in(
        capsys, monkeypatch, tmp_path / "three", "gen", "spec/a.yaml", "--out", shared
    )
    one_line_refusal(rc, err, "project two's output")
    assert out == ""


# --- 7: nothing written outside the project unless the command line says so ------------------


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('specs = ["spec/a.yaml"]\nout = "../outside"\n', "out"),
        ('specs = ["spec/a.yaml"]\nout = "pkg"\ndocs = "../outside"\n', "docs"),
        ('specs = ["spec/a.yaml"]\nout = "pkg/../../outside"\n', "out"),
    ],
)
def test_gen_refuses_a_configured_folder_outside_the_project(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    table: str,
    needle: str,
) -> None:
    proj = make_project(tmp_path / "proj", table)
    rc, out, err = run_in(capsys, monkeypatch, proj, "gen")
    one_line_refusal(rc, err, needle, "outside the project")
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # nothing outside


def test_gen_refuses_an_absolute_out_and_the_filesystem_root(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``out = "/"`` would write ``/__init__.py``; checked with ``--check`` so that even a
    build without the guard writes nothing there."""
    for i, out_dir in enumerate(["/", str(tmp_path / "abs-outside")]):
        proj = make_project(tmp_path / f"p{i}", f'specs = ["spec/a.yaml"]\nout = "{out_dir}"\n')
        for extra in (["--check"], []) if out_dir != "/" else (["--check"],):
            rc, out, err = run_in(capsys, monkeypatch, proj, "gen", *extra)
            one_line_refusal(rc, err, "outside the project")
            assert out == ""
    assert not (tmp_path / "abs-outside").exists()


def test_gen_refuses_a_configured_out_that_is_a_symlink_out_of_the_project(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj = make_project(tmp_path / "proj", 'specs = ["spec/a.yaml"]\nout = "pkg"\n')
    (tmp_path / "outside").mkdir()
    (proj / "pkg").symlink_to(tmp_path / "outside")
    rc, _, err = run_in(capsys, monkeypatch, proj, "gen")
    one_line_refusal(rc, err, "outside the project")
    assert tree(tmp_path / "outside") == {}


def test_an_explicit_out_outside_the_project_is_the_operators_choice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj = make_project(tmp_path / "proj", 'specs = ["spec/a.yaml"]\nout = "../outside"\n')
    rc, _, err = run_in(capsys, monkeypatch, proj, "gen", "--out", tmp_path / "chosen")
    assert rc == 0, err
    assert (tmp_path / "chosen" / "relay.py").is_file()
    rc, _, err = run_in(capsys, monkeypatch, proj, "gen", "spec/a.yaml", "--out", "../chosen2")
    assert rc == 0, err
    assert (tmp_path / "chosen2" / "relay.py").is_file()


VICTIM = "# Victim\n\n<!-- tpwire:begin relay -->\nmine\n<!-- tpwire:end relay -->\n"


def test_docs_splice_refuses_a_configured_target_outside_the_project(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.md"
    victim.write_text(VICTIM, "utf-8")
    proj = make_project(
        tmp_path / "proj",
        'specs = ["spec/a.yaml"]\nout = "pkg"\n'
        'splice = [{ spec = "spec/a.yaml", file = "../victim.md" }]\n',
    )
    for extra in ([], ["--check"]):
        rc, out, err = run_in(capsys, monkeypatch, proj, "docs", "--splice", *extra)
        one_line_refusal(rc, err, "../victim.md", "outside the project")
    assert victim.read_text("utf-8") == VICTIM
    # given on the command line, the same file is the operator's choice
    rc, out, err = run_in(
        capsys, monkeypatch, proj, "docs", "spec/a.yaml", "--splice", "../victim.md"
    )
    assert rc == 0 and "block 'relay' updated" in out, err
    assert "| field |" in victim.read_text("utf-8")


def test_docs_splice_into_a_fifo_is_refused_not_a_hang(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj = make_project(tmp_path / "proj", 'specs = ["spec/a.yaml"]\nout = "pkg"\n')
    os.mkfifo(proj / "manual.md")
    rc, out, err = run_in(capsys, monkeypatch, proj, "docs", "spec/a.yaml", "--splice", "manual.md")
    assert (rc, out) == (1, "") and err.splitlines() == [
        "manual.md:1:1: error[io]: cannot read: not a regular file"
    ], err


def test_docs_splice_a_write_that_fails_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A target that cannot be written (read-only, a full disk): one located line, exit 1,
    not an internal error."""
    proj = make_project(tmp_path / "proj", 'specs = ["spec/a.yaml"]\nout = "pkg"\n')
    (proj / "manual.md").write_text(VICTIM, "utf-8")

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    rc, out, err = run_in(capsys, monkeypatch, proj, "docs", "spec/a.yaml", "--splice", "manual.md")
    assert (rc, out) == (1, ""), err
    assert err.splitlines() == [
        f"manual.md:1:1: error[io]: cannot write: {os.strerror(errno.ENOSPC)}"
    ], err
    assert (proj / "manual.md").read_text("utf-8") == VICTIM


# --- 8: a git ref is never an option ----------------------------------------------------------


def git_project(tmp_path: Path) -> Path:
    assert GIT is not None
    proj = make_project(tmp_path / "proj", 'specs = ["spec/a.yaml"]\nout = "pkg"\n')
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (
        ["init", "-q"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec"],
    ):
        subprocess.run([GIT, *args], cwd=proj, check=True, env=env, timeout=60)
    return proj


@needs_git
@pytest.mark.parametrize(
    "against",
    [
        "--output=victim:x",
        "--output=victim:spec/a.yaml",
        "-ovictim:spec/a.yaml",
        "--exec=touch victim:spec/a.yaml",
        "-:spec/a.yaml",
        "HEAD\x00--output=victim:spec/a.yaml",
    ],
)
def test_breaking_refuses_a_ref_that_git_would_read_as_an_option(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    against: str,
) -> None:
    proj = git_project(tmp_path)
    before = sorted(p.name for p in proj.iterdir())
    rc, out, err = run_in(
        capsys, monkeypatch, proj, "breaking", "spec/a.yaml", f"--against={against}"
    )
    one_line_refusal(rc, err, "ref")
    assert out == ""
    assert sorted(p.name for p in proj.iterdir()) == before  # no victim file


@needs_git
def test_breaking_still_reads_a_plain_ref(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proj = git_project(tmp_path)
    for argv in (
        ["breaking", "spec/a.yaml", "--against", "HEAD:spec/a.yaml"],
        ["breaking", "spec/a.yaml"],
        ["breaking"],
    ):
        rc, out, err = run_in(capsys, monkeypatch, proj, *argv)
        assert rc == 0 and "no breaking changes" in out, (argv, out, err)


def test_every_git_call_ends_its_options_before_the_ref(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, b"protocol: x\n", b"")

    monkeypatch.setattr(cli.shutil, "which", lambda name: "/usr/bin/git")
    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert cli.git_show("HEAD~1", "spec/a.yaml") == b"protocol: x\n"
    (argv,) = calls
    # the object name comes last, after --end-of-options: never an option, never a pathspec
    assert argv[1:] == ["cat-file", "blob", "--end-of-options", "HEAD~1:spec/a.yaml"]
    for ref in ("-p", "--output=v", "", "a\nb"):
        with pytest.raises(cli.UsageError):
            cli.git_show(ref, "spec/a.yaml")
    assert len(calls) == 1


# --- 14: a malformed [tool.tpwire] table is one line and exit 2 -------------------------------


def write_pyproject(proj: Path, text: str) -> None:
    (proj / "spec").mkdir(parents=True, exist_ok=True)
    (proj / "spec" / "a.yaml").write_text(spec_text("relay"), "utf-8")
    (proj / "pyproject.toml").write_text(text, "utf-8")


MALFORMED = {
    "tool-int": ("tool = 1\n", "[tool]"),
    "tpwire-int": ("[tool]\ntpwire = 1\n", "must be a table"),
    "tpwire-string": ('[tool]\ntpwire = "x"\n', "must be a table"),
    "nul-out": ('[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pk\\u0000g"\n', "NUL"),
    "nul-docs": ('[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "p"\ndocs = "d\\u0000"\n', "NUL"),
    "nul-spec": ('[tool.tpwire]\nspecs = ["spec/a\\u0000.yaml"]\nout = "pkg"\n', "NUL"),
    "nul-glob": ('[tool.tpwire]\nspecs = ["spec/*\\u0000.yaml"]\nout = "pkg"\n', "NUL"),
    "abs-glob": ('[tool.tpwire]\nspecs = ["/tmp/*.yaml"]\nout = "pkg"\n', "'/tmp/*.yaml'"),
    "out-file": (
        '[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pyproject.toml"\n',
        "pyproject.toml",
    ),
    "docs-file": (
        '[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pkg"\ndocs = "pyproject.toml"\n',
        "pyproject.toml",
    ),
    "out-below-file": (
        '[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pyproject.toml/pkg"\n',
        "pyproject.toml",
    ),
    "out-int": ('[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = 1\n', "out must be"),
    "out-table": ('[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = {a = 1}\n', "out must be"),
    "specs-ints": ('[tool.tpwire]\nspecs = [1]\nout = "pkg"\n', "specs must be"),
    "specs-empty-string": ('[tool.tpwire]\nspecs = [""]\nout = "pkg"\n', "specs"),
    "splice-int": ('[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pkg"\nsplice = 1\n', "splice"),
    "splice-file-int": (
        '[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pkg"\n'
        'splice = [{ spec = "spec/a.yaml", file = 2 }]\n',
        "file must be",
    ),
    "breaking-int": (
        '[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pkg"\nbreaking = 1\n',
        "breaking",
    ),
    "breaking-unknown": (
        '[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pkg"\n[tool.tpwire.breaking]\nignores = []\n',
        "unknown key(s) ignores",
    ),
    "ignore-string": (
        '[tool.tpwire]\nspecs = ["spec/a.yaml"]\nout = "pkg"\n[tool.tpwire.breaking]\nignore = "x"\n',
        "ignore must be",
    ),
}


#: well-formed keys naming a folder gen cannot use: only gen reads them
USED_BY_GEN_ONLY = {"out-file", "docs-file", "out-below-file"}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_project_table_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: str,
) -> None:
    text, needle = MALFORMED[case]
    proj = tmp_path / "proj"
    write_pyproject(proj, text)
    before = tree(proj)
    for argv in (["gen"], ["gen", "--check"], ["check"], ["docs", "--splice"], ["breaking"]):
        rc, out, err = run_in(capsys, monkeypatch, proj, *argv)
        if argv[0] == "gen" or case not in USED_BY_GEN_ONLY:
            one_line_refusal(rc, err, needle)
            assert out == "", argv
        else:  # out and docs are gen's: the others run (or fail) as without them
            assert rc in (0, 1, 2) and "Traceback" not in err and "internal error" not in err
        assert tree(proj) == before, argv
