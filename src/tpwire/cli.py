"""The ``tpwire`` command line: gen, check, docs, schema."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from tpwire import __version__
from tpwire.codegen import compiler, render
from tpwire.codegen.errors import SpecError, SpecErrors
from tpwire.codegen.splice import SpliceError, splice

EXIT_OK, EXIT_FAIL, EXIT_INTERNAL = 0, 1, 70


def _print_errors(errors: Sequence[SpecError]) -> None:
    for e in errors:
        print(e, file=sys.stderr)
    n = len(errors)
    print(f"tpwire: {n} error{'s' if n != 1 else ''}", file=sys.stderr)


def cmd_gen(args: argparse.Namespace) -> int:
    changes = compiler.generate(
        args.specs, Path(args.out), Path(args.docs) if args.docs else None, check_only=args.check
    )
    for line in changes:
        print(line)
    if args.check and changes:
        print("tpwire: generated output is stale; run `make gen`", file=sys.stderr)
        return EXIT_FAIL
    if not changes:
        print(f"tpwire: {len(args.specs)} spec(s), output up to date")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    errors: list[SpecError] = []
    for spec in args.specs:
        try:
            p = compiler.protocol_ir(spec)
        except SpecErrors as exc:
            errors.extend(exc.errors)
            continue
        n = sum(len(m.variants) for m in p.messages)
        print(
            f"{p.source}: ok (protocol {p.name}, {len(p.messages)} message(s), {n} class(es), "
            f"frame 0 = {p.layout.length} words, fingerprint {p.fingerprint_hex})"
        )
    if errors:
        _print_errors(errors)
        return EXIT_FAIL
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    if args.check and args.splice is None:
        print("tpwire docs: --check needs --splice FILE", file=sys.stderr)
        return EXIT_FAIL
    p = compiler.protocol_ir(args.spec)
    tables = render.render_tables(p)
    if args.splice is None:
        sys.stdout.write(render.render_doc_page(p) if args.page else tables)
        return EXIT_OK
    target = Path(args.splice)
    name = args.name or p.name
    try:
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
    if args.check:
        print(
            f"{target}: block '{name}' is stale; run `tpwire docs {args.spec} --splice {target}`",
            file=sys.stderr,
        )
        return EXIT_FAIL
    target.write_bytes(new.encode("utf-8"))
    print(f"{target}: block '{name}' updated")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(render.render_schema(compiler.protocol_ir(args.spec)))
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tpwire",
        description="Compile YAML protocol specs into typed, pickle-free torch.distributed bindings.",
        epilog="Errors are printed as file:line:col: error[code]: message; exit status 1.",
    )
    top.add_argument("--version", action="version", version=f"tpwire {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "gen",
        help="compile specs into Python bindings (and docs)",
        description="Compile each SPEC into OUT/<protocol>.py and OUT/<protocol>_strategies.py "
        "(plus DOCS/<protocol>.md and DOCS/<protocol>.schema.json with --docs). Every spec is "
        "checked before anything is written; stale generated files are removed.",
    )
    gen.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (YAML)")
    gen.add_argument("--out", required=True, metavar="DIR", help="folder for the Python modules")
    gen.add_argument("--docs", metavar="DIR", help="folder for markdown tables and JSON Schemas")
    gen.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if output is stale"
    )
    gen.set_defaults(func=cmd_gen)

    chk = sub.add_parser(
        "check",
        help="check specs and report every error",
        description="Check each SPEC (structure, names, types, expressions, shapes, versions) "
        "and print every error found, located, then exit 1; print a summary line per good spec.",
    )
    chk.add_argument("specs", nargs="+", metavar="SPEC")
    chk.set_defaults(func=cmd_check)

    docs = sub.add_parser(
        "docs",
        help="print or splice the operator-manual tables of a spec",
        description="Print the markdown tables of SPEC (field, type, required_when, why, fail-fast "
        "check location, FM, invariants). With --splice FILE, replace the block between "
        "'<!-- tpwire:begin NAME -->' and '<!-- tpwire:end NAME -->' in FILE and touch nothing else.",
    )
    docs.add_argument("spec", metavar="SPEC")
    docs.add_argument("--splice", metavar="FILE", help="markdown file holding the marked block")
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
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except SpecErrors as exc:
        _print_errors(exc.errors)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in tpwire: say so briefly, traceback on request
        if os.environ.get("TPWIRE_DEBUG"):
            traceback.print_exc()
        print(
            f"tpwire: internal error: {type(exc).__name__}: {exc} (set TPWIRE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
