"""Compiler diagnostics: located, collected, printed compiler-style."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)
class SpecError:
    """One problem in a spec, at a 1-based line and column."""

    file: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: error[{self.code}]: {self.message}"


class SpecErrors(Exception):
    """Raised by the compiler stages with every error found, sorted by position."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(set(errors))
        super().__init__("\n".join(str(e) for e in self.errors))
