"""Text normalisation shared by the lexicon, the support check and the evaluation.

Reports in PTB-XL are German (some Swedish and English), written with ``ä``, ``Ä``, ``ae`` and even ``#`` for
``ü`` (``f#r``), with stray runs of spaces. :func:`normalize` folds all of that into lower-case ASCII;
:func:`clauses` cuts a report into the clauses that bound negation and uncertainty scopes; :func:`tokens`
gives the space-joined word string the lexicon patterns are matched against.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "clauses", "tokens", "token_string"]

_FOLD = {
    "ä": "ae",
    "ö": "oe",
    "ü": "ue",
    "ß": "ss",
    "å": "a",
    "æ": "ae",
    "ø": "oe",
    "#": "ue",  # PTB-XL's transcoding of ü: "f#r", "#bergang"
}
_FOLD_RE = re.compile("|".join(map(re.escape, _FOLD)))
# A clause ends at sentence punctuation followed by space or end, at ", ", at a line break, or at "but".
# (Runs of spaces do not end a clause: PTB-XL uses them inside one statement, "t abnormal, wahrscheinlich
#    inferiorer myokardschaden".)
_CLAUSE_RE = re.compile(r"[.;!?](?=\s|$)|:(?=\s)|,\s|\n|\bbut\b|\baber\b|\bmen\b")
_TOKEN_RE = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    """Lower-case, fold umlauts (``ä``/``Ä``/``ae`` agree) and accents, keep punctuation and spacing."""
    text = text.lower()
    text = _FOLD_RE.sub(lambda m: _FOLD[m.group(0)], text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def clauses(text: str) -> list[str]:
    """Split an already normalised report into clauses (negation / uncertainty scopes)."""
    return [c for c in _CLAUSE_RE.split(text) if c and c.strip()]


def tokens(text: str) -> list[str]:
    """Word tokens (``[a-z0-9]+``) of an already normalised string."""
    return _TOKEN_RE.findall(text)


def token_string(text: str) -> str:
    """Normalise ``text`` and join its tokens with single spaces (what lexicon patterns match)."""
    return " ".join(tokens(normalize(text)))
