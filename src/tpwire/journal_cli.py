"""``tpwire journal show|diff|trace`` and ``tpwire replay``: read envelope journals
(docs/journal.md). Bad input is one line per problem with its file offset, never a
traceback; exit 1 on a divergence or a refused envelope, 2 when nothing usable was given."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tpwire.runtime.escape import printable

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _err(line: str) -> None:
    print(f"tpwire: {line}", file=sys.stderr)


class _BadSpec(Exception):
    """``--spec`` does not compile (its errors are printed)."""


def _protocol(spec: str | None) -> Any:
    """The bindings named by ``--spec`` (compiled in-process), or None (look them up).
    A spec that does not compile is unusable input (exit 2), never exit 1, which says the
    journals differ or were refused."""
    if spec is None:
        return None
    from tpwire.codegen import compile as compile_spec
    from tpwire.codegen.errors import SpecErrors

    try:
        return compile_spec(Path(spec))
    except SpecErrors as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        n = len(exc.errors)
        _err(f"--spec {printable(spec)}: {n} error{'s' if n != 1 else ''}")
        raise _BadSpec from None


def _import_generated(out: Path, root: Path, name: str) -> ModuleType | None:
    """The module ``name`` that ``gen`` wrote into the package folder ``out`` of the
    project at ``root``: imported by its package name (``preview_wire.preview``) with the
    root on the path, else from its file (a folder that is no package name)."""
    path = out / f"{name}.py"
    if not path.is_file():
        return None
    try:
        parts = out.relative_to(root).parts
    except ValueError:
        parts = ()
    if parts and all(p.isidentifier() for p in parts):
        dotted = ".".join((*parts, name))
        sys.path.insert(0, str(root))
        try:
            module = importlib.import_module(dotted)
        except ImportError:
            module = None
        finally:
            sys.path.remove(str(root))
        if module is not None and Path(module.__file__ or "").resolve() == path.resolve():
            return module
    spec = importlib.util.spec_from_file_location(f"tpwire_project_bindings.{name}", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[spec.name]
        raise
    return module


def _compiled_from_specs(specs: list[Path], name: str) -> Any:
    """The bindings of protocol ``name`` compiled in-process from the first of ``specs``
    that defines it (needs the compiler extra; None without it or without such a spec)."""
    try:
        import yaml

        from tpwire.codegen import compile as compile_spec
        from tpwire.codegen.errors import SpecErrors
    except ImportError:  # a runtime-only install (MissingExtra is one)
        return None
    for spec in specs:
        try:
            doc = yaml.safe_load(spec.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and doc.get("protocol") == name:
            try:
                return compile_spec(spec)
            except SpecErrors as exc:
                n = len(exc.errors)
                raise _BadProjectSpec(
                    f"its {spec.name} does not compile: {n} error{'s' if n != 1 else ''}"
                ) from None
    return None


class _BadProjectSpec(Exception):
    """The project's spec of a journal's protocol does not compile (its message says so)."""


def _project_protocol(opening: dict[str, Any]) -> tuple[Any, str]:
    """The bindings of a journal's protocol where this build has no generated module of
    it: the current project's (the nearest ``pyproject.toml`` with ``[tool.tpwire]``, as
    ``tpwire gen`` finds it): the module ``gen`` wrote into its ``out``, else one of its
    ``specs`` compiled in-process. Returns (bindings or None, where they were looked for,
    for the line that asks for ``--spec``)."""
    from tpwire import config as project
    from tpwire.runtime.bindings import Bindings

    name = opening.get("protocol")
    if not isinstance(name, str) or not name.isidentifier():
        return None, ""
    try:
        cfg = project.find()
    except project.ConfigError as exc:
        return None, f" (the project's table is unreadable: {exc})"
    if cfg is None:
        return None, ""
    where = f" nor of the project {cfg.path} [tool.tpwire]"
    try:
        module = _import_generated(cfg.out, cfg.root, name) if cfg.out is not None else None
        if module is None:
            module = _compiled_from_specs(cfg.spec_paths(), name)
    except _BadProjectSpec as exc:
        return None, f"{where} ({exc})"
    except Exception as exc:  # a module that fails to import says why, in one line
        return None, f"{where} (its module of {name!r}: {type(exc).__name__}: {exc})"
    found = getattr(module, "BINDINGS", None)
    if isinstance(found, Bindings) and found.protocol == name:
        return found, where
    return None, where


def _missing(paths: list[str]) -> list[str]:
    """The paths that name nothing (a path that cannot be reached, a link loop, is read and
    reported by the reader with its reason)."""
    out = []
    for p in paths:
        try:
            os.lstat(p)
        except FileNotFoundError:
            out.append(p)
        except (OSError, ValueError):
            pass
    return out


def _said_missing(paths: list[str], what: str) -> bool:
    """One line per path that names nothing ("PATH: no such file"); whether there was one."""
    missing = _missing(paths)
    for p in missing:
        _err(f"{printable(p)}: {what}")
    return bool(missing)


def _unread(journals: list[Any]) -> list[Any]:
    """The journals of which no record could be read, each problem said in one line; the
    others are returned."""
    for j in journals:
        if not j.records:
            for p in j.problems[:3] or [f"{printable(j.name)}: no record"]:
                _err(f"{p}: nothing read from it")  # a Problem prints itself escaped
    return [j for j in journals if j.records]


#: the longest string from a journal that ``show`` prints whole (escaped); longer ones are cut
SHOW_LIMIT = 1000


def _record_row(rec: Any, roles: dict[str, Any], *, everything: bool = False) -> dict[str, Any]:
    """A record as a row: the ids by the spec's role names, then what the record holds
    (``everything``: the manifest and each input field's digest too, for ``--format json``).
    Metadata keys this build does not know (a later writer's) go under ``extra``, so no key
    read from a file takes the place of a row's own."""
    from tpwire.runtime import journal as jr
    from tpwire.runtime.journal_format import SCHEMAS

    meta = rec.meta
    row: dict[str, Any] = {"offset": rec.offset, "kind": rec.kind_name, "bytes": rec.nbytes}
    for role, value in (("sequence", rec.seq), ("chunk", rec.chunk), ("epoch", rec.epoch)):
        name = roles.get(role) or role
        if value is not None:
            row[name if name not in row else role] = value
    if rec.kind == jr.ENVELOPE:
        info = rec.info
        row.update(
            action=info.action,
            dir=info.dir,
            state=info.state,
            frame1=info.frame1_nbytes,
            frame1_digest=info.frame1_digest,
            full=rec.full,
        )
        for key in ("reason", "error", "frame0_error", "dropped_before"):
            if meta.get(key):
                row[key] = meta[key]
        if everything:
            row["manifest"] = meta.get("manifest")
            row["segments"] = meta.get("segments")
            row["t"] = meta.get("t")
    else:
        schema = SCHEMAS[rec.kind]
        for k, v in meta.items():
            if k not in schema:
                continue
            if everything or k not in ("t", "fields"):
                row[k if k not in row else f"meta.{k}"] = v
        if isinstance(meta.get("fields"), dict) and not everything:
            row["fields"] = len(meta["fields"])  # each field's digest: --format json
    extra = {k: v for k, v in meta.items() if k not in SCHEMAS[rec.kind]}
    if extra:
        row["extra"] = extra
    return row


_ENVELOPE_COLUMNS = ("action", "dir", "state", "frame1", "frame1_digest", "full")
_ENVELOPE_TAIL = ("reason", "error", "frame0_error", "dropped_before", "extra")


def _row_text(row: dict[str, Any]) -> str:
    """A row on one line: every string read from the journal escaped (a newline or an
    escape sequence in a reason shows as ``\\n``, ``\\x1b``: it cannot forge a row)."""
    kind = row["kind"]
    fixed = {"offset", "kind", "bytes"}
    if kind == "ENVELOPE":
        ids = " ".join(
            f"{_text(k)}={_compact(v)}"
            for k, v in row.items()
            if k not in fixed and k not in _ENVELOPE_COLUMNS and k not in _ENVELOPE_TAIL
        )
        text = (
            f"@{row['offset']:<8} {_text(row['dir'])} {_text(row['action'] or '?'):<9} {ids} "
            f"state={_text(row['state'])} frame1={row['frame1']}B "
            f"digest={_text(row['frame1_digest'])}" + (" +bytes" if row["full"] else "")
        )
        for key in _ENVELOPE_TAIL:
            if key in row:
                value = row[key]
                text += f" {key}='{_text(value)}'" if isinstance(value, str) else (
                    f" {key}={_compact(value)}")  # fmt: skip
        return text
    rest = " ".join(f"{_text(k)}={_compact(v)}" for k, v in row.items() if k not in fixed)
    return f"@{row['offset']:<8} {kind.lower():<8} {rest}"


def _text(v: Any) -> str:
    return printable(v, SHOW_LIMIT)


def _compact(v: Any) -> str:
    """A metadata value on one line, its strings escaped (nested at most
    ``MAX_META_DEPTH`` deep: the reader refuses deeper metadata)."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{_text(k)}:{_compact(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_compact(x) for x in v) + "]"
    return _text(v)


def cmd_show(args: argparse.Namespace) -> int:
    from tpwire.runtime import journal as jr

    if _said_missing(args.files, "no such file"):
        return EXIT_USAGE
    bad = False
    docs = []
    files = jr.journal_files(args.files)
    if not files:  # a folder with no journal in it: never an empty, successful listing
        _err("no journal files (*.tpj) in " + " ".join(map(printable, args.files)))
        return EXIT_USAGE
    for path in files:
        found = jr.scan(path)
        opening = found.opening or {}
        roles = opening.get("roles") or {}
        rows = [_record_row(r, roles, everything=args.format == "json") for r in found.records]
        problems = [
            {"offset": p.offset, "message": p.message, "torn": p.torn} for p in found.problems
        ]
        bad = bad or bool(problems)
        if args.format == "json":  # json.dumps escapes every control and non-ASCII character
            docs.append({
                "file": str(path), "records": rows, "problems": problems,
                "problems_unlisted": found.unlisted,
            })  # fmt: skip
            continue
        print(f"{printable(path)}: {len(rows)} records, {found.problem_count} problem(s)")
        by_offset = sorted(
            [(r["offset"], 0, _row_text(r)) for r in rows]
            + [(p.offset, 1, f"@{p.offset:<8} PROBLEM: {p.message}") for p in found.problems]
        )
        for _, _, line in by_offset:
            print(f"  {line}")
        if found.unlisted:
            print(f"  ... {found.unlisted} more problem(s) not listed")
    if args.format == "json":
        print(json.dumps(docs, indent=1))
    return EXIT_FAIL if bad else EXIT_OK


#: a journal's stem past its channel: ``.rank1`` (broadcast), ``.rank0-peer1`` (p2p)
_RANK_PART = re.compile(r"\.rank\d+(?:-peer\d+)?$")


def _channel(journal: Any) -> str:
    """The channel a journal belongs to: its stem (protocol and tag) without the rank; ""
    for a journal not named by its rank (files named otherwise are compared together)."""
    stem = str(journal.name).rsplit("/", 1)[-1]
    return _RANK_PART.sub("", stem) if _RANK_PART.search(stem) else ""


def cmd_diff(args: argparse.Namespace) -> int:
    from tpwire.runtime.replay import bindings_for, load

    if _said_missing(args.paths, "no such file or folder"):
        return EXIT_USAGE
    journals = _unread(load(args.paths))
    # the ranks of one channel are compared with each other, never with another channel's
    # (a launcher's TPWIRE_JOURNAL puts every journaled channel of a process in one folder)
    channels: dict[str, list[Any]] = {}
    for j in journals:
        channels.setdefault(_channel(j), []).append(j)
    groups = [g for g in channels.values() if len(g) >= 2]
    if len(channels) > 1:
        for key, g in channels.items():
            if len(g) < 2:
                _err(f"{printable(key)}: the journal of one rank only ({printable(g[0].name)}); "
                     "not compared")  # fmt: skip
    if not groups:
        _err(f"journal diff needs the journals of at least two ranks, found {len(journals)}")
        return EXIT_USAGE
    try:
        protocol = _protocol(args.spec)
    except _BadSpec:
        return EXIT_USAGE
    status = EXIT_OK
    docs = []
    for group in groups:
        header = f"channel {printable(_channel(group[0]))}:" if len(channels) > 1 else None
        bindings = protocol
        if bindings is None:  # out of tree: the current project's bindings name the fields
            opening: dict[str, Any] = next((j.opening for j in group if j.opening), {})
            if bindings_for(opening) is None:
                bindings, _ = _project_protocol(opening)
        code, doc = _diff_channel(group, bindings, args.format, header)
        status = max(status, code)
        docs.append({"channel": _channel(group[0]), **doc} if len(channels) > 1 else doc)
    if args.format == "json":
        print(json.dumps(docs if len(channels) > 1 else docs[0], indent=1))
    return status


def _diff_channel(
    journals: list[Any], protocol: Any, fmt: str, header: str | None
) -> tuple[int, dict[str, Any]]:
    """``diff`` of one channel's journals: the exit status and the JSON document (the text
    is printed here)."""
    from tpwire.runtime.journal_diff import diff

    report = diff(journals, protocol)
    div = report.divergence
    code = EXIT_FAIL if div is not None or report.unread else EXIT_OK
    doc = {
        "journals": [j.name for j in journals],
        "compared": report.compared,
        "divergence": None if div is None else {
            "at": div.coordinate, "action": div.action, "differences": div.lines,
            "odd": div.odd,
        },
        "notes": report.notes,
        "unread": report.unread,
    }  # fmt: skip
    if fmt == "json":
        return code, doc
    if header is not None:
        print(header)
    names = ", ".join(printable(j.name) for j in journals)
    counts = ", ".join(str(len(j.envelopes())) for j in journals)
    print(f"journals: {names} ({counts} envelope records)")
    for note in report.notes:
        print(f"note: {note}")
    if div is None and report.unread:  # what could not be read was not compared
        print(
            f"incomplete: no divergence in what was read ({report.compared} envelopes agree "
            f"on every rank), but {report.unread} stretch(es) of the journals could not be "
            "read (notes above): what they held was not compared"
        )
    elif div is None:
        print(f"no divergence: {report.compared} envelopes agree on every rank")
    else:
        print(div.text())
        if div.odd:
            print(f"  differs: {', '.join(div.odd)}")
    return code, doc


def cmd_trace(args: argparse.Namespace) -> int:
    """``journal trace``: the journals as a trace-event file (runtime/journal_trace.py)."""
    from tpwire.runtime.journal_trace import dumps, trace
    from tpwire.runtime.replay import load

    if _said_missing(args.paths, "no such file or folder"):
        return EXIT_USAGE
    loaded = load(args.paths)
    if _one_of_the_files(args.output, loaded):  # the output would overwrite the evidence
        _err(f"{printable(args.output)}: is one of the journals read; name another file")
        return EXIT_USAGE
    journals = _unread(loaded)
    if not journals:
        _err("no journal records in " + " ".join(map(printable, args.paths)))
        return EXIT_USAGE
    doc = trace(journals)
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(dumps(doc))
    except OSError as exc:
        _err(f"{printable(args.output)}: cannot write: {exc.strerror or exc}")
        return EXIT_USAGE
    events = doc["traceEvents"]
    tracks = {(e["pid"], e["tid"]) for e in events}
    problems = sum(len(j.problems) for j in journals)
    tail = f"; {problems} unreadable stretch(es) marked" if problems else ""
    print(
        f"{printable(args.output)}: {len(tracks)} track(s), {len(events)} events from "
        f"{len(journals)} journal(s){tail}; open it in ui.perfetto.dev or chrome://tracing"
    )
    return EXIT_OK


def _one_of_the_files(path: str, journals: list[Any]) -> bool:
    """Whether ``path`` is one of the files ``journals`` were read from (a link to one, too)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False  # not there yet (or unreachable: the write says why)
    for j in journals:
        for f in j.files:
            try:
                if os.path.samestat(st, os.stat(f)):
                    return True
            except (OSError, ValueError):
                continue
    return False


def cmd_replay(args: argparse.Namespace) -> int:
    from tpwire.runtime.escape import printable
    from tpwire.runtime.replay import bindings_for, gaps, holds_start, load, replay

    if _said_missing(args.files, "no such file"):
        return EXIT_USAGE
    journals = _unread(load(args.files))
    if not journals:
        _err("no journal records in " + " ".join(map(printable, args.files)))
        return EXIT_USAGE
    try:
        protocol = _protocol(args.spec)  # once, not once per journal
    except _BadSpec:
        return EXIT_USAGE
    status = EXIT_OK
    for journal in journals:
        name = printable(journal.name)
        bindings = bindings_for(journal.opening, protocol)
        where = ""
        if bindings is None:  # out of tree: the current project's bindings
            bindings, where = _project_protocol(journal.opening)
        if bindings is None:
            _err(
                f"{name}: protocol {printable(repr(journal.opening.get('protocol')))} is not a "
                f"generated module of this build{printable(where)}; pass --spec SPEC"
            )
            status = EXIT_USAGE
            continue
        # where the journal is damaged or incomplete: each place with its offset and the
        # sequence ids that are not there; the replay goes on with what is readable
        holes = gaps(journal)
        for gap in holes:
            print(f"{name}: note: {printable(gap)}")
        for path, n in journal.unlisted.items():
            print(f"{name}: note: {printable(path)}: {n} more problem(s) not listed")
        envelopes = journal.envelopes()
        if envelopes and not holds_start(journal):
            first = envelopes[0]
            print(
                f"{name}: note: the journal starts after its stream did (the first file, "
                f"{printable(first.path)}, was not opened with the stream: retention removed "
                "the files before it, or they were not given)"
            )
        report = replay(journal, bindings, stop=not args.all)
        for note in report.notes:
            print(f"{name}: note: {printable(note)}")
        if args.verbose:
            for o in report.outcomes:
                mark = "refused" if o.refused else "ok"
                rep = "" if o.reproduced is None else (" reproduced" if o.reproduced else "")
                why = f": {printable(o.refused)}" if o.refused else ""
                print(f"  {printable(o.ids)} {printable(o.action)}: {mark}{rep}{why}")
        full = [o for o in report.outcomes if o.reproduced is not None]
        same = sum(1 for o in full if o.reproduced)
        first_refused = report.first_refused
        if first_refused is not None:
            print(
                f"{name}: REFUSED at {printable(first_refused.ids)} "
                f"({printable(first_refused.action)}, offset {first_refused.record.offset} of "
                f"{printable(first_refused.record.path)}): {printable(first_refused.refused)}"
            )
            status = max(status, EXIT_FAIL)
        n = len(report.outcomes)
        tail = (
            f"; {same} of {len(full)} full-mode envelopes reproduced bit for bit"
            if full
            else "; digest mode: frame 0 and ordering checked (record with mode 'full' to "
            "decode and reproduce frame 1)"
        )
        verdict = "accepted" if first_refused is None else f"{n - 1} accepted before the refusal"
        if holes:  # what is not there was not replayed: never "accepted"
            verdict = (
                f"incomplete: the journal is damaged or has a hole at {len(holes)} place(s) "
                "(notes above)" + ("" if first_refused is None else f", {verdict}")
            )
            status = max(status, EXIT_FAIL)
        print(f"{name}: {n} envelopes replayed, {verdict}{tail}")
    return status


def _add_trace_parser(jsub: Any) -> None:
    """Add ``journal trace`` to the ``journal`` subcommands ``jsub``."""
    tr = jsub.add_parser(
        "trace",
        help="the ranks' journals as a timeline (Chrome trace-event / Perfetto JSON)",
        description="Write the journals of DIR_OR_FILE... as a trace-event JSON file for "
        "ui.perfetto.dev or chrome://tracing: one track per rank, each envelope sent or "
        "received (and each observation) a slice, refusals, ends, damage and the first "
        "divergence (as journal diff finds it) instant events, an arrow from each send to "
        "each receive. Exit 0: written; 2: unusable input, or FILE cannot be written.",
    )
    tr.add_argument("paths", nargs="+", metavar="DIR_OR_FILE")
    tr.add_argument("-o", "--output", required=True, metavar="FILE", help="the JSON file")
    tr.set_defaults(func=cmd_trace)


def add_parsers(sub: Any) -> None:
    """Add ``journal`` (show, diff, trace) and ``replay`` to the ``tpwire`` command line."""
    jp = sub.add_parser(
        "journal",
        help="read envelope journals: show the records, diff the ranks, trace a timeline",
        description="Envelope journals (channel journal=DIR or TPWIRE_JOURNAL=DIR) hold one "
        "checksummed record per envelope a rank sent or received and what it observed. "
        "See docs/journal.md.",
    )
    jsub = jp.add_subparsers(dest="journal_command", required=True, metavar="COMMAND")
    show = jsub.add_parser(
        "show",
        help="one line per record (ids, action, sizes, state, digests)",
        description="Print each record of each FILE (or folder of .tpj files): offset, ids, "
        "action, direction, state, frame 1 size and digest; problems (corruption, a torn "
        "tail) in place with their offset. Exit 1 when a file has a problem, 2 when no "
        "journal file was found.",
    )
    show.add_argument("files", nargs="+", metavar="FILE")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=cmd_show)
    df = jsub.add_parser(
        "diff",
        help="the first record where the ranks' journals differ (exit 1 on a divergence)",
        description="Align the journals of several ranks (folders or files) by sequence id and "
        "report the first envelope where they differ: a different envelope, a missing record, "
        "a different outcome, input or output digest or ledger count, or a different end. "
        "Exit 0: no divergence; 1: a divergence, or none in journals with records that could "
        "not be read (incomplete); 2: unusable input.",
    )
    df.add_argument("paths", nargs="+", metavar="DIR_OR_FILE")
    df.add_argument("--spec", metavar="SPEC", help="decode with this spec (default: the "
                    "generated module named by the journal)")  # fmt: skip
    df.add_argument("--format", choices=("text", "json"), default="text")
    df.set_defaults(func=cmd_diff)
    _add_trace_parser(jsub)
    rp = sub.add_parser(
        "replay",
        help="push a recorded stream through this build's receive path",
        description="Replay each journal in FILE... (one rank's files) through the receive "
        "path without a process group: frame 0 checks, ordering, and in full mode frame 1, "
        "decode, validation and a bit-for-bit re-encode, then the ledger's recorded counts "
        "against their plan. Reports the first envelope this build refuses (exit 1); a "
        "damaged or incomplete journal ends incomplete (exit 1). A "
        "journal recorded under another spec is replayed with this build's fingerprint.",
    )
    rp.add_argument("files", nargs="+", metavar="FILE")
    rp.add_argument("--spec", metavar="SPEC", help="replay against this spec (compiled "
                    "in-process) instead of the generated module")  # fmt: skip
    rp.add_argument("--all", action="store_true", help="go on after a refusal")
    rp.add_argument("-v", "--verbose", action="store_true", help="one line per envelope")
    rp.set_defaults(func=cmd_replay)
