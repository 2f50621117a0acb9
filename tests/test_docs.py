"""The operator-manual tables (``tpwire docs``) and splicing them into a markdown file.

The tables are parsed as markdown (rows split on unescaped pipes) and compared with the
user's "envelope schema v1" table, the copy of the operator manual kept under
tests/fixtures/. Splice tests work on a tmp copy of that manual with markers inserted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tpwire.cli import main
from tpwire.codegen import compiler, render

REPO = Path(__file__).resolve().parents[1]
TP_SPEC = REPO / "spec" / "tp_control.yaml"
MANUAL = Path(__file__).parent / "fixtures" / "refs-20-message-framing-versioning.md"
SPLICE_ERROR_RE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error\[splice\]: \S")

BEGIN = "<!-- tpwire:begin tp_control -->"
END = "<!-- tpwire:end tp_control -->"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# --- markdown table parsing ----------------------------------------------------------------------


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, str]]
    line: int  # 1-based line of the header row


def _cells(line: str) -> list[str]:
    body = line.strip()
    assert body.startswith("|") and body.endswith("|"), line
    parts = re.split(r"(?<!\\)\|", body[1:-1])
    return [p.strip().replace("\\|", "|") for p in parts]


def _uncode(cell: str) -> str:
    return cell[1:-1] if len(cell) >= 2 and cell[0] == cell[-1] == "`" else cell


def tables(markdown: str) -> list[Table]:
    """Every pipe table in ``markdown``: header row, separator row, body rows."""
    out: list[Table] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        if (
            lines[i].startswith("|")
            and i + 1 < len(lines)
            and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip())
        ):
            columns = _cells(lines[i])
            start = i
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = _cells(lines[i])
                assert len(cells) == len(columns), f"line {i + 1}: {lines[i]!r}"
                rows.append(dict(zip(columns, cells, strict=True)))
                i += 1
            out.append(Table(columns, rows, start + 1))
        else:
            i += 1
    return out


def table_with(markdown: str, *columns: str) -> Table:
    found = [t for t in tables(markdown) if t.columns[: len(columns)] == list(columns)]
    assert len(found) == 1, [t.columns for t in tables(markdown)]
    return found[0]


@pytest.fixture(scope="module")
def tp_tables() -> str:
    return render.render_tables(compiler.protocol_ir(TP_SPEC))


def test_table_parser_handles_escaped_pipes() -> None:
    (t,) = tables("| a | b |\n|---|---|\n| `x \\| None` | y |\n")
    assert t.rows == [{"a": "`x | None`", "b": "y"}]


# --- the generated tables of tp_control ------------------------------------------------------------

HEADER_REQUIRED_WHEN = {
    "action": "always",
    "call_id": "always",
    "chunk_index": "action == TPAction.INFER",
    "cache_epoch": "always",
    "control_epoch": "always",
}

V1 = "tp_plan == TPPlan.v1_generator_only"

#: The envelope schema v1 payload, in spec order, with each field's required_when.
PAYLOAD_REQUIRED_WHEN = {
    "tp_plan": "always",
    "tp_envelope_version": V1,
    "height": V1,
    "width": V1,
    "current_start_frame": V1,
    "init_cache": V1,
    "manage_cache": V1,
    "tp_reset_kv_cache": V1,
    "tp_reset_crossattn_cache": V1,
    "conditioning_embeds_updated": V1,
    "kv_cache_attention_bias": V1,
    "tp_do_kv_recompute": V1,
    "tp_num_denoise_steps": V1,
    "tp_expected_generator_calls": V1,
    "denoising_step_list": V1,
    "latents": V1,
    "conditioning_embeds": V1,
    "context_frames_override": "tp_do_kv_recompute == True",
    "base_seed": V1,
    "video": f"must be absent when {V1}",
}


def _header_table(markdown: str) -> Table:
    return table_with(markdown, "field", "type", "required_when", "why")


def _payload_table(markdown: str) -> Table:
    return table_with(markdown, "field", "type", "required_when", "constraints")


def test_header_table_rows(tp_tables: str) -> None:
    t = _header_table(tp_tables)
    fields = [_uncode(r["field"]) for r in t.rows]
    assert all(f.startswith("header.") for f in fields)
    got = {
        f.removeprefix("header."): _uncode(r["required_when"])
        for f, r in zip(fields, t.rows, strict=True)
    }
    assert got == HEADER_REQUIRED_WHEN
    assert len(fields) == len(set(fields)) == 5
    types = {
        f.removeprefix("header."): _uncode(r["type"]) for f, r in zip(fields, t.rows, strict=True)
    }
    assert types["action"] == "TPAction"
    assert types["call_id"] == types["chunk_index"] == "int"


def test_payload_table_rows(tp_tables: str) -> None:
    t = _payload_table(tp_tables)
    fields = [_uncode(r["field"]) for r in t.rows]
    assert fields == list(PAYLOAD_REQUIRED_WHEN)  # every field, in spec order, once
    for field, row in zip(fields, t.rows, strict=True):
        cell = _uncode(row["required_when"])
        want = PAYLOAD_REQUIRED_WHEN[field]
        # context_frames_override also says "None unless ..." after its condition
        assert cell.split("; ")[0] == want, (field, cell)
        assert row["why"], field
        assert row["fail-fast check location"], field


def test_twenty_five_field_rows(tp_tables: str) -> None:
    assert len(_header_table(tp_tables).rows) + len(_payload_table(tp_tables).rows) == 25


def test_payload_types_and_constraints(tp_tables: str) -> None:
    rows = {_uncode(r["field"]): r for r in _payload_table(tp_tables).rows}
    assert _uncode(rows["tp_plan"]["type"]) == "TPPlan"
    assert _uncode(rows["tp_num_denoise_steps"]["type"]) == "int"
    assert _uncode(rows["kv_cache_attention_bias"]["type"]) == "float"
    assert _uncode(rows["denoising_step_list"]["type"]) == "tensor[int64][S]"
    assert _uncode(rows["latents"]["type"]) == "tensor[bfloat16/float16][1, F, C, LH, LW]"
    # the escaped pipe of an Optional type survives the table
    assert _uncode(rows["context_frames_override"]["type"]).endswith(" | None")
    assert (
        "None unless tp_do_kv_recompute == True" in rows["context_frames_override"]["required_when"]
    )
    assert rows["tp_num_denoise_steps"]["constraints"] == "1 <= tp_num_denoise_steps <= 64"
    assert rows["tp_expected_generator_calls"]["constraints"] == (
        "1 <= tp_expected_generator_calls <= 65; "
        "derived: tp_expected_generator_calls == int(tp_do_kv_recompute) + tp_num_denoise_steps"
    )
    assert rows["tp_envelope_version"]["constraints"] == "tp_envelope_version == 1"
    assert rows["height"]["constraints"] == "8 <= height <= 4096"
    assert "finite" in rows["kv_cache_attention_bias"]["constraints"]
    assert rows["video"]["FM"] == "FM-15"
    assert rows["context_frames_override"]["FM"] == "FM-06"


LOCKSTEP_INVARIANTS = {
    "tp_num_denoise_steps == len(denoising_step_list)": "FM-02",
    "tp_do_kv_recompute == (context_frames_override is not None)": "FM-06",
}


def test_lockstep_invariants(tp_tables: str) -> None:
    t = table_with(tp_tables, "id", "must hold", "message", "FM")
    got = {_uncode(r["must hold"]): r["FM"] for r in t.rows}
    for expr, fm in LOCKSTEP_INVARIANTS.items():
        assert got.get(expr) == fm, expr
    assert all(r["message"] for r in t.rows)
    # the third is the expected-calls formula: a derived field, computed when left out and
    # checked by validate, documented on its row
    row = {_uncode(r["field"]): r for r in _payload_table(tp_tables).rows}[
        "tp_expected_generator_calls"
    ]
    assert (
        "derived: tp_expected_generator_calls == int(tp_do_kv_recompute) + tp_num_denoise_steps"
        in row["constraints"]
    )
    assert row["FM"] == "FM-02"


def _manual_v1_table() -> Table:
    text = MANUAL.read_text("utf-8")
    section = text[text.index("**Minimal payload schema v1") :]
    return table_with(section, "Field", "Type", "Required when")


def _normalise(cond: str) -> str:
    """``tp_plan == TPPlan.v1_generator_only`` -> ``tp_plan=v1_generator_only``."""
    m = re.fullmatch(r"(\w+) == (?:[A-Z]\w*\.)?(\w+)", cond)
    return f"{m[1]}={m[2]}" if m else cond


def test_tables_agree_with_the_user_manual(tp_tables: str) -> None:
    """Every field of the manual's v1 table is in the generated table, same condition."""
    generated = {_uncode(r["field"]): r for r in _payload_table(tp_tables).rows}
    seen = 0
    for row in _manual_v1_table().rows:
        names = re.findall(r"`(\w+)`", row["Field"])
        cond = _uncode(row["Required when"])
        for name in names:
            seen += 1
            assert name in generated, name
            got = _uncode(generated[name]["required_when"])
            if "**forbidden**" in row["Type"]:
                assert got == f"must be absent when {V1}", name
            elif re.fullmatch(r"\w+=\w+", cond):
                assert _normalise(got.split("; ")[0]) == cond, (name, got, cond)
            elif cond.startswith("always"):
                assert got == "always", name
            else:  # "v1 bringup: every chunk": required under the v1 plan
                assert got == V1, (name, got, cond)
    assert seen == 16  # height and width share a row in the manual


# --- splice --------------------------------------------------------------------------------------

ANCHOR = "#### Worked example"


def _with_markers(text: str, begin: str = BEGIN, end: str = END, body: str = "") -> str:
    """The manual with an empty marked block right after the worked-example heading."""
    start = text.index(ANCHOR)
    eol = text.index("\n", start) + 1
    return text[:eol] + "\n" + begin + "\n" + body + end + "\n" + text[eol:]


@pytest.fixture
def manual(tmp_path: Path) -> Path:
    target = tmp_path / "operator-manual.md"
    target.write_bytes(_with_markers(MANUAL.read_text("utf-8")).encode("utf-8"))
    return target


def _split(data: bytes, begin: str = BEGIN, end: str = END) -> tuple[bytes, bytes, bytes]:
    b, e = begin.encode(), end.encode()
    i = data.index(b) + len(b)
    j = data.index(e)
    return data[:i], data[i:j], data[j:]


def test_splice_replaces_only_the_block(
    capsys: pytest.CaptureFixture[str], manual: Path, tp_tables: str
) -> None:
    before = manual.read_bytes()
    rc, out, err = run(capsys, "docs", TP_SPEC, "--splice", manual)
    assert (rc, err) == (0, "")
    assert out == f"{manual}: block 'tp_control' updated\n"
    after = manual.read_bytes()
    head0, body0, tail0 = _split(before)
    head1, body1, tail1 = _split(after)
    assert head1 == head0 and tail1 == tail0  # everything outside the markers, byte for byte
    assert body0 == b"\n"
    assert body1 == b"\n" + tp_tables.encode("utf-8")
    # the spliced tables are still the tables (parseable, all 25 rows)
    assert len(_payload_table(body1.decode()).rows) == 20


def test_splice_is_idempotent(capsys: pytest.CaptureFixture[str], manual: Path) -> None:
    assert run(capsys, "docs", TP_SPEC, "--splice", manual)[0] == 0
    once = manual.read_bytes()
    mtime = manual.stat().st_mtime_ns
    rc, out, _ = run(capsys, "docs", TP_SPEC, "--splice", manual)
    assert rc == 0
    assert "up to date" in out
    assert manual.read_bytes() == once
    assert manual.stat().st_mtime_ns == mtime


def test_splice_check_fresh_and_hand_edited(
    capsys: pytest.CaptureFixture[str], manual: Path
) -> None:
    rc, _, _ = run(capsys, "docs", TP_SPEC, "--splice", manual, "--check")
    assert rc == 1, "an empty block is stale"
    assert run(capsys, "docs", TP_SPEC, "--splice", manual)[0] == 0
    rc, out, _ = run(capsys, "docs", TP_SPEC, "--splice", manual, "--check")
    assert rc == 0 and "up to date" in out
    # edit one cell inside the block by hand
    edited = manual.read_text("utf-8").replace(
        "| 1 <= tp_num_denoise_steps <= 64 |", "| 1 <= tp_num_denoise_steps <= 99 |", 1
    )
    assert edited != manual.read_text("utf-8")
    manual.write_text(edited, "utf-8")
    before = manual.read_bytes()
    rc, out, err = run(capsys, "docs", TP_SPEC, "--splice", manual, "--check")
    assert rc == 1
    assert "stale" in err
    assert manual.read_bytes() == before  # --check never writes


def _lines_of(text: str, needle: str) -> list[int]:
    return [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]


def _assert_splice_error(err: str, target: Path, line: int | None = None) -> None:
    (first, *_rest) = err.splitlines()
    m = SPLICE_ERROR_RE.match(first)
    assert m, err
    assert m["file"] == str(target)
    if line is not None:
        assert int(m["line"]) == line, err


def test_splice_missing_markers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "manual.md"
    target.write_bytes(MANUAL.read_bytes())
    rc, out, err = run(capsys, "docs", TP_SPEC, "--splice", target)
    assert rc == 1 and out == ""
    _assert_splice_error(err, target)
    assert target.read_bytes() == MANUAL.read_bytes()


def test_splice_only_begin_marker(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "manual.md"
    target.write_text(_with_markers(MANUAL.read_text("utf-8"), end=""), "utf-8")
    before = target.read_bytes()
    rc, _, err = run(capsys, "docs", TP_SPEC, "--splice", target)
    assert rc == 1
    _assert_splice_error(err, target)
    assert target.read_bytes() == before


def test_splice_duplicated_begin_marker(capsys: pytest.CaptureFixture[str], manual: Path) -> None:
    text = manual.read_text("utf-8") + f"\n{BEGIN}\n"
    manual.write_text(text, "utf-8")
    rc, _, err = run(capsys, "docs", TP_SPEC, "--splice", manual)
    assert rc == 1
    _assert_splice_error(err, manual, line=_lines_of(text, BEGIN)[1])
    assert manual.read_text("utf-8") == text


def test_splice_duplicated_block(capsys: pytest.CaptureFixture[str], manual: Path) -> None:
    text = manual.read_text("utf-8") + f"\n{BEGIN}\n{END}\n"
    manual.write_text(text, "utf-8")
    rc, _, err = run(capsys, "docs", TP_SPEC, "--splice", manual, "--check")
    assert rc == 1
    _assert_splice_error(err, manual, line=_lines_of(text, BEGIN)[1])
    assert manual.read_text("utf-8") == text


def test_splice_duplicated_end_marker(capsys: pytest.CaptureFixture[str], manual: Path) -> None:
    text = manual.read_text("utf-8") + f"\n{END}\n"
    manual.write_text(text, "utf-8")
    rc, _, err = run(capsys, "docs", TP_SPEC, "--splice", manual)
    assert rc == 1
    _assert_splice_error(err, manual)
    assert manual.read_text("utf-8") == text


def test_splice_duplicated_end_marker_is_located(
    capsys: pytest.CaptureFixture[str], manual: Path
) -> None:
    text = manual.read_text("utf-8") + f"\n{END}\n"
    manual.write_text(text, "utf-8")
    _, _, err = run(capsys, "docs", TP_SPEC, "--splice", manual)
    _assert_splice_error(err, manual, line=_lines_of(text, END)[1])


def test_splice_end_before_begin(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "manual.md"
    text = _with_markers(MANUAL.read_text("utf-8"), begin=END, end=BEGIN)
    target.write_text(text, "utf-8")
    rc, _, err = run(capsys, "docs", TP_SPEC, "--splice", target)
    assert rc == 1
    _assert_splice_error(err, target, line=_lines_of(text, END)[0])
    assert "comes before" in err
    assert target.read_text("utf-8") == text


def test_splice_name_selects_the_block(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tp_tables: str
) -> None:
    other_begin, other_end = (
        "<!-- tpwire:begin tp_envelope_v1 -->",
        "<!-- tpwire:end tp_envelope_v1 -->",
    )
    text = _with_markers(MANUAL.read_text("utf-8"), other_begin, other_end)
    # a second, differently named block elsewhere stays as it is
    text += f"\n{BEGIN}\nkeep me\n{END}\n"
    target = tmp_path / "manual.md"
    target.write_text(text, "utf-8")
    rc, out, _ = run(capsys, "docs", TP_SPEC, "--splice", target, "--name", "tp_envelope_v1")
    assert rc == 0
    assert "'tp_envelope_v1' updated" in out
    data = target.read_bytes()
    head, body, tail = _split(data, other_begin, other_end)
    assert body == b"\n" + tp_tables.encode()
    assert tail.endswith(f"\n{BEGIN}\nkeep me\n{END}\n".encode())
    assert _split(text.encode(), other_begin, other_end)[0] == head
    rc, _, _ = run(
        capsys, "docs", TP_SPEC, "--splice", target, "--name", "tp_envelope_v1", "--check"
    )
    assert rc == 0
    # the default name (the protocol's) addresses the other block
    rc, _, _ = run(capsys, "docs", TP_SPEC, "--splice", target, "--check")
    assert rc == 1
    rc, _, err = run(capsys, "docs", TP_SPEC, "--splice", target, "--name", "nope")
    assert rc == 1
    _assert_splice_error(err, target)


def test_splice_missing_target_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "absent.md"
    rc, out, err = run(capsys, "docs", TP_SPEC, "--splice", target)
    assert rc == 1 and out == ""
    assert str(target) in err and "Traceback" not in err
    assert not target.exists()


def test_splice_missing_target_is_located(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "absent.md"
    _, _, err = run(capsys, "docs", TP_SPEC, "--splice", target)
    assert re.match(rf"^{re.escape(str(target))}:\d+:\d+: error\[[a-z0-9-]+\]: ", err), err


def test_splice_non_utf8_target_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "latin1.md"
    data = f"caf\xe9\n{BEGIN}\n{END}\n".encode("latin-1")
    target.write_bytes(data)
    rc, _, err = run(capsys, "docs", TP_SPEC, "--splice", target)
    assert target.read_bytes() == data
    assert "internal error" not in err
    assert rc == 1


def test_splice_keeps_crlf_outside_the_block(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "crlf.md"
    data = _with_markers(MANUAL.read_text("utf-8")).replace("\n", "\r\n").encode("utf-8")
    target.write_bytes(data)
    assert run(capsys, "docs", TP_SPEC, "--splice", target)[0] == 0
    head0, _, tail0 = _split(data)
    head1, _, tail1 = _split(target.read_bytes())
    assert head1 == head0
    assert tail1 == tail0


# --- the checked-in pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tp_control", "pp_contract"])
def test_checked_in_page_is_the_page_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(REPO)
    page = (REPO / "docs" / "spec" / f"{name}.md").read_text("utf-8")
    assert page.count(f"<!-- tpwire:begin {name} -->") == 1
    assert page.count(f"<!-- tpwire:end {name} -->") == 1
    assert page.index(f"<!-- tpwire:begin {name} -->") < page.index(f"<!-- tpwire:end {name} -->")
    rc, out, err = run(capsys, "docs", f"spec/{name}.yaml", "--page")
    assert (rc, err) == (0, "")
    assert out == page
    # the block inside the page is exactly what `docs` prints
    rc, tables_out, _ = run(capsys, "docs", f"spec/{name}.yaml")
    assert rc == 0
    _, body, _ = _split(
        page.encode(), f"<!-- tpwire:begin {name} -->", f"<!-- tpwire:end {name} -->"
    )
    assert body == b"\n" + tables_out.encode()


@pytest.mark.parametrize("name", ["tp_control", "pp_contract"])
def test_checked_in_page_splice_check_is_clean(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.chdir(REPO)
    copy = tmp_path / f"{name}.md"
    copy.write_bytes((REPO / "docs" / "spec" / f"{name}.md").read_bytes())
    rc, out, _ = run(capsys, "docs", f"spec/{name}.yaml", "--splice", copy, "--check")
    assert rc == 0 and "up to date" in out


# -- the README and docs say what the code does now (issue 29 item 8) ----------------------

README = REPO / "README.md"


def _documented_signature(text: str, call: str) -> tuple[list[str], dict[str, str]]:
    """The parameters of the first ```call(...)``` the text documents: positional names and
    ``name=default`` pairs, as written (the call may wrap over lines)."""
    start = text.index(f"`{call}(")
    body = text[start + len(call) + 2 : text.index(")`", start)]
    names: list[str] = []
    defaults: dict[str, str] = {}
    for part in (p.strip() for p in " ".join(body.split()).split(",")):
        name, eq, default = part.partition("=")
        names.append(name)
        if eq:
            defaults[name] = default
    return names, defaults


@pytest.mark.parametrize("cls_name", ["BroadcastChannel"])
def test_the_readme_channel_signature_is_the_real_one(cls_name: str) -> None:
    import inspect

    from tpwire.runtime import channel

    names, defaults = _documented_signature(
        README.read_text(encoding="utf-8"), f"tpwire.runtime.channel.{cls_name}"
    )
    params = list(inspect.signature(getattr(channel, cls_name)).parameters.values())
    assert names == [p.name for p in params], "README's parameter list differs from the code"
    for p in params:
        if p.default is not inspect.Parameter.empty:
            assert defaults.get(p.name) == repr(p.default).replace("'", '"'), p.name
    # the knobs: ChannelOptions' fields, documented with their defaults
    from tpwire.runtime.options import ChannelKnobs, ChannelOptions

    names, defaults = _documented_signature(
        README.read_text(encoding="utf-8"), "tpwire.runtime.options.ChannelOptions"
    )
    fields = list(inspect.signature(ChannelOptions).parameters.values())
    assert names == [f.name for f in fields], "README's ChannelOptions differs from the code"
    assert set(ChannelKnobs.__annotations__) == {f.name for f in fields}
    for f in fields:
        assert defaults.get(f.name) == repr(f.default).replace("'", '"'), f.name


#: phrases that announce a feature as missing or planned
_MISSING = re.compile(
    r"future work|not a feature|(?:there is|there are) no \w+(?: \w+)? yet|later issue"
)


@pytest.mark.parametrize("page", ["docs/evolution.md"])
def test_the_docs_name_no_missing_feature(page: str) -> None:
    text = (REPO / page).read_text(encoding="utf-8")
    found = [m.group(0) for m in _MISSING.finditer(" ".join(text.split()))]
    assert not found, f"{page} announces as missing: {found}"


def test_readme_installs_from_what_exists() -> None:
    """tpwire is not on PyPI: the README installs from a checkout, a git URL or a wheel."""
    text = README.read_text(encoding="utf-8")
    install = text[text.index("## Install") : text.index("\n## ", text.index("## Install") + 1)]
    from_an_index = re.compile(r"^\$ pip install '?tpwire(?:\[\w+(?:,\w+)*\])?'?\s*(?:#|$)", re.M)
    assert not from_an_index.search(install), "an install from an index tpwire is not on"
    for form in ("pip install .", "python -m build", "git+"):
        assert form in install, form
