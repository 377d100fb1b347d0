"""The offline default extractor: an entity lexicon with negation and uncertainty scopes.

The lexicon (``data/lexicon.json``) holds ~125 cardiac entities, each with a canonical English name, a
superclass (NORM, MI, STTC, CD, HYP from PTB-XL's ``diagnostic_class``; RHYTHM and FORM for the rhythm and
form statements; OTHER), the SCP-ECG codes it stands for, and English, German and Swedish patterns. The
English descriptions of all 71 SCP statements (embedded copy of ``scp_statements.csv``) and the SNOMED-CT
names of the CinC challenge diagnoses (``data/snomed_ct.json``: the official name and its cleaned ``text``,
for every code whose ``entity`` is not null) are added as patterns automatically.

Matching runs per clause on normalised text (:mod:`._text`); overlapping candidates are resolved longest
first, so "unvollständiger rechtsschenkelblock" wins over "rechtsschenkelblock" and "no definite
pathology" (an entity) over the cue "no". A negation cue ("no", "without", "kein", "ohne", "resolved",
"no longer", ...) removes the entities in its scope; an uncertainty cue ("possible", "consider", "cannot
rule out", "verdacht auf", "nicht auszuschliessen", "möglich", ...) flags them. Pre-cues reach
``pre_window`` tokens forward, post-cues ``post_window`` tokens back, never past the clause.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ._errors import KnowledgeFormatError
from ._text import clauses, normalize, token_string
from ._types import Extraction

__all__ = ["Lexicon", "LexiconEntity", "Mention", "LexiconConfig", "LexiconBackend", "default_lexicon"]

#: The lexicon's diagnostic superclasses (PTB-XL ``diagnostic_class``) → the label text the superclass
#: aggregation adds for their members (RHYTHM, FORM and OTHER are kinds of statement, not diagnoses).
SUPERCLASS_NAMES: dict[str, str] = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
}

_CUE_KINDS = ("negation_pre", "negation_post", "uncertain_pre", "uncertain_post", "pseudo")
_STOP = {"the", "of", "in", "and", "or", "with", "a", "an", "to", "is", "are", "for", "ecg", "ekg", "leads"}


@dataclass(frozen=True)
class LexiconEntity:
    """One vocabulary entry of the lexicon."""

    name: str
    superclass: str
    scp_codes: tuple[str, ...]
    snomed_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mention:
    """One entity found in a report (``negated`` mentions are reported but never labelled)."""

    entity: str
    surface: str
    negated: bool
    uncertain: bool


def _compile(patterns: list[str]) -> re.Pattern[str]:
    alts = sorted(set(patterns), key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(f"(?:{p})" for p in alts) + r")(?![a-z0-9])")


def _spans(rx: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    """Non-empty matches of ``rx`` starting at every position, overlapping ones included.

    ``finditer`` would hide a match that overlaps an earlier one of the same pattern ("lagetyp normal ekg
    normal": "normal ekg" would hide "ekg normal", then lose to "lagetyp normal"); the caller resolves
    overlaps longest first across all patterns.
    """
    out = []
    pos = 0
    while (m := rx.search(text, pos)) is not None:
        if m.end() > m.start():
            out.append((m.start(), m.end()))
        pos = m.start() + 1
    return out


def _data_text(name: str) -> str:
    return resources.files(__package__).joinpath("data").joinpath(name).read_text(encoding="utf-8")


class Lexicon:
    """Compiled entity lexicon. Build with :func:`default_lexicon` or :meth:`Lexicon.from_files`."""

    def __init__(self, doc: dict[str, Any], snomed: dict[str, Any] | None = None) -> None:
        if doc.get("schema_version") != 1 or "entities" not in doc:
            raise KnowledgeFormatError("lexicon document has no schema_version 1 / entities")
        self.scp_statements: dict[str, dict[str, str]] = dict(doc.get("scp_statements", {}))
        self.entities: dict[str, LexiconEntity] = {}
        patterns: dict[str, list[str]] = {}
        snomed_of: dict[str, list[str]] = {}
        for code, row in ((snomed or {}).get("codes", {})).items():
            if row.get("entity"):
                snomed_of.setdefault(row["entity"], []).append(code)
        for raw in doc["entities"]:
            name = raw["name"]
            pats = [p for lang in raw["patterns"].values() for p in lang]
            pats.append(re.escape(token_string(name)))
            for code in raw["scp_codes"]:
                if code in self.scp_statements:
                    pats.append(re.escape(token_string(self.scp_statements[code]["description"])))
            for code in snomed_of.get(name, []):
                row = snomed["codes"][code]  # type: ignore[index]
                pats.extend(re.escape(token_string(row[k])) for k in ("name", "text") if row.get(k))
            self.entities[name] = LexiconEntity(
                name, raw["superclass"], tuple(raw["scp_codes"]), tuple(sorted(snomed_of.get(name, [])))
            )
            patterns[name] = pats
        unknown = set(snomed_of) - set(self.entities)
        if unknown:
            raise KnowledgeFormatError(f"snomed map names unknown lexicon entities {sorted(unknown)}")
        try:
            self._entity_res = {n: _compile(p) for n, p in patterns.items()}
            self._cue_res = {k: _compile(doc["cues"][k]) for k in _CUE_KINDS if doc["cues"].get(k)}
            self._full_res = {n: re.compile("(?:" + "|".join(p) + ")") for n, p in patterns.items()}
        except re.error as exc:
            raise KnowledgeFormatError(f"bad lexicon pattern: {exc}") from exc

    @classmethod
    def from_files(cls, lexicon_path: str | Path, snomed_path: str | Path | None = None) -> Lexicon:
        """Load a lexicon JSON (and optionally a SNOMED map) from disk."""
        try:
            doc = json.loads(Path(lexicon_path).read_text(encoding="utf-8"))
            snomed = json.loads(Path(snomed_path).read_text(encoding="utf-8")) if snomed_path else None
        except (OSError, json.JSONDecodeError) as exc:
            raise KnowledgeFormatError(f"cannot read lexicon: {exc}") from exc
        return cls(doc, snomed)

    # -- matching ---------------------------------------------------------------------------------
    def find(self, report: str, *, pre_window: int = 4, post_window: int = 1) -> list[Mention]:
        """All entity mentions of ``report`` in reading order, negated ones included (flagged)."""
        out: list[Mention] = []
        for clause in clauses(normalize(report)):
            text = token_string(clause)
            if not text:
                continue
            out.extend(self._find_in_clause(text, pre_window, post_window))
        return out

    def _find_in_clause(self, text: str, pre_window: int, post_window: int) -> list[Mention]:
        cands: list[tuple[int, int, str, str]] = []  # start, end (char), kind, entity/cue kind
        for name, rx in self._entity_res.items():
            cands.extend((s, e, "entity", name) for s, e in _spans(rx, text))
        for kind, rx in self._cue_res.items():
            cands.extend((s, e, "cue", kind) for s, e in _spans(rx, text))
        # longest first; entities before cues on equal length; then leftmost
        cands.sort(key=lambda c: (-(c[1] - c[0]), c[2] != "entity", c[0]))
        taken: list[tuple[int, int, str, str]] = []
        for c in cands:
            if all(c[1] <= t[0] or c[0] >= t[1] for t in taken):
                taken.append(c)
        taken.sort()
        # token index of each char offset
        tok_at = [0] * (len(text) + 1)
        count = 0
        for i, ch in enumerate(text):
            tok_at[i] = count
            if ch == " ":
                count += 1
        tok_at[len(text)] = count + 1
        ents = [(tok_at[s], tok_at[e - 1] + 1, name, text[s:e]) for s, e, k, name in taken if k == "entity"]
        cues = [(tok_at[s], tok_at[e - 1] + 1, kind) for s, e, k, kind in taken if k == "cue"]
        mentions = []
        for es, ee, name, surface in ents:
            negated = uncertain = False
            for cs, ce, kind in cues:
                pre = kind.endswith("_pre") and ce <= es and es - ce <= pre_window
                post = kind.endswith("_post") and cs >= ee and cs - ee <= post_window
                if pre or post:
                    if kind.startswith("negation"):
                        negated = True
                    elif kind.startswith("uncertain"):
                        uncertain = True
            mentions.append(Mention(name, surface, negated, uncertain))
        return mentions

    def positives(self, report: str, *, uncertain: Literal["positive", "negative"] = "positive") -> dict[str, bool]:
        """Positive entities of ``report`` -> uncertain flag (an entity certain anywhere is certain)."""
        out: dict[str, bool] = {}
        for m in self.find(report):
            if m.negated or (m.uncertain and uncertain == "negative"):
                continue
            out[m.entity] = out.get(m.entity, True) and m.uncertain
        return out

    def lookup(self, phrase: str) -> str | None:
        """The lexicon entity a whole phrase names (entity name, synonym, SCP or SNOMED name), if any."""
        text = token_string(phrase)
        if not text:
            return None
        for name, rx in self._full_res.items():
            if rx.fullmatch(text):
                return name
        return None

    def supports(self, phrase: str, report: str) -> bool:
        """Whether ``report`` supports ``phrase`` (itself, a known synonym, or all its content words).

        Used by the LLM path's verification step so that nothing the report does not say survives.
        """
        rep = token_string(report)
        text = token_string(phrase)
        if not text or not rep:
            return False
        if re.search(r"(?<![a-z0-9])" + re.escape(text) + r"(?![a-z0-9])", rep):
            return True
        entity = self.lookup(phrase)
        if entity is not None and entity in self.positives(report):
            return True
        words = [w for w in text.split() if len(w) > 2 and w not in _STOP]
        rep_words = set(rep.split())
        return bool(words) and all(w in rep_words for w in words)

    def superclasses(self) -> dict[str, list[str]]:
        """Superclass -> member entity names, over the whole lexicon."""
        out: dict[str, list[str]] = {}
        for e in self.entities.values():
            out.setdefault(e.superclass, []).append(e.name)
        return out


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The lexicon shipped in ``trainer/knowledge/data`` (compiled once per process)."""
    try:
        return Lexicon(json.loads(_data_text("lexicon.json")), json.loads(_data_text("snomed_ct.json")))
    except (OSError, json.JSONDecodeError) as exc:  # pragma: no cover - broken install
        raise KnowledgeFormatError(f"the shipped lexicon cannot be read: {exc}") from exc


@dataclass(frozen=True)
class LexiconConfig:
    """Options of :class:`LexiconBackend`.

    ``uncertain="positive"`` labels uncertain mentions (and flags them in ``uncertain.npz``);
    ``"negative"`` drops them. ``lexicon_path``/``snomed_path`` replace the shipped data files.
    """

    uncertain: Literal["positive", "negative"] = "positive"
    pre_window: int = 4
    post_window: int = 1
    lexicon_path: str | None = None
    snomed_path: str | None = None


@dataclass
class LexiconBackend:
    """Extract entities with the lexicon (no model, no network, deterministic)."""

    config: LexiconConfig = field(default_factory=LexiconConfig)

    def __post_init__(self) -> None:
        if self.config.uncertain not in ("positive", "negative"):
            raise ValueError(f"uncertain must be 'positive' or 'negative', not {self.config.uncertain!r}")
        if self.config.lexicon_path:
            self.lexicon = Lexicon.from_files(self.config.lexicon_path, self.config.snomed_path)
        else:
            self.lexicon = default_lexicon()

    def describe(self) -> dict[str, Any]:
        return {"extractor": "lexicon", "model": None, "config": {
            "uncertain": self.config.uncertain, "pre_window": self.config.pre_window,
            "post_window": self.config.post_window, "lexicon_path": self.config.lexicon_path,
            "n_lexicon_entities": len(self.lexicon.entities)}}

    def extract(self, reports: list[str], *, cache: Any = None, progress: bool = False) -> Extraction:
        """Run the lexicon over ``reports`` (``cache`` is ignored: the lexicon is cheaper than a lookup)."""
        per_report: list[dict[str, bool]] = []
        synonyms: dict[str, str] = {}
        counters: Counter[str] = Counter()
        memo: dict[str, dict[str, bool]] = {}
        for report in _progress(reports, progress, "lexicon"):
            if report in memo:
                per_report.append(dict(memo[report]))
                continue
            found: dict[str, bool] = {}
            for m in self.lexicon.find(report, pre_window=self.config.pre_window,
                                       post_window=self.config.post_window):
                if m.negated:
                    counters["negated_mentions"] += 1
                    continue
                if m.uncertain:
                    counters["uncertain_mentions"] += 1
                    if self.config.uncertain == "negative":
                        continue
                synonyms.setdefault(m.surface, m.entity)
                found[m.entity] = found.get(m.entity, True) and m.uncertain
            memo[report] = found
            per_report.append(dict(found))
        ents = self.lexicon.entities
        return Extraction(
            per_report=per_report,
            synonyms=dict(sorted(synonyms.items())),
            superclass_of={n: e.superclass for n, e in ents.items()},
            scp_codes_of={n: list(e.scp_codes) for n, e in ents.items()},
            counters=dict(counters),
            provenance=self.describe(),
            superclass_names=dict(SUPERCLASS_NAMES),
        )


def _progress(items: list[str], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the train extra
        return items
    return tqdm(items, desc=desc, unit="report")
