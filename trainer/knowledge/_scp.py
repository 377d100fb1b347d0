"""SCP-ECG statements of PTB-XL: loader, ``scp_codes`` parser and English report composer.

``scp_statements.csv`` (PTB-XL, Wagner et al. 2020, CC BY 4.0) gives an English description, the
diagnostic superclass (``diagnostic_class``: NORM, MI, STTC, CD, HYP) and the statement kind (diagnostic,
form, rhythm) of each of the 71 SCP codes. The trainer's PTB-XL reader calls
:func:`compose_english_report` to turn a record's ``scp_codes`` into an English machine-style report.
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._errors import KnowledgeFormatError

__all__ = [
    "ScpStatement",
    "load_scp_statements",
    "parse_scp_codes",
    "compose_english_report",
    "superclass_of_statement",
]


@dataclass(frozen=True)
class ScpStatement:
    """One row of ``scp_statements.csv``."""

    code: str
    description: str
    diagnostic: bool
    form: bool
    rhythm: bool
    diagnostic_class: str  # NORM, MI, STTC, CD, HYP or "" for form/rhythm-only statements
    diagnostic_subclass: str


def superclass_of_statement(statement: ScpStatement) -> str:
    """The superclass of a statement: its diagnostic class, else ``RHYTHM``, else ``FORM``."""
    if statement.diagnostic_class:
        return statement.diagnostic_class
    return "RHYTHM" if statement.rhythm else "FORM"


def _flag(value: str) -> bool:
    return value.strip() not in ("", "0", "0.0", "nan")


def load_scp_statements(path: str | Path) -> dict[str, ScpStatement]:
    """Read ``scp_statements.csv`` (a file, or a PTB-XL directory holding it) into ``code -> statement``."""
    path = Path(path)
    if path.is_dir():
        path = path / "scp_statements.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise KnowledgeFormatError(f"cannot read SCP statements from {path}: {exc}") from exc
    out: dict[str, ScpStatement] = {}
    for row in rows:
        code = (row.get("") or row.get("Unnamed: 0") or "").strip()
        if not code or "description" not in row:
            raise KnowledgeFormatError(f"{path} is not a PTB-XL scp_statements.csv (row {row!r})")
        out[code] = ScpStatement(
            code=code,
            description=row["description"].strip(),
            diagnostic=_flag(row.get("diagnostic", "")),
            form=_flag(row.get("form", "")),
            rhythm=_flag(row.get("rhythm", "")),
            diagnostic_class=(row.get("diagnostic_class") or "").strip(),
            diagnostic_subclass=(row.get("diagnostic_subclass") or "").strip(),
        )
    return out


def parse_scp_codes(text: str) -> dict[str, float]:
    """Parse PTB-XL's ``scp_codes`` column (a Python dict literal) safely with :func:`ast.literal_eval`."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise KnowledgeFormatError(f"scp_codes is not a dict literal: {text!r}") from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise KnowledgeFormatError(f"scp_codes is not a dict of code -> likelihood: {text!r}")
    return {k: float(v) for k, v in value.items()}


_PAREN_NOTE = re.compile(r"\s*\((?:former|block)[^)]*\)")


def _english(description: str) -> str:
    return _PAREN_NOTE.sub("", description).strip()


def compose_english_report(
    scp_codes: Mapping[str, float] | str,
    scp_statements: Mapping[str, ScpStatement],
    *,
    hedge: bool = False,
) -> str:
    """Compose an English machine-style report from a record's ``scp_codes``.

    Rhythm statements come first, then the others by decreasing likelihood (ties by code), one sentence
    each, from the official English descriptions: ``{'NORM': 100.0, 'SR': 0.0}`` gives
    ``"Sinus rhythm. Normal ECG."``. With ``hedge=True`` a diagnostic statement whose likelihood is below
    50 (PTB-XL's 15/35) is prefixed with "possible". Unknown codes raise :class:`KnowledgeFormatError`.
    """
    codes = parse_scp_codes(scp_codes) if isinstance(scp_codes, str) else dict(scp_codes)
    unknown = sorted(c for c in codes if c not in scp_statements)
    if unknown:
        raise KnowledgeFormatError(f"unknown SCP codes {unknown}")
    order = sorted(codes, key=lambda c: (not scp_statements[c].rhythm, -codes[c], c))
    sentences = []
    for code in order:
        text = _english(scp_statements[code].description)
        if hedge and scp_statements[code].diagnostic and 0 < codes[code] < 50:
            text = "possible " + text
        sentences.append(text[:1].upper() + text[1:] + ".")
    return " ".join(sentences)
