"""Measure the lexicon extractor against PTB-XL's ``scp_codes``.

Usage::

    python -m trainer.knowledge.evaluate --ptbxl ../shared/data/ptbxl --json OUT.json

Two report sets are scored, on the same records: (1) the free-text ``report`` column (mostly German, some
Swedish and English), and (2) English reports composed from ``scp_codes`` with
:func:`compose_english_report`. Set (2) is nearly circular (the composer uses the very SCP descriptions
the lexicon contains), so it checks the plumbing and the description coverage, not real-world accuracy.

A record's predicted codes are the union of the SCP codes of its positive entities (uncertain mentions
count as positive); the reference is every key of ``scp_codes`` (any likelihood). Reported: micro
precision / recall / F1 over (record, code) pairs; macro precision and recall averaged over the codes
present in the reference (a code never predicted has precision 0); the same at superclass level (NORM, MI,
STTC, CD, HYP via ``diagnostic_class``); and per-code counts.

Every score is given for all records and, under ``splits``, separately for PTB-XL's recommended
``strat_fold`` split: ``tuning`` (folds 1-8, the only reports the hand-written patterns were tuned on) and
``held_out`` (folds 9-10, never looked at while writing patterns), so the held-out numbers are an honest
estimate of the lexicon on unseen reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._lexicon import LexiconBackend, LexiconConfig
from ._scp import ScpStatement, compose_english_report, load_scp_statements, parse_scp_codes

__all__ = ["score", "evaluate_ptbxl", "main", "SPLITS"]

#: ``strat_fold`` values of each reported split (PTB-XL's recommended folds: 9 validation, 10 test).
SPLITS: dict[str, tuple[int, ...]] = {"tuning": (1, 2, 3, 4, 5, 6, 7, 8), "held_out": (9, 10)}


def score(pred: Sequence[set[str]], gold: Sequence[set[str]]) -> dict[str, Any]:
    """Micro and macro (over labels present in ``gold``) precision / recall / F1, plus per-label counts."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for p, g in zip(pred, gold, strict=True):
        for c in p & g:
            tp[c] += 1
        for c in p - g:
            fp[c] += 1
        for c in g - p:
            fn[c] += 1
    TP, FP, FN = sum(tp.values()), sum(fp.values()), sum(fn.values())
    micro_p = TP / (TP + FP) if TP + FP else 0.0
    micro_r = TP / (TP + FN) if TP + FN else 0.0
    present = sorted(c for c in set(tp) | set(fn) if tp[c] + fn[c] > 0)
    per = {c: {"tp": tp[c], "fp": fp[c], "fn": fn[c], "support": tp[c] + fn[c],
               "precision": tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0,
               "recall": tp[c] / (tp[c] + fn[c])} for c in present}
    macro_p = sum(v["precision"] for v in per.values()) / len(per) if per else 0.0
    macro_r = sum(v["recall"] for v in per.values()) / len(per) if per else 0.0
    f1 = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    return {"n_records": len(gold), "micro_precision": micro_p, "micro_recall": micro_r, "micro_f1": f1,
            "macro_precision": macro_p, "macro_recall": macro_r, "n_labels_present": len(per),
            "predicted_only_labels": sorted(set(fp) - set(present)), "per_label": per}


def _codes_of(entities: dict[str, bool], scp_of: dict[str, list[str]]) -> set[str]:
    return {c for e in entities for c in scp_of.get(e, [])}


def _superclasses(codes: set[str], statements: dict[str, ScpStatement]) -> set[str]:
    return {statements[c].diagnostic_class for c in codes if c in statements and statements[c].diagnostic_class}


def evaluate_ptbxl(ptbxl_dir: str | Path, backend: LexiconBackend | None = None) -> dict[str, Any]:
    """Score ``backend`` (default: the shipped lexicon) on a PTB-XL directory; returns a JSON-able dict."""
    ptbxl_dir = Path(ptbxl_dir)
    statements = load_scp_statements(ptbxl_dir / "scp_statements.csv")
    with (ptbxl_dir / "ptbxl_database.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    gold = [set(parse_scp_codes(r["scp_codes"])) for r in rows]
    folds = [int(float(r["strat_fold"])) if r.get("strat_fold") else None for r in rows]
    split_idx = {name: [i for i, f in enumerate(folds) if f in members] for name, members in SPLITS.items()}
    backend = backend or LexiconBackend(LexiconConfig())
    result: dict[str, Any] = {"n_records": len(rows), "reference": "scp_codes keys (any likelihood)",
                              "extractor": backend.describe(),
                              "splits": {name: {"strat_folds": list(SPLITS[name]), "n_records": len(idx)}
                                         for name, idx in split_idx.items()}}
    sets = {
        "ptbxl_free_text": [r["report"] for r in rows],
        "composed_english": [compose_english_report(g_row["scp_codes"], statements) for g_row in rows],
    }
    for name, reports in sets.items():
        ext = backend.extract(reports)
        pred = [_codes_of(e, ext.scp_codes_of) for e in ext.per_report]
        pred_sup = [_superclasses(p, statements) for p in pred]
        gold_sup = [_superclasses(g, statements) for g in gold]
        result[name] = {
            "codes": score(pred, gold),
            "superclasses": score(pred_sup, gold_sup),
            "reports_with_no_entity": sum(1 for e in ext.per_report if not e),
            "counters": ext.counters,
            "splits": {
                split: {
                    "codes": score([pred[i] for i in idx], [gold[i] for i in idx]),
                    "superclasses": score([pred_sup[i] for i in idx], [gold_sup[i] for i in idx]),
                    "reports_with_no_entity": sum(1 for i in idx if not ext.per_report[i]),
                }
                for split, idx in split_idx.items()
            },
        }
    result["note"] = ("composed_english is nearly circular: the composer writes the SCP descriptions that "
                      "the lexicon contains as patterns; it measures plumbing, not accuracy.")
    return result


def _table(result: dict[str, Any]) -> str:
    lines = ["| report set | records | level | micro P | micro R | micro F1 | macro P | macro R | labels |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("ptbxl_free_text", "composed_english"):
        parts = [(f"all ({result['n_records']})", result[name])]
        if name == "ptbxl_free_text":
            parts += [(f"{split} (folds {SPLITS[split][0]}-{SPLITS[split][-1]}, {result['splits'][split]['n_records']})",
                       result[name]["splits"][split]) for split in SPLITS]
        for records, part in parts:
            for level in ("codes", "superclasses"):
                s = part[level]
                lines.append(f"| {name} | {records} | {level} | {s['micro_precision']:.3f} | "
                             f"{s['micro_recall']:.3f} | {s['micro_f1']:.3f} | {s['macro_precision']:.3f} | "
                             f"{s['macro_recall']:.3f} | {s['n_labels_present']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m trainer.knowledge.evaluate --ptbxl DIR [--json OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m trainer.knowledge.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--ptbxl", required=True, help="PTB-XL directory with ptbxl_database.csv, scp_statements.csv")
    ap.add_argument("--json", help="write the full result (per-code counts included) here")
    ap.add_argument("--uncertain", choices=("positive", "negative"), default="positive")
    args = ap.parse_args(argv)
    result = evaluate_ptbxl(args.ptbxl, LexiconBackend(LexiconConfig(uncertain=args.uncertain)))
    print(_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
