"""The ``tpwire`` package laid out as a wheel lays it out, for tools that cannot follow
``[tool.setuptools.package-dir]``.

The checkout keeps the design card's top-level folders (``codegen/``, ``runtime/``, ...),
mapped to ``tpwire.*`` subpackages by packaging configuration. An editable install
resolves that mapping with an import hook, which mypy does not run and which a bare
interpreter (the GPU machine's, with no install at all) does not have. This module copies
the mapped folders into ``build/pkgtree/tpwire/...`` (copies, not links: one physical
path per file stays true in the repository) and maps paths in tool output back to the
real files.

    python -m tools.pkgtree [DEST]        # build the tree, print its path
    python -m tools.pkgtree --mypy ARGS   # mypy over the tree, paths shown as in the repo
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / "build" / "pkgtree"


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """``[tool.setuptools.package-dir]``: package name -> its folder in the checkout."""
    with (root / "pyproject.toml").open("rb") as fh:
        table = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in sorted(table.items())}


def build(dest: Path = DEFAULT_DEST, root: Path = ROOT) -> Path:
    """Copy every mapped folder to ``dest/<package path>``; returns ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    for name, folder in package_dirs(root).items():
        target = dest.joinpath(*name.split("."))
        for src in sorted(folder.iterdir()):
            if src.is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name)
            elif src.is_dir() and src.name != "__pycache__" and not (src / "__init__.py").exists():
                # data folders (templates); subpackages are mapped entries of their own
                shutil.copytree(
                    src, target / src.name, ignore=shutil.ignore_patterns("__pycache__")
                )
    return dest


def back_to_repo(text: str, dest: Path = DEFAULT_DEST, root: Path = ROOT) -> str:
    """Rewrite tree paths in tool output to the files they were copied from."""
    pairs = []
    for name, folder in package_dirs(root).items():
        tree = dest.joinpath(*name.split("."))
        for form in (str(tree), os.path.relpath(tree, Path.cwd())):
            pairs.append((form + os.sep, os.path.relpath(folder, Path.cwd()) + os.sep))
    # the longest prefix first: tpwire/codegen/ before tpwire/
    for tree_prefix, repo_prefix in sorted(pairs, key=lambda p: -len(p[0])):
        text = text.replace(tree_prefix, repo_prefix)
    return text


def run_mypy(args: list[str]) -> int:
    dest = build()
    env = dict(os.environ, MYPYPATH=str(dest))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *args], env=env, capture_output=True, text=True
    )
    sys.stdout.write(back_to_repo(done.stdout, dest))
    sys.stderr.write(back_to_repo(done.stderr, dest))
    return done.returncode


def main(argv: list[str]) -> int:
    if argv[:1] == ["--mypy"]:
        return run_mypy(argv[1:])
    print(build(Path(argv[0]) if argv else DEFAULT_DEST))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
