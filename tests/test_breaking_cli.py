"""``tpwire breaking`` on the command line: exit codes, formats, git revisions, config.

Exit 0 when nothing breaks, 1 when something does (or a spec does not compile: its errors,
located), 2 on a usage error (a missing file, a bad revision, an unknown rule). Git-backed
tests build a throwaway repository; the shipped spec is compared with HEAD only when the
working tree has it as committed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tpwire import cli
from tpwire.cli import main
from tpwire.codegen import breaking

REPO = Path(__file__).resolve().parents[1]
TP = REPO / "spec" / "tp_control.yaml"
GIT = shutil.which("git")
FINDING_RE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error\[(?P<rule>[A-Z_]+)\] "
    r"\((?P<direction>tightening|loosening|both|wire|policy)\): \S"
)
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")

#: The README tour's edit: a conditionally required field for the optimize mode.
TOUR_FIELD = """\
      conditioning_epoch:
        type: int
        range: {min: 0}
        required_when: tp_plan == TPPlan.v1_generator_only and not conditioning_embeds_updated
        why: later optimize mode; conditioning sent only when the epoch increments
        check: rank0 preflight + worker validate
        fm: FM-17
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def tour_spec(tmp_path: Path) -> tuple[Path, int]:
    """tp_control.yaml with the tour's field added before ``video``; (path, its line)."""
    text = TP.read_text("utf-8")
    anchor = "      video:\n"
    assert text.count(anchor) == 1
    new = text.replace(anchor, TOUR_FIELD + anchor)
    line = new[: new.index("      conditioning_epoch:")].count("\n") + 1
    path = tmp_path / "tp_control.yaml"
    path.write_text(new, "utf-8")
    return path, line


def git(cwd: Path, *args: str) -> None:
    assert GIT is not None
    subprocess.run(
        [GIT, "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


# --- files -------------------------------------------------------------------------------


def test_same_spec_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "breaking", TP, "--against", TP)
    assert rc == 0, err
    assert "no breaking changes" in out and "unchanged" in out
    assert err == ""


def test_tour_field_is_reported_with_rule_direction_and_location(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new, line = tour_spec(tmp_path)
    rc, out, err = run(capsys, "breaking", new, "--against", TP)
    assert rc == 1
    found = [m for ln in out.splitlines() if (m := FINDING_RE.match(ln))]
    assert [m["rule"] for m in found] == ["BREAKING_WITHOUT_VERSION_BUMP", "REQUIRED_FIELD_ADDED"]
    added = found[1]
    assert (added["direction"], int(added["line"]), int(added["col"])) == ("both", line, 7)
    assert added["file"].endswith("tp_control.yaml")
    assert "Infer.conditioning_epoch added" in out
    assert "tpwire breaking: 2 breaking findings" in err


def test_allow_turns_a_deliberate_break_green(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new, _ = tour_spec(tmp_path)
    rc, out, err = run(
        capsys,
        "breaking",
        new,
        "--against",
        TP,
        "--allow",
        "REQUIRED_FIELD_ADDED",
        "--allow",
        "BREAKING_WITHOUT_VERSION_BUMP",
    )
    assert rc == 0, out + err
    assert "1 allowed" in out  # the policy finding needs a finding that is not allowed


def test_allowing_the_finding_also_lifts_the_policy_it_caused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new, _ = tour_spec(tmp_path)
    rc, _, _ = run(capsys, "breaking", new, "--against", TP, "--allow", "REQUIRED_FIELD_ADDED")
    assert rc == 0


def test_a_version_bump_lifts_the_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new, _ = tour_spec(tmp_path)
    new.write_text(
        new.read_text("utf-8").replace("    id: 1\n    version: 1", "    id: 1\n    version: 2")
    )
    rc, out, _ = run(capsys, "breaking", new, "--against", TP)
    assert rc == 1
    rules = [m["rule"] for ln in out.splitlines() if (m := FINDING_RE.match(ln))]
    assert "BREAKING_WITHOUT_VERSION_BUMP" not in rules
    assert sorted(rules) == ["MESSAGE_VERSION_CHANGED", "REQUIRED_FIELD_ADDED"]


def test_json_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    new, line = tour_spec(tmp_path)
    rc, out, _ = run(capsys, "breaking", new, "--against", TP, "--format", "json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["version"] == 1 and doc["findings"] == 2
    (result,) = doc["results"]
    rules = {f["rule"]: f for f in result["findings"]}
    added = rules["REQUIRED_FIELD_ADDED"]
    assert added["direction"] == "both" and added["line"] == line
    assert added["subject"] == "Infer.conditioning_epoch"
    assert result["old_fingerprint"] != result["new_fingerprint"]
    assert result["errors"] == []


def test_github_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    new, line = tour_spec(tmp_path)
    rc, out, _ = run(capsys, "breaking", new, "--against", TP, "--format", "github")
    assert rc == 1
    lines = out.splitlines()
    assert all(ln.startswith("::error file=") for ln in lines), out
    assert any(f",line={line},col=7,title=REQUIRED_FIELD_ADDED (both)::" in ln for ln in lines)


def test_github_format_of_a_deletion_points_at_the_new_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = TP.read_text("utf-8")
    start = text.index("      base_seed:\n")
    end = text.index("      video:\n")
    new = tmp_path / "tp_control.yaml"
    new.write_text(text[:start] + text[end:], "utf-8")
    rc, out, _ = run(capsys, "breaking", new, "--against", TP, "--format", "github")
    assert rc == 1
    removed = [ln for ln in out.splitlines() if "title=REQUIRED_FIELD_REMOVED" in ln]
    assert len(removed) == 1
    assert ",line=" not in removed[0].split("::")[1]  # no line in a file that lacks it
    assert "(at spec/tp_control.yaml:" in removed[0] or "tp_control.yaml%3A" in removed[0]


def test_spec_that_does_not_compile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    new, _ = tour_spec(tmp_path)
    new.write_text(
        new.read_text("utf-8").replace(
            "not conditioning_embeds_updated", "not conditioning_embeds_update"
        )
    )
    rc, out, err = run(capsys, "breaking", new, "--against", TP)
    assert rc == 1
    assert out == ""
    assert re.search(r"tp_control\.yaml:\d+:\d+: error\[unknown-name\]: .*did you mean", err)
    assert "tpwire breaking: 1 error" in err


def test_old_spec_that_does_not_compile_is_located_in_the_old_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("tpwire: 1\nprotocol: x\n", "utf-8")
    rc, _, err = run(capsys, "breaking", TP, "--against", old)
    assert rc == 1
    assert "old.yaml:1:1: error[missing-key]" in err


def test_json_format_carries_compile_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("tpwire: 1\nprotocol: x\n", "utf-8")
    rc, out, _ = run(capsys, "breaking", TP, "--against", old, "--format", "json")
    assert rc == 1
    errors = json.loads(out)["results"][0]["errors"]
    assert errors and all({"file", "line", "col", "code", "message"} <= set(e) for e in errors)


# --- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["breaking", "missing.yaml", "--against", str(TP)], "cannot read missing.yaml"),
        (["breaking", str(TP), "--against", "missing.yaml"], "no such file"),
        (["breaking", str(TP), "--against", str(TP), "--allow", "FIELD_ADDD"], "FIELD_ADDED"),
        (["breaking", "--against", str(TP)], "--against needs a SPEC"),
        (["breaking", str(TP), "--against", ":spec/x.yaml"], "expected REF:path"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert err.startswith("tpwire breaking: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["breaking", str(TP), "--against", str(TP), "--format", "xml"])
    assert exc.value.code == 2


def test_help_and_rule_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["breaking", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("SPEC", "--against", "REF:path", "--format", "--allow", "--list-rules"):
        assert option in out
    rc, out, _ = run(capsys, "breaking", "--list-rules")
    assert rc == 0
    assert [ln.split()[0] for ln in out.splitlines()] == list(breaking.RULES)


def test_git_missing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    rc, _, err = run(capsys, "breaking", TP, "--against", "HEAD:spec/tp_control.yaml")
    assert rc == 2 and "git is not installed" in err


# --- git revisions and [tool.tpwire] -----------------------------------------------------


def _tp_is_committed() -> bool:
    if GIT is None or not (REPO / ".git").exists():
        return False
    done = subprocess.run(
        [GIT, "diff", "--quiet", "HEAD", "--", "spec/tp_control.yaml"], cwd=REPO, check=False
    )
    return done.returncode == 0


@pytest.mark.skipif(not _tp_is_committed(), reason="needs a checkout whose spec is committed")
def test_shipped_spec_against_head_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    rc, out, err = run(
        capsys, "breaking", "spec/tp_control.yaml", "--against", "HEAD:spec/tp_control.yaml"
    )
    assert rc == 0, out + err
    assert out.startswith(
        "spec/tp_control.yaml: no breaking changes against HEAD:spec/tp_control.yaml"
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if GIT is None:
        pytest.skip("git is not installed")
    (tmp_path / "spec").mkdir()
    shutil.copy(TP, tmp_path / "spec" / "tp_control.yaml")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.tpwire]\nspecs = ["spec/tp_control.yaml"]\n', "utf-8"
    )
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "v1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@needs_git
def test_against_a_revision(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    _, line = tour_spec(repo / "spec")
    git(repo, "commit", "-qam", "v2")
    rc, out, _ = run(
        capsys, "breaking", "spec/tp_control.yaml", "--against", "HEAD~1:spec/tp_control.yaml"
    )
    assert rc == 1
    assert f"spec/tp_control.yaml:{line}:7: error[REQUIRED_FIELD_ADDED] (both)" in out
    rc, out, _ = run(
        capsys, "breaking", "spec/tp_control.yaml", "--against", "HEAD:spec/tp_control.yaml"
    )
    assert rc == 0 and "no breaking changes" in out


@needs_git
@pytest.mark.parametrize(
    ("against", "message"),
    [
        ("HEAD~5:spec/tp_control.yaml", "invalid object name"),
        ("HEAD:spec/nope.yaml", "does not exist in"),
        ("no-such-branch:spec/tp_control.yaml", "cannot read no-such-branch:spec/tp_control.yaml"),
        # a folder: git says "bad file"; the message says what it is
        ("HEAD:spec", "cannot read HEAD:spec from git: it is a folder (a git tree), not a file"),
    ],
)
def test_bad_revisions_exit_2(
    capsys: pytest.CaptureFixture[str], repo: Path, against: str, message: str
) -> None:
    rc, _, err = run(capsys, "breaking", "spec/tp_control.yaml", "--against", against)
    assert rc == 2 and message in err
    assert len(err.strip().splitlines()) == 1


@needs_git
def test_a_spec_without_against_is_found_in_head_from_any_working_directory(
    capsys: pytest.CaptureFixture[str], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEAD:SPEC is the spec's file in the commit, named from the spec's own folder: an
    absolute SPEC, or one given from outside the repository, is not a path 'not in HEAD'."""
    spec = repo / "spec" / "tp_control.yaml"
    for cwd, given in ((repo, str(spec)), (repo.parent, f"{repo.name}/spec/tp_control.yaml")):
        monkeypatch.chdir(cwd)
        rc, out, err = run(capsys, "breaking", given)
        assert rc == 0 and "no breaking changes against HEAD:" in out, (given, out, err)
    # and one that is not committed says so, under the name the user gave
    monkeypatch.chdir(repo)
    shutil.copy(spec, repo / "spec" / "new.yaml")
    rc, _, err = run(capsys, "breaking", "spec/new.yaml")
    assert rc == 2 and err.startswith("tpwire breaking: cannot read HEAD:spec/new.yaml from git")
    assert len(err.splitlines()) == 1, err


@needs_git
def test_no_arguments_compare_configured_specs_with_the_last_commit(
    capsys: pytest.CaptureFixture[str], repo: Path
) -> None:
    rc, out, _ = run(capsys, "breaking")
    assert rc == 0 and "no breaking changes against HEAD:spec/tp_control.yaml" in out
    tour_spec(repo / "spec")
    rc, out, _ = run(capsys, "breaking")
    assert rc == 1 and "REQUIRED_FIELD_ADDED" in out
    # the ignore list of [tool.tpwire.breaking] allows deliberate breaks
    with (repo / "pyproject.toml").open("a", encoding="utf-8") as fh:
        fh.write('\n[tool.tpwire.breaking]\nignore = ["REQUIRED_FIELD_ADDED"]\n')
    rc, out, err = run(capsys, "breaking")
    assert rc == 0, out + err
    # and a SPEC without --against is compared with HEAD too
    rc, out, _ = run(capsys, "breaking", "spec/tp_control.yaml", "--format", "json")
    assert rc == 0 and json.loads(out)["results"][0]["old"] == "HEAD:spec/tp_control.yaml"


@needs_git
def test_a_spec_not_yet_committed_is_noted(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    shutil.copy(REPO / "spec" / "pp_contract.yaml", repo / "spec" / "pp_contract.yaml")
    (repo / "pyproject.toml").write_text(
        '[tool.tpwire]\nspecs = ["spec/tp_control.yaml", "spec/pp_contract.yaml"]\n', "utf-8"
    )
    rc, out, _ = run(capsys, "breaking")
    assert rc == 0
    assert "spec/pp_contract.yaml: new spec, not in HEAD, nothing to compare" in out


def _git_speaks_german(repo: Path) -> bool:
    assert GIT is not None
    done = subprocess.run(
        [GIT, "cat-file", "blob", "HEAD:nope"],
        cwd=repo,
        capture_output=True,
        env={**os.environ, "LANGUAGE": "de", "LANG": "C.UTF-8", "LC_ALL": ""},
        check=False,
    )
    return b"existiert nicht" in done.stderr


@needs_git
def test_git_in_another_language_still_tells_a_new_spec_from_a_failure(
    capsys: pytest.CaptureFixture[str], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's git speaks German: its words are not the ones a new spec is told by,
    so breaking asks git in the C locale (a new spec was exit 2 with a German line)."""
    if not _git_speaks_german(repo):
        pytest.skip("this git has no German messages")
    monkeypatch.setenv("LANGUAGE", "de")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    shutil.copy(REPO / "spec" / "pp_contract.yaml", repo / "spec" / "pp_contract.yaml")
    (repo / "pyproject.toml").write_text(
        '[tool.tpwire]\nspecs = ["spec/tp_control.yaml", "spec/pp_contract.yaml"]\n', "utf-8"
    )
    rc, out, err = run(capsys, "breaking")
    assert rc == 0, err
    assert "spec/pp_contract.yaml: new spec, not in HEAD, nothing to compare" in out
    rc, _, err = run(capsys, "breaking", "spec/tp_control.yaml", "--against", "HEAD~5:x.yaml")
    assert rc == 2 and "invalid object name 'HEAD~5'" in err, err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[project]\nname = 'x'\n", "no SPEC given"),
        ("[tool.tpwire]\nspecs = 'spec/x.yaml'\n", "specs must be a list of strings"),
        (
            "[tool.tpwire]\nspecs = ['a.yaml']\n[tool.tpwire.breaking]\nignore = ['NOPE']\n",
            "unknown rule 'NOPE'",
        ),
        ("[tool.tpwire\n", "cannot read"),
    ],
)
def test_config_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: str,
    message: str,
) -> None:
    (tmp_path / "pyproject.toml").write_text(config, "utf-8")
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "breaking")
    assert rc == 2 and message in err, err


# --- what passes (issue 29 item 7) ---------------------------------------------------------


def _bumped(path: Path) -> Path:
    text = path.read_text("utf-8")
    assert text.count("    id: 1\n    version: 1") == 1
    path.write_text(text.replace("    id: 1\n    version: 1", "    id: 1\n    version: 2"))
    return path


def test_the_policy_message_says_what_passes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The policy finding named "bump ... or --allow", but a bump alone fails (the bump is
    MESSAGE_VERSION_CHANGED (both)) and so does a bump with --allow of the rule: each
    combination the message names passes, as named, and the summary names the --allow set."""
    new, _ = tour_spec(tmp_path)
    rc, out, err = run(capsys, "breaking", new, "--against", TP)
    assert rc == 1
    policy = next(ln for ln in out.splitlines() if "BREAKING_WITHOUT_VERSION_BUMP" in ln)
    assert (
        "Infer breaks (REQUIRED_FIELD_ADDED) but its version stays 1; a deliberate break passes "
        "with Infer.version bumped (and tp_envelope_version with it) and --allow "
        "REQUIRED_FIELD_ADDED --allow MESSAGE_VERSION_CHANGED (the bump is a finding too), or "
        "with --allow REQUIRED_FIELD_ADDED and the version kept" in policy
    ), policy
    assert "or --allow the rules" not in policy
    assert err.strip() == (
        "tpwire breaking: 2 breaking findings; to accept them as a deliberate break: "
        "--allow REQUIRED_FIELD_ADDED"
    )
    # the two ways the message names pass
    rc, out, err = run(capsys, "breaking", new, "--against", TP, "--allow", "REQUIRED_FIELD_ADDED")
    assert rc == 0, out + err
    bumped = _bumped(new)
    allow = ["--allow", "REQUIRED_FIELD_ADDED", "--allow", "MESSAGE_VERSION_CHANGED"]
    rc, out, err = run(capsys, "breaking", bumped, "--against", TP, *allow)
    assert rc == 0, out + err
    # a bump alone, or with only the finding allowed, does not; the summary says what would
    rc, _, err = run(capsys, "breaking", bumped, "--against", TP)
    assert rc == 1
    assert err.strip().endswith("--allow MESSAGE_VERSION_CHANGED --allow REQUIRED_FIELD_ADDED"), err
    rc, _, err = run(capsys, "breaking", bumped, "--against", TP, "--allow", "REQUIRED_FIELD_ADDED")
    assert rc == 1
    assert err.strip() == (
        "tpwire breaking: 1 breaking finding, 1 allowed; to accept it as a deliberate break: "
        "--allow MESSAGE_VERSION_CHANGED"
    ), err


def test_the_named_allow_set_passes_for_every_corpus_case() -> None:
    """``breaking.to_accept`` names rules that, allowed, leave no finding, on every case of the
    evolution corpus (the stderr summary prints them)."""
    from test_evolution import CASES

    seen = 0
    for case in CASES:
        report = breaking.compare_texts(case.old, case.new, "old.yaml", "new.yaml")
        rules = breaking.to_accept([report])
        assert "BREAKING_WITHOUT_VERSION_BUMP" not in rules
        again = breaking.compare_texts(case.old, case.new, "old.yaml", "new.yaml", rules)
        assert again.findings == (), case.id
        seen += bool(report.findings)
    assert seen > 50


@pytest.mark.parametrize(
    ("rule", "hint"),
    [
        ("NOPE", "the nearest known rule id is "),
        ("FIELD_ADDD", "did you mean FIELD_ADDED?"),
        ("required_field_added", "did you mean REQUIRED_FIELD_ADDED?"),
        ("VERSION", "did you mean "),
        ("BUMP", "did you mean BREAKING_WITHOUT_VERSION_BUMP?"),
    ],
)
def test_an_unknown_allow_names_the_nearest_rule_ids(
    capsys: pytest.CaptureFixture[str], rule: str, hint: str
) -> None:
    rc, out, err = run(capsys, "breaking", TP, "--against", TP, "--allow", rule)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tpwire breaking: unknown rule {rule!r}; {hint}"), err
    named = re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", lines[0].split(";", 1)[1])
    assert named and all(n in breaking.RULES for n in named if n != rule), lines
    assert f"tpwire breaking --list-rules lists all {len(breaking.RULES)}" in lines[0]
    if rule == "VERSION":
        assert {"MESSAGE_VERSION_CHANGED", "BREAKING_WITHOUT_VERSION_BUMP"} <= set(named), err
