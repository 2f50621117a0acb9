"""``tpwire replay`` and ``tpwire journal diff`` out of tree (issue 29 item 5): in a project
of one's own, the journal's protocol is found through the project's ``[tool.tpwire]`` (the
module ``gen`` wrote into ``out``, else its spec compiled in-process), as ``tpwire gen``
finds its specs, without ``--spec``. A project without the protocol still gets the line
that asks for ``--spec``. The journal is recorded from a real 2-rank gloo stream of
``examples/preview_protocol``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mp import run_ranks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "preview_protocol"
CHUNKS = 6

pytestmark = pytest.mark.timeout(180)


def record(rank: int, world: int, project: str, journal: str) -> Any:
    """The example's stream (its ``envelope``), both ranks journaling in full mode."""
    sys.path.insert(0, project)
    from preview_wire import preview as pv
    from stream import envelope

    from tpwire.runtime.channel import BroadcastChannel
    from tpwire.runtime.journal import JournalConfig

    ch = BroadcastChannel(pv, poison="raise", journal=JournalConfig(journal, "full")).open()
    if rank == 0:
        for i in range(CHUNKS):
            header, msg = envelope(i)
            ch.send(msg, header)
        ch.shutdown()
        ch.close()
        return {"sent": CHUNKS}
    seen = 0
    while ch.recv().action is not pv.Op.STOP:
        seen += 1
    ch.close()
    return {"seen": seen}


def _copy_project(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*cache"))
    return dest


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the example project (outside this repository) and the journal folder of
    its stream (outside the project)."""
    tmp = tmp_path_factory.mktemp("oot")
    project = _copy_project(tmp / "vae_project")
    journal = tmp / "journal"
    results = run_ranks(
        "record", tmp, world=2, timeout=120, module="test_replay_out_of_tree",
        project=str(project), journal=str(journal),
    )  # fmt: skip
    assert [r.exitcode for r in results] == [0, 0], [r.log for r in results]
    assert results[1].result == {"seen": CHUNKS}
    return project, journal


def tpwire(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpwire", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _rank_files(journal: Path, rank: int) -> list[Path]:
    return sorted(journal.glob(f"preview.rank{rank}.*.tpj"))


def test_replay_from_the_project_folder_needs_no_spec(recorded: tuple[Path, Path]) -> None:
    project, journal = recorded
    done = tpwire(project, "replay", *_rank_files(journal, 1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--spec" not in done.stderr, done.stderr
    assert (
        f"{CHUNKS + 1} envelopes replayed, accepted; {CHUNKS + 1} of {CHUNKS + 1} full-mode "
        "envelopes reproduced bit for bit" in done.stdout
    ), done.stdout
    # from a folder below the root too: the nearest pyproject.toml above, as gen finds it
    done = tpwire(project / "spec", "replay", *_rank_files(journal, 1))
    assert done.returncode == 0 and "accepted" in done.stdout, done.stdout + done.stderr


def test_journal_diff_from_the_project_folder(recorded: tuple[Path, Path]) -> None:
    project, journal = recorded
    done = tpwire(project, "journal", "diff", journal)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"no divergence: {CHUNKS + 1} envelopes agree on every rank" in done.stdout


def test_a_project_with_only_the_spec_compiles_it(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    """No generated package in the project (not generated yet, or not checked in): the
    spec of ``[tool.tpwire]`` that defines the protocol is compiled in-process."""
    _, journal = recorded
    project = _copy_project(tmp_path / "specs_only")
    shutil.rmtree(project / "preview_wire")
    done = tpwire(project, "replay", *_rank_files(journal, 1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{CHUNKS + 1} envelopes replayed, accepted" in done.stdout, done.stdout


def test_a_project_without_the_protocol_asks_for_spec(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    _, journal = recorded
    other = tmp_path / "other"
    (other / "spec").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "specs" / "relay.yaml", other / "spec" / "relay.yaml")
    (other / "pyproject.toml").write_text(
        "[project]\nname = 'other'\n[tool.tpwire]\nspecs = ['spec/*.yaml']\nout = 'wire'\n"
    )
    done = tpwire(other, "replay", *_rank_files(journal, 1))
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.endswith(
        "protocol 'preview' is not a generated module of this build nor of the project "
        f"{(other / 'pyproject.toml').resolve()} [tool.tpwire]; pass --spec SPEC"
    ), done.stderr
    # with --spec it replays
    spec = EXAMPLE / "spec" / "preview.yaml"
    done = tpwire(other, "replay", "--spec", spec, *_rank_files(journal, 1))
    assert done.returncode == 0 and "accepted" in done.stdout, done.stdout + done.stderr


def test_no_project_at_all_asks_for_spec(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    _, journal = recorded
    done = tpwire(tmp_path, "replay", *_rank_files(journal, 1))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().endswith(
        "protocol 'preview' is not a generated module of this build; pass --spec SPEC"
    ), done.stderr
