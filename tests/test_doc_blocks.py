"""Every ```console block of README.md and docs/*.md is either run and compared, or skipped
on purpose (issue 29 item 8).

Each ``$ COMMAND`` line of a block is looked up in ``COMMANDS`` by its page and its text (a
trailing ``  # comment`` left out; a command that occurs again on a page is ``COMMAND #2``,
and so on). Its entry is either a runner, which runs the command the way the page says
(in-process ``tpwire`` in the right folder: the checkout, or a scratch copy of it where the
page edits or commits something) and returns what it prints, or a ``Skip`` with the reason
it cannot run here (torchrun streams, ``make`` targets that bootstrap or run the suite, pip).
A block line ``...`` stands for any lines; timings are normalized. A new command in a block
is neither: ``test_every_command_is_checked_or_skipped`` names it. The commands of one page
run in page order and share a scratch folder, so a page that edits a spec and then checks
it is checked as it reads.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tpwire.cli import main

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("docs/*.md"))]
GIT = shutil.which("git")
BLOCK_RE = re.compile(r"^```console\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Command:
    page: str
    line: int  # of the ``$`` line in the page
    key: str  # the command, comment left out, ``#n`` for its n-th occurrence on the page
    expected: tuple[str, ...]


def commands(page: str) -> list[Command]:
    text = (REPO / page).read_text("utf-8")
    out: list[Command] = []
    seen: dict[str, int] = {}
    for m in BLOCK_RE.finditer(text):
        first = text[: m.start()].count("\n") + 2
        lines = m.group(1).splitlines()
        starts = [i for i, ln in enumerate(lines) if ln.startswith("$ ")]
        assert starts and starts[0] == 0, f"{page}:{first}: a console block starts with '$ '"
        for a, b in zip(starts, [*starts[1:], len(lines)], strict=True):
            cmd = re.split(r"\s{2,}#", lines[a][2:], maxsplit=1)[0].strip()
            seen[cmd] = seen.get(cmd, 0) + 1
            key = cmd if seen[cmd] == 1 else f"{cmd} #{seen[cmd]}"
            out.append(Command(page, first + a, key, tuple(lines[a + 1 : b])))
    return out


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass
class Page:
    """What the commands of one page share: a scratch folder and what was made in it."""

    tmp: Path
    state: dict[str, Path] = field(default_factory=dict)


Runner = Callable[[Page], str]


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def tpwire(cwd: Path, *argv: str) -> str:
    """``tpwire ARGV`` in ``cwd``, in-process: stdout and stderr as a terminal shows them."""
    buf = io.StringIO()
    with _cwd(cwd), redirect_stdout(buf), redirect_stderr(buf):
        main(list(argv))
    return buf.getvalue()


def git(cwd: Path, *args: str) -> None:
    assert GIT is not None
    subprocess.run(
        [GIT, "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


def _copy(page: Page, name: str, *paths: str) -> Path:
    """A scratch git repository holding ``paths`` of the checkout, committed."""
    if GIT is None:
        pytest.skip("git is not installed")
    root = page.tmp / name
    for p in paths:
        src = REPO / p
        if src.is_dir():
            shutil.copytree(src, root / p, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / p)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "as checked out")
    return root


def _make(cwd: Path, target: str) -> str:
    """``make TARGET`` on a bootstrapped checkout: each recipe line echoed, then run (only
    recipes of ``[cd DIR && ]PY -m tpwire ...`` lines)."""
    recipe = re.search(
        rf"^{target}:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text("utf-8"), re.M
    )
    assert recipe, target
    out = []
    for raw in recipe.group(1).splitlines():
        line = raw.strip().replace("$(PY)", ".venv/bin/python")
        out.append(line + "\n")
        # the project's own steps before the compiler (the checker's name data, the docs'
        # error-code table) write into the dev checkout, silent when it is fresh: checked
        # there (the copy the tour edits holds no codegen/ or tools/)
        own = re.fullmatch(
            r"\.venv/bin/python -m (tpwire\.codegen\.reserved_probe|tools\.codes_doc)", line
        )
        if own:
            done = subprocess.run(
                [sys.executable, "-m", own[1], "--check"], cwd=REPO, capture_output=True,
                text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            out.append(done.stdout + done.stderr)
            continue
        m = re.fullmatch(r"(?:cd (\S+) && )?\S*\.venv/bin/python -m tpwire (.*)", line)
        assert m, f"make {target}: cannot run {line!r} here"
        out.append(tpwire(cwd / (m[1] or "."), *m[2].split()))
    return "".join(out)


# README: the tour edits spec/tp_control.yaml, checks, generates and compares it with HEAD.

_TOUR_FILES = ("pyproject.toml", "spec", "generated", "docs/spec", "examples/preview_protocol")


def _tour_field() -> str:
    """The README's ```yaml block that adds conditioning_epoch (with its typo)."""
    text = (REPO / "README.md").read_text("utf-8")
    blocks = [b for b in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)]
    found = [b for b in blocks if b.startswith("      conditioning_epoch:\n")]
    assert len(found) == 1, "the tour's yaml block"
    return found[0]


def tour_with_typo(page: Page) -> str:
    root = _copy(page, "tour", *_TOUR_FILES)
    spec = root / "spec" / "tp_control.yaml"
    text = spec.read_text("utf-8")
    anchor = "      video:\n"  # "under messages.Infer.fields", before its last field
    assert text.count(anchor) == 1
    spec.write_text(text.replace(anchor, _tour_field() + anchor), "utf-8")
    page.state["tour"] = root
    return tpwire(root, "check", "spec/tp_control.yaml")


def tour_fixed(page: Page) -> str:
    root = page.state["tour"]
    spec = root / "spec" / "tp_control.yaml"
    text = spec.read_text("utf-8")
    typo = "not conditioning_embeds_update\n"
    assert text.count(typo) == 1
    spec.write_text(text.replace(typo, "not conditioning_embeds_updated\n"), "utf-8")
    return tpwire(root, "check", "spec/tp_control.yaml")


def tour_make_gen(page: Page) -> str:
    return _make(page.state["tour"], "gen")


def tour_breaking(page: Page) -> str:
    return tpwire(page.state["tour"], "breaking", "spec/tp_control.yaml")


def runtime_only_check(page: Page) -> str:
    """``tpwire check`` where yaml (the compiler extra) cannot be imported."""
    code = (
        "import sys; sys.modules['yaml'] = None\n"
        "from tpwire.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "check", "spec/tp_control.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout + done.stderr


# docs/evolution.md


def breaking_configured(page: Page) -> str:
    root = _copy(page, "clean", "pyproject.toml", "spec")
    return tpwire(root, "breaking")


# docs/journal.md: `current_start_frame`'s range tightened to 0..2 in /tmp/new


def breaking_tightened(page: Page) -> str:
    new = page.tmp / "new" / "tp_control.yaml"
    new.parent.mkdir()
    text = (REPO / "spec" / "tp_control.yaml").read_text("utf-8")
    old = "      current_start_frame:\n        type: int\n        range: {min: 0}\n"
    assert text.count(old) == 1
    new.write_text(text.replace(old, old.replace("{min: 0}", "{min: 0, max: 2}")), "utf-8")
    out = tpwire(REPO, "breaking", str(new), "--against", "spec/tp_control.yaml")
    return out.replace(str(page.tmp), "/tmp")


TORCHRUN = Skip("a torchrun run of several processes (the multi-process tests run it)")
NEEDS_RUN = Skip("reads the journal that the torchrun run above it wrote")
STREAM = Skip("torchrun; tests/test_demo.py runs it (the out-of-tree example's stream)")
BREAK_IT = Skip("torchrun; tests/test_demo.py::test_break_it_ends_every_rank_with_a_line")
DEMO = Skip("torchrun; tests/test_demo.py runs make demo's stream, shortened")
INCIDENT = Skip(
    "reads the torchrun run's journal; tests/test_journal.py::"
    "test_docs_incident_is_what_the_example_prints reruns both and compares docs/journal.md's "
    "block line for line (README's copy: test_readme_incident_is_the_journal_page_s below)"
)
OUT_OF_TREE = Skip(
    "reads the journal of a torchrun stream of a copy of examples/preview_protocol; "
    "tests/test_replay_out_of_tree.py records one on gloo and checks these lines"
)
MAKE_SUITE = Skip("make bootstraps .venv (pip install) and runs the whole suite: minutes")
PIP = Skip("installs packages")
PYTEST = Skip("runs this suite's own tests (a pytest inside pytest)")

#: page -> command key -> a runner, or why it is not run.
COMMANDS: dict[str, dict[str, Runner | Skip]] = {
    "README.md": {
        "make gen": MAKE_SUITE,
        "make test": MAKE_SUITE,
        "pip install .": PIP,
        "pip install '.[compiler]'": PIP,
        "pip install '.[testing]'": PIP,
        "pip install 'tpwire[compiler] @ git+https://HOST/OWNER/tpwire.git'": PIP,
        "python -m build --wheel": Skip("builds a wheel (pip install build; a minute)"),
        "pip install 'dist/tpwire-0.1.0-py3-none-any.whl[compiler]'": PIP,
        "tpwire check spec/tp_control.yaml": runtime_only_check,
        "cd examples/preview_protocol && tpwire gen --check": lambda page: tpwire(
            REPO / "examples" / "preview_protocol", "gen", "--check"
        ),
        "python -m torch.distributed.run --standalone --nproc-per-node 2 stream.py --chunks 6": (
            STREAM
        ),
        ".venv/bin/tpwire check spec/tp_control.yaml": tour_with_typo,
        ".venv/bin/tpwire check spec/tp_control.yaml #2": tour_fixed,
        "make gen #2": tour_make_gen,
        ".venv/bin/tpwire breaking spec/tp_control.yaml": tour_breaking,
        "python -m torch.distributed.run --standalone --nproc-per-node 3 examples/break_it.py "
        "--fault plan": BREAK_IT,
        "... examples/break_it.py --fault extra-call": BREAK_IT,
        "... examples/break_it.py --fault dead-worker": BREAK_IT,
        "make demo": DEMO,
        "TPWIRE_JOURNAL=/tmp/incident python -m torch.distributed.run --standalone "
        "--nproc-per-node 3 examples/journal_incident.py --perturb 2:17": INCIDENT,
        "tpwire journal diff /tmp/incident": INCIDENT,
    },
    "docs/conformance.md": {
        ".venv/bin/python -m pytest tests/test_conformance.py": PYTEST,
        '.venv/bin/python -m pytest "tests/test_conformance.py::test_case[scope::the README '
        "tour's two mistakes]\" -v": PYTEST,
        '.venv/bin/python -m pytest tests/test_conformance.py -k "ranges and NaN"': PYTEST,
    },
    "docs/evolution.md": {
        "tpwire breaking": breaking_configured,
        "tpwire breaking spec/tp_control_v2.yaml --against spec/tp_control.yaml": lambda page: (
            tpwire(REPO, "breaking", "spec/tp_control_v2.yaml", "--against", "spec/tp_control.yaml")
        ),
    },
    "docs/journal.md": {
        "tpwire journal show /tmp/incident/tp_control.rank2.000001.tpj": NEEDS_RUN,
        "TPWIRE_JOURNAL=/tmp/fullrun TPWIRE_JOURNAL_MODE=full python -m torch.distributed.run "
        "--standalone --nproc-per-node 3 examples/journal_incident.py": TORCHRUN,
        "tpwire replay /tmp/fullrun/tp_control.rank1.*": NEEDS_RUN,
        "tpwire replay /tmp/incident/tp_control.rank1.*": NEEDS_RUN,
        "tpwire replay /tmp/dmg/tp_control.rank0.000000.tpj": Skip(
            "reads a journal of a torchrun run with one record's bytes changed"
        ),
        "tpwire replay /tmp/j/ --spec /tmp/new/tp_control.yaml": NEEDS_RUN,
        "cd vae_project && tpwire replay /tmp/vaej/preview.rank1.*": OUT_OF_TREE,
        "cd ../other && tpwire replay /tmp/vaej/preview.rank1.*": OUT_OF_TREE,
        "tpwire breaking /tmp/new/tp_control.yaml --against spec/tp_control.yaml": (
            breaking_tightened
        ),
        "TPWIRE_JOURNAL=/tmp/incident python -m torch.distributed.run --standalone "
        "--nproc-per-node 3 examples/journal_incident.py --perturb 2:17": INCIDENT,
        "ls /tmp/incident": NEEDS_RUN,
        "tpwire journal diff /tmp/incident": INCIDENT,
        "tpwire journal diff /tmp/kill/journal": NEEDS_RUN,
        "tpwire journal trace /tmp/incident -o /tmp/incident.json": NEEDS_RUN,
        "python -m tools.trace_picture /tmp/incident.json -o docs/journal-trace.png": NEEDS_RUN,
        "tpwire journal show /tmp/kill/journal/tp_control.rank1.000000.tpj | tail -2": NEEDS_RUN,
    },
    "docs/testing.md": {
        "make fuzz": Skip("make fuzz runs the fuzzers for FUZZ_SECONDS (180 s by default)"),
        "make fuzz FUZZ_SECONDS=600": Skip("make fuzz runs the fuzzers for 600 s"),
        "make coverage": MAKE_SUITE,
    },
}


# --- comparing -------------------------------------------------------------------------------


def normalize(text: str) -> list[str]:
    """Lines, with what varies from run to run replaced: timings."""
    text = re.sub(r"\bin \d+\.\d+s\b", "in 0.00s", text)
    return text.rstrip("\n").split("\n") if text.strip() else []


def matches(expected: tuple[str, ...], actual: list[str]) -> bool:
    """``actual`` as ``expected`` shows it: equal lines, a ``...`` line standing for any."""
    want = normalize("\n".join(expected))
    ok = [[False] * (len(actual) + 1) for _ in range(len(want) + 1)]
    ok[len(want)][len(actual)] = True
    for i in range(len(want) - 1, -1, -1):
        for j in range(len(actual), -1, -1):
            if want[i] == "...":
                ok[i][j] = ok[i + 1][j] or (j < len(actual) and ok[i][j + 1])
            else:
                ok[i][j] = j < len(actual) and want[i] == actual[j] and ok[i + 1][j + 1]
    return ok[0][0]


def test_every_command_is_checked_or_skipped() -> None:
    """A console block's command is run by this file or listed with the reason it is not,
    and every entry of the table is a command some page shows."""
    found = {(c.page, c.key) for page in PAGES for c in commands(page)}
    listed = {(page, key) for page, table in COMMANDS.items() for key in table}
    new = sorted(f"{p}: $ {k}" for p, k in found - listed)
    gone = sorted(f"{p}: $ {k}" for p, k in listed - found)
    assert not new, f"commands neither run nor skipped (add them to COMMANDS): {new}"
    assert not gone, f"COMMANDS lists commands no page shows: {gone}"
    assert sum(not isinstance(v, Skip) for t in COMMANDS.values() for v in t.values()) >= 8


def test_shell_sessions_are_console_blocks() -> None:
    """A ``$ `` session in a block of another language (```sh, ```text) would escape the
    table above: every fenced block holding one is a ```console block."""
    odd = []
    for page in PAGES:
        text = (REPO / page).read_text("utf-8")
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
            if m[1] != "console" and re.search(r"^\$ ", m[2], re.M):
                odd.append(f"{page}:{text[: m.start()].count(chr(10)) + 1}: ```{m[1]}")
    assert not odd, odd


def test_matching() -> None:
    assert matches(("a", "...", "d"), ["a", "b", "c", "d"])
    assert matches(("a", "...", "b"), ["a", "b"])
    assert not matches(("a", "b"), ["a", "c"])
    assert matches(("done in 2.52s",), normalize("done in 0.31s"))
    assert not matches(("a",), ["a", "b"])


CHECKED = [p for p, t in COMMANDS.items() if any(not isinstance(v, Skip) for v in t.values())]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("page", CHECKED)
def test_page_blocks_are_real_output(page: str, tmp_path: Path) -> None:
    """Each command the table runs prints what its block shows, in page order."""
    table = COMMANDS[page]
    ran = 0
    stale = []
    state = Page(tmp_path)
    for c in commands(page):
        entry = table.get(c.key)
        if entry is None or isinstance(entry, Skip):
            continue
        actual = normalize(entry(state))
        ran += 1
        if not matches(c.expected, actual):
            diff = "\n".join(
                difflib.unified_diff(list(c.expected), actual, "page", "actual", lineterm="")
            )
            stale.append(f"{c.page}:{c.line}: $ {c.key}\n{diff}")
    assert ran, page
    assert not stale, "stale console blocks:\n\n" + "\n\n".join(stale)


def test_readme_incident_is_the_journal_page_s() -> None:
    """README's `journal diff /tmp/incident` block is docs/journal.md's, which
    tests/test_journal.py reruns under torchrun: the two copies say the same."""

    def block(page: str) -> tuple[str, ...]:
        (c,) = [c for c in commands(page) if c.key == "tpwire journal diff /tmp/incident"]
        return c.expected

    assert block("README.md") == block("docs/journal.md")
