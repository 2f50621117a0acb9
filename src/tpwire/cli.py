"""The ``tpwire`` command line: gen, check, docs, schema, breaking, journal, replay."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpwire import __version__
from tpwire import config as project
from tpwire.extras import FormatterError, MissingExtra

# Every command but --help and --version needs the compiler extra; a missing one is a
# one-line message from main(), not an ImportError at startup.
try:
    from tpwire.codegen import breaking, compiler, render
    from tpwire.codegen.errors import SpecError, SpecErrors
    from tpwire.codegen.splice import SpliceError, splice
except MissingExtra as exc:
    _MISSING_COMPILER: MissingExtra | None = exc
else:
    _MISSING_COMPILER = None

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70
#: commands a runtime-only install runs (journals are read on the workers' machines)
RUNTIME_COMMANDS = frozenset({"journal", "replay"})


def _print_errors(errors: Sequence[SpecError]) -> None:
    for e in errors:
        print(e, file=sys.stderr)
    n = len(errors)
    print(f"tpwire: {n} error{'s' if n != 1 else ''}", file=sys.stderr)


def _emit_errors(errors: Sequence[SpecError], fmt: str) -> None:
    """Located errors as text (stderr), one JSON document or GitHub annotations (stdout)."""
    if fmt == "json":
        items = [
            {"file": e.file, "line": e.line, "col": e.col, "code": e.code, "message": e.message}
            for e in errors
        ]
        print(json.dumps({"errors": items}, indent=2))
    elif fmt == "github":
        for e in errors:
            loc = f"file={_gh_escape(e.file, True)},line={e.line},col={e.col}"
            print(f"::error {loc},title={_gh_escape(e.code, True)}::{_gh_escape(e.message)}")
    else:
        _print_errors(errors)


class UsageError(Exception):
    """A bad command line or environment: one line on stderr, exit 2."""


def _config() -> project.ProjectConfig:
    config = project.find()
    if config is None:
        raise UsageError("no SPEC given and no pyproject.toml with [tool.tpwire] found")
    if not config.specs:
        raise UsageError(f"no SPEC given and no specs = [...] in {config.path} [tool.tpwire]")
    return config


def _gen_targets(args: argparse.Namespace) -> tuple[list[str | Path], Path, Path | None]:
    """The specs, output package and docs folder: from the command line, or ``[tool.tpwire]``."""
    if args.specs:
        if args.out is None:
            raise UsageError("--out DIR is needed with SPEC arguments")
        return [*args.specs], Path(args.out), Path(args.docs) if args.docs else None
    config = _config()
    # a folder from the table stays in the project; one on the command line is the operator's
    out = Path(args.out) if args.out else config.out and config.inside(config.out, "out")
    if out is None:
        raise UsageError(f"no --out given and no out = ... in {config.path} [tool.tpwire]")
    docs = Path(args.docs) if args.docs else config.docs and config.inside(config.docs, "docs")
    return [_near(p) for p in config.spec_paths()], _near(out), _near(docs) if docs else None


def _near(path: Path) -> Path:
    """``path`` relative to the working directory where it lies below it (shorter messages)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def cmd_gen(args: argparse.Namespace) -> int:
    diffs: list[str] = []
    notes: list[str] = []
    specs, out, docs = _gen_targets(args)
    try:
        changes = compiler.generate(
            specs,
            out,
            docs,
            check_only=args.check,
            diffs=diffs if args.check else None,
            notes=notes,
        )
    except SpecErrors as exc:
        _emit_errors(exc.errors, args.format)
        return EXIT_FAIL
    except compiler.OutputError as exc:
        raise UsageError(str(exc)) from None
    for line in changes:
        print(line)
    for line in notes:
        print(f"tpwire gen: note: {line}", file=sys.stderr)
    if args.check and changes:
        sys.stdout.write("".join(diffs))
        print("tpwire: generated output is stale; run `tpwire gen`", file=sys.stderr)
        return EXIT_FAIL
    if not changes:
        print(f"tpwire: {len(specs)} spec(s), output up to date")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    errors: list[SpecError] = []
    good: list[dict[str, Any]] = []
    specs = args.specs or [str(p) for p in _config().spec_paths()]
    for spec in specs:
        try:
            p = compiler.protocol_ir(spec)
        except SpecErrors as exc:
            errors.extend(exc.errors)
            continue
        n = sum(len(m.variants) for m in p.messages)
        good.append(
            {
                "spec": compiler.display_path(spec),
                "protocol": p.name,
                "messages": len(p.messages),
                "classes": n,
                "frame0_words": p.layout.length,
                "fingerprint": p.fingerprint_hex,
            }
        )
    if args.format == "json":
        items = [
            {"file": e.file, "line": e.line, "col": e.col, "code": e.code, "message": e.message}
            for e in errors
        ]
        print(json.dumps({"ok": good, "errors": items}, indent=2))
        return EXIT_FAIL if errors else EXIT_OK
    if args.format == "text":
        for g in good:
            print(
                f"{g['spec']}: ok (protocol {g['protocol']}, {g['messages']} message(s), "
                f"{g['classes']} class(es), frame 0 = {g['frame0_words']} words, "
                f"fingerprint {g['fingerprint']})"
            )
    if errors:
        _emit_errors(errors, args.format)
        return EXIT_FAIL
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    if args.check and args.splice is None:
        print("tpwire docs: --check needs --splice [FILE]", file=sys.stderr)
        return EXIT_FAIL
    if args.spec is None:
        if args.splice != "":
            raise UsageError("docs needs a SPEC, or --splice alone for [tool.tpwire] splice")
        config = _config_with_splice()
        # every target is checked before any is written: the table never writes outside
        files = [config.inside(s.file, f"splice[{i}] file") for i, s in enumerate(config.splice)]
        codes = [
            _splice_one(str(s.spec), str(f), s.name, args.check)
            for s, f in zip(config.splice, files, strict=True)
        ]
        return max(codes)
    if args.splice is None:
        p = compiler.protocol_ir(args.spec)
        tables = render.render_tables(p)
        sys.stdout.write(render.render_doc_page(p) if args.page else tables)
        return EXIT_OK
    if args.splice == "":
        raise UsageError("--splice needs FILE when a SPEC is given")
    return _splice_one(args.spec, args.splice, args.name, args.check)


def _config_with_splice() -> project.ProjectConfig:
    config = project.find()
    if config is None or not config.splice:
        where = config.path if config else "pyproject.toml"
        raise UsageError(f"no SPEC given and no splice = [...] in {where} [tool.tpwire]")
    return config


def _splice_one(spec: str, file: str, block: str | None, check: bool) -> int:
    p = compiler.protocol_ir(spec)
    tables = render.render_tables(p)
    target = Path(file)
    name = block or p.name
    try:
        if not stat.S_ISREG(target.stat().st_mode):  # a FIFO would block the read
            print(f"{target}:1:1: error[io]: cannot read: not a regular file", file=sys.stderr)
            return EXIT_FAIL
        # bytes in, bytes out: line endings outside the block stay as they are
        old = target.read_bytes().decode("utf-8")
    except OSError as exc:
        print(f"{target}:1:1: error[io]: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    except UnicodeDecodeError as exc:
        print(f"{target}:1:1: error[encoding]: not UTF-8 (byte {exc.start})", file=sys.stderr)
        return EXIT_FAIL
    if "\r\n" in old:
        tables = tables.replace("\n", "\r\n")
    try:
        new = splice(old, name, tables, str(target))
    except SpliceError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAIL
    if new == old:
        print(f"{target}: block '{name}' is up to date")
        return EXIT_OK
    if check:
        print(
            f"{target}: block '{name}' is stale; run `tpwire docs {spec} --splice {target}`",
            file=sys.stderr,
        )
        return EXIT_FAIL
    try:
        # whole or not at all, over the file a link names, with the file's own mode: a
        # full disk must not cut a hand-written page short
        real = target.resolve()
        compiler.replace_file(real, new.encode("utf-8"), stat.S_IMODE(real.stat().st_mode))
    except OSError as exc:
        print(f"{target}:1:1: error[io]: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"{target}: block '{name}' updated")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(render.render_schema(compiler.protocol_ir(args.spec)))
    return EXIT_OK


# --- breaking -----------------------------------------------------------------------------


def _check_revision(ref: str, path: str) -> None:
    """A ref git can only read as a revision: none starts with ``-`` (``--output=FILE``
    would make ``git show`` write a file) or holds a control character."""
    given = ascii(f"{ref}:{path}")
    if not ref or not path:
        raise UsageError(f"--against {given}: expected REF:path, e.g. HEAD~1:spec/x.yaml")
    if ref.startswith("-"):
        raise UsageError(
            f"--against {given}: the ref {ref!r} starts with '-' (git would read an option)"
        )
    if not (ref + path).isprintable():
        raise UsageError(f"--against {given}: the ref or path holds a control character")


def git_show(ref: str, path: str, cwd: Path | None = None, shown: str | None = None) -> bytes:
    """The bytes of ``REF:path`` (``git cat-file blob``): the spec as it was at a revision
    (``UsageError`` if unreadable; ``shown`` names it in the message, else ``REF:path``).
    The ref is checked and ``--end-of-options`` fences it: git reads it as an object name,
    never as an option; ``cat-file`` takes no pathspec."""
    _check_revision(ref, path)
    shown = shown or f"{ref}:{path}"
    git = shutil.which("git")
    if git is None:
        raise UsageError(f"cannot read {shown}: git is not installed")

    # git's own words, untranslated: a new spec is told from a failure by them
    env = {**os.environ, "LC_ALL": "C", "LANGUAGE": ""}

    def cat_file(*argv: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [git, "cat-file", *argv, "--end-of-options", f"{ref}:{path}"],
                cwd=cwd,
                capture_output=True,
                timeout=60,
                check=False,
                env=env,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UsageError(f"cannot read {shown} from git: {exc}") from None

    done = cat_file("blob")
    if done.returncode != 0:
        kind = cat_file("-t")  # a folder reads as "bad file": say what it is instead
        what = kind.stdout.decode("ascii", "replace").strip() if kind.returncode == 0 else ""
        if what:
            what = {"tree": "folder (a git tree)"}.get(what, f"git {what}")
            raise UsageError(f"cannot read {shown} from git: it is a {what}, not a file")
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[0].removeprefix("fatal: ") if lines else f"git exited {done.returncode}"
        raise UsageError(f"cannot read {shown} from git: {why}")
    return done.stdout


def _read_spec_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


@dataclass
class _Pair:
    new_name: str
    old_name: str
    report: breaking.Report | None = None
    errors: list[SpecError] = field(default_factory=list)
    note: str = ""


def _against(value: str) -> tuple[bytes, str]:
    """OLD.yaml, or REF:path read from git."""
    if Path(value).is_file():
        return _read_spec_file(value), compiler.display_path(value)
    if ":" in value:
        ref, path = value.split(":", 1)
        return git_show(ref, path), value
    raise UsageError(f"--against {value}: no such file (give OLD.yaml or REF:path)")


def _pairs(args: argparse.Namespace, config: project.ProjectConfig | None) -> list[_Pair]:
    pairs: list[_Pair] = []
    if args.spec is not None:
        new = _read_spec_file(args.spec)
        name = compiler.display_path(args.spec)
        if args.against is not None:
            old, old_name = _against(args.against)
        else:
            # asked in the spec's folder: the same from any working directory, absolute too
            where = Path(args.spec).absolute()
            old_name = f"HEAD:{name}"
            old = git_show("HEAD", f"./{where.name}", cwd=where.parent, shown=old_name)
        pairs.append(_run_pair(old, old_name, new, name, args.allow))
        return pairs
    if args.against is not None:
        raise UsageError("--against needs a SPEC to compare")
    if config is None or not config.specs:
        raise UsageError(
            "no SPEC given and no [tool.tpwire] specs = [...] in pyproject.toml "
            "(usage: tpwire breaking NEW.yaml --against OLD.yaml|REF:path)"
        )
    root = config.root
    for spec in config.specs:
        full = root / spec
        new = _read_spec_file(str(full))
        name = compiler.display_path(full)
        try:
            old = git_show("HEAD", f"./{spec}", cwd=root)
        except UsageError as exc:
            if "does not exist in" in str(exc) or "exists on disk, but not in" in str(exc):
                pairs.append(_Pair(name, f"HEAD:{spec}", note="new spec, not in HEAD"))
                continue
            raise
        pairs.append(_run_pair(old, f"HEAD:{spec}", new, name, args.allow))
    return pairs


def _run_pair(old: bytes, old_name: str, new: bytes, new_name: str, allow: list[str]) -> _Pair:
    pair = _Pair(new_name, old_name)
    try:
        pair.report = breaking.compare_texts(old, new, old_name, new_name, allow)
    except SpecErrors as exc:
        pair.errors = list(exc.errors)
    return pair


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _print_text(pairs: list[_Pair]) -> None:
    for p in pairs:
        if p.note:
            print(f"{p.new_name}: {p.note}, nothing to compare")
        for e in p.errors:
            print(e, file=sys.stderr)
        if p.report is None:
            continue
        for f in p.report.findings:
            print(f)
        if not p.report.findings:
            o, n = p.report.old.fingerprint, p.report.new.fingerprint
            fp = (
                f"fingerprint {n:#018x} unchanged"
                if o == n
                else f"fingerprint {o:#018x} -> {n:#018x}"
            )
            allowed = len(p.report.allowed)
            extra = f", {allowed} allowed" if allowed else ""
            print(f"{p.new_name}: no breaking changes against {p.old_name} ({fp}{extra})")


def _print_github(pairs: list[_Pair]) -> None:
    for p in pairs:
        for e in p.errors:
            loc = f"file={_gh_escape(e.file, True)},line={e.line},col={e.col}"
            print(f"::error {loc},title={_gh_escape(e.code, True)}::{_gh_escape(e.message)}")
        if p.report is None:
            continue
        for f in p.report.findings:
            text = f"{f.text}: {breaking.CONSEQUENCE[f.direction]}"
            if f.file == p.new_name:
                loc = f"file={_gh_escape(f.file, True)},line={f.line},col={f.col}"
            else:  # deleted: the old spec is no file in the checkout
                loc = f"file={_gh_escape(p.new_name, True)}"
                text += f" (at {f.file}:{f.line}:{f.col})"
            title = _gh_escape(f"{f.rule} ({f.direction})", True)
            print(f"::error {loc},title={title}::{_gh_escape(text)}")


def _json(pairs: list[_Pair]) -> str:
    results = []
    for p in pairs:
        r = p.report
        results.append(
            {
                "new": p.new_name,
                "old": p.old_name,
                "note": p.note or None,
                "new_fingerprint": f"{r.new.fingerprint:#018x}" if r else None,
                "old_fingerprint": f"{r.old.fingerprint:#018x}" if r else None,
                "errors": [
                    {
                        "file": e.file,
                        "line": e.line,
                        "col": e.col,
                        "code": e.code,
                        "message": e.message,
                    }
                    for e in p.errors
                ],
                "findings": [f.as_dict() for f in r.findings] if r else [],
                "allowed": [f.as_dict() for f in r.allowed] if r else [],
            }
        )
    total = sum(len(p.report.findings) for p in pairs if p.report)
    return json.dumps({"version": 1, "findings": total, "results": results}, indent=2) + "\n"


def _list_rules() -> None:
    width = max(len(r) for r in breaking.RULES)
    for r in breaking.RULES.values():
        print(f"{r.id:<{width}}  {r.direction:<10}  {r.group:<10}  {r.summary}")


def cmd_breaking(args: argparse.Namespace) -> int:
    try:
        if args.list_rules:
            _list_rules()
            return EXIT_OK
        config = project.find()
        allow = list(args.allow or [])
        if config is not None:
            allow += config.breaking_ignore
        for rule in allow:
            problem = breaking.unknown_rule(rule)
            if problem is not None:
                raise UsageError(problem)
        args.allow = sorted(set(allow))
        pairs = _pairs(args, config)
    except (UsageError, project.ConfigError) as exc:
        print(f"tpwire breaking: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        sys.stdout.write(_json(pairs))
    elif args.format == "github":
        _print_github(pairs)
    else:
        _print_text(pairs)
    errors = sum(len(p.errors) for p in pairs)
    findings = sum(len(p.report.findings) for p in pairs if p.report)
    allowed = sum(len(p.report.allowed) for p in pairs if p.report)
    if errors or findings:
        parts = []
        if findings:
            parts.append(f"{findings} breaking finding{'s' if findings != 1 else ''}")
        if errors:
            parts.append(f"{errors} error{'s' if errors != 1 else ''}")
        if allowed:
            parts.append(f"{allowed} allowed")
        accept = ""
        rules = breaking.to_accept(p.report for p in pairs if p.report)
        if findings and rules:  # the findings' rules (a spec that does not compile fails anyway)
            them = "them" if findings != 1 else "it"
            flags = " ".join(f"--allow {r}" for r in rules)
            accept = f"; to accept {them} as a deliberate break: {flags}"
        print(f"tpwire breaking: {', '.join(parts)}{accept}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tpwire",
        description="Compile YAML protocol specs into typed, pickle-free torch.distributed bindings.",
        epilog="Errors are printed as file:line:col: error[code]: message; exit status 1 "
        "(2 for a usage error).",
    )
    top.add_argument("--version", action="version", version=f"tpwire {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "gen",
        help="compile specs into Python bindings (and docs)",
        description="Compile each SPEC into OUT/<protocol>.py and OUT/<protocol>_strategies.py "
        "(plus DOCS/<protocol>.md and DOCS/<protocol>.schema.json with --docs), a package "
        "that stands on its own (its strategies import the bindings beside them). Every spec "
        "is checked before anything is written. What tpwire made from these specs and no "
        "longer writes is removed; other specs' and other projects' output and a hand-written "
        "__init__.py stay, and any other file in an output's place is refused (exit 2, "
        "nothing written). Headers name a spec relative to its project root and the project "
        "by name, so the bytes do not depend on the working directory or the checkout. "
        "Without SPEC, the specs, out and docs of pyproject.toml's [tool.tpwire] are used "
        "(out and docs inside the project; a folder elsewhere goes on the command line).",
    )
    gen.add_argument(
        "specs", nargs="*", metavar="SPEC", help="spec files (YAML); default: [tool.tpwire] specs"
    )
    gen.add_argument(
        "--out", metavar="DIR", help="folder for the Python modules; default: [tool.tpwire] out"
    )
    gen.add_argument(
        "--docs",
        metavar="DIR",
        help="folder for markdown tables and JSON Schemas; default: [tool.tpwire] docs",
    )
    gen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; print a unified diff of what would change and exit 1 if any",
    )
    gen.add_argument("--format", choices=("text", "json", "github"), default="text",
                     help="how spec errors are printed: text (stderr), json or github annotations")  # fmt: skip
    gen.set_defaults(func=cmd_gen)

    chk = sub.add_parser(
        "check",
        help="check specs and report every error",
        description="Check each SPEC (structure, names, types, expressions, shapes, versions) "
        "and print every error found, located, then exit 1; print a summary line per good spec.",
    )
    chk.add_argument(
        "specs", nargs="*", metavar="SPEC", help="spec files; default: [tool.tpwire] specs"
    )
    chk.add_argument("--format", choices=("text", "json", "github"), default="text",
                     help="text (default), json (one document on stdout) or github annotations")  # fmt: skip
    chk.set_defaults(func=cmd_check)

    docs = sub.add_parser(
        "docs",
        help="print or splice the operator-manual tables of a spec",
        description="Print the markdown tables of SPEC (field, type, required_when, why, fail-fast "
        "check location, FM, invariants). With --splice FILE, replace the block between "
        "'<!-- tpwire:begin NAME -->' and '<!-- tpwire:end NAME -->' in FILE and touch nothing else. "
        "With --splice and no SPEC, every splice target of pyproject.toml's [tool.tpwire].",
    )
    docs.add_argument("spec", nargs="?", metavar="SPEC")
    docs.add_argument(
        "--splice",
        nargs="?",
        const="",
        metavar="FILE",
        help="markdown file holding the marked block (alone: the [tool.tpwire] splice targets)",
    )
    docs.add_argument("--name", help="block name (default: the protocol name)")
    docs.add_argument(
        "--check", action="store_true", help="with --splice: exit 1 if the block is stale"
    )
    docs.add_argument(
        "--page", action="store_true", help="print the whole page, not only the tables"
    )
    docs.set_defaults(func=cmd_docs)

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema (draft 2020-12) of a spec's non-tensor fields",
        description="Print a draft 2020-12 JSON Schema of SPEC's envelopes in plain-data form "
        "(header, message class, non-tensor fields). Rules JSON Schema cannot express are "
        "listed under x-tpwire-unchecked.",
    )
    schema.add_argument("spec", metavar="SPEC")
    schema.set_defaults(func=cmd_schema)

    brk = sub.add_parser(
        "breaking",
        help="report what a spec change breaks, for whom (exit 1 when something does)",
        description="Compare SPEC (the new spec) with an old version and print every breaking "
        "change as file:line:col: error[RULE] (direction): message, located in the new spec "
        "(the old one for deletions). Directions: tightening (a new receiver refuses what an "
        "old sender sends), loosening (an old receiver refuses what a new sender sends), both, "
        "wire (the bytes mean something else). A message broken without a version bump is also "
        "BREAKING_WITHOUT_VERSION_BUMP. Without SPEC, every spec in pyproject.toml's "
        "[tool.tpwire] specs is compared with the last commit; [tool.tpwire.breaking] ignore "
        "lists rules to allow. Exit 0: nothing breaks; 1: something does, or a spec does not "
        "compile (its errors are printed, located); 2: usage error. See docs/evolution.md.",
    )
    brk.add_argument("spec", nargs="?", metavar="SPEC", help="the new spec (YAML)")
    brk.add_argument(
        "--against",
        metavar="OLD",
        help="the old spec: a file, or REF:path read from git (e.g. "
        "HEAD~1:spec/tp_control.yaml); default HEAD:SPEC",
    )
    brk.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default="text",
        help="text (default), json, or github (workflow-command annotations)",
    )
    brk.add_argument(
        "--allow",
        action="append",
        metavar="RULE",
        help="a deliberate break: do not fail on RULE (repeatable)",
    )
    brk.add_argument("--list-rules", action="store_true", help="print the rule catalogue and exit")
    brk.set_defaults(func=cmd_breaking)

    from tpwire import journal_cli

    journal_cli.add_parsers(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if _MISSING_COMPILER is not None and args.command not in RUNTIME_COMMANDS:
        print(f"tpwire: {_MISSING_COMPILER}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except SpecErrors as exc:
        _print_errors(exc.errors)
        return EXIT_FAIL
    except MissingExtra as exc:
        print(f"tpwire: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, project.ConfigError, FormatterError) as exc:
        print(f"tpwire {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of stdout went away (``| head``): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug in tpwire: say so briefly, traceback on request
        if os.environ.get("TPWIRE_DEBUG"):
            traceback.print_exc()
        print(
            f"tpwire: internal error: {type(exc).__name__}: {exc} (set TPWIRE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
