"""Command line of the knowledge pipeline: ``extract``, ``dry-run``, ``stats``.

Mounted by the trainer as ``kmerl-train knowledge ...``; also ``python -m trainer.knowledge ...``.
Reports are read from a CSV (``--id-column``, ``--text-column``) or JSON-lines file; with ``--english``
on a PTB-XL database CSV the reports are composed from ``scp_codes`` instead of the German text.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kmerl_edge._errors import KmerlError

from ._extract import dry_run, extract_knowledge
from ._hf import TransformersChatBackend, TransformersConfig
from ._http import HTTPConfig, OpenAIChatBackend
from ._lexicon import LexiconBackend, LexiconConfig
from ._llm import ChatBackend, LLMBackend, LLMConfig
from ._scp import compose_english_report, load_scp_statements
from ._store import load_knowledge
from ._types import ExtractorBackend

__all__ = ["main", "build_parser"]


def _read_reports(args: argparse.Namespace) -> tuple[list[str], list[str | int]]:
    if args.shards:
        from trainer.shards import open_shards

        store = open_shards(args.shards)
        by_id: dict[str | int, str] = {}
        for m in store.meta:  # several windows of one record share its report
            by_id.setdefault(m["record_id"], m["report"])
        return list(by_id.values()), list(by_id)
    path = Path(args.reports)
    ids: list[str | int] = []
    texts: list[str] = []
    if path.suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    ids.append(row[args.id_column])
                    texts.append(row.get(args.text_column) or "")
        return texts, ids
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and (args.id_column not in rows[0] or (args.text_column not in rows[0] and not args.english)):
        raise KmerlError(f"{path} has no column {args.id_column!r} or {args.text_column!r}; "
                         f"columns: {sorted(rows[0])}")
    statements = load_scp_statements(args.scp_statements or path.parent) if args.english else None
    for row in rows:
        ids.append(row[args.id_column])
        if statements is not None:
            texts.append(compose_english_report(row["scp_codes"], statements))
        else:
            texts.append(row.get(args.text_column) or "")
    return texts, ids


def _backend(args: argparse.Namespace) -> ExtractorBackend:
    if args.backend == "lexicon":
        return LexiconBackend(LexiconConfig(uncertain=args.uncertain))
    chat: ChatBackend
    if args.backend == "http":
        if not args.base_url or not args.model:
            raise KmerlError("--backend http needs --base-url and --model")
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        chat = OpenAIChatBackend(HTTPConfig(base_url=args.base_url, model=args.model, api_key=key,
                                            timeout_s=args.timeout, max_retries=args.retries))
    else:
        if not args.model_path:
            raise KmerlError("--backend transformers needs --model-path")
        chat = TransformersChatBackend(TransformersConfig(model_path=args.model_path))
    prompts, verbatim = _read_prompts(args.prompts) if args.prompts else ({}, ())
    return LLMBackend(chat, LLMConfig(concurrency=args.concurrency, max_reask=args.max_reask,
                                      prompts=prompts, prompts_verbatim=verbatim))


def _read_prompts(path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """``{"merge": "...", "superclass": "...", "verbatim": ["merge", "superclass"]}`` -> (prompts, verbatim)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KmerlError(f"cannot read prompts file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise KmerlError(f"{path}: expected a JSON object of stage -> prompt text")
    verbatim = doc.pop("verbatim", [])
    if not isinstance(verbatim, list) or not all(isinstance(v, str) for v in verbatim):
        raise KmerlError(f"{path}: 'verbatim' must be a list of stage names")
    if not all(isinstance(v, str) for v in doc.values()):
        raise KmerlError(f"{path}: every prompt must be a string")
    try:
        LLMConfig(prompts=doc, prompts_verbatim=tuple(verbatim))
    except ValueError as exc:
        raise KmerlError(f"{path}: {exc}") from exc
    return doc, tuple(verbatim)


def build_parser(prog: str = "kmerl-train knowledge") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Cardiac entities and labels from ECG reports.")
    sub = ap.add_subparsers(dest="command", required=True)

    def add_input(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--reports", help="CSV or JSON-lines file of reports")
        src.add_argument("--shards", help="a shard store from `kmerl-train prepare` (its records' reports)")
        p.add_argument("--id-column", default="ecg_id")
        p.add_argument("--text-column", default="report")
        p.add_argument("--english", action="store_true",
                       help="compose English reports from a PTB-XL scp_codes column instead")
        p.add_argument("--scp-statements", help="scp_statements.csv (default: next to --reports)")
        p.add_argument("--backend", choices=("lexicon", "http", "transformers"), default="lexicon")
        p.add_argument("--uncertain", choices=("positive", "negative"), default="positive")
        p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
        p.add_argument("--model", help="model name served by the endpoint")
        p.add_argument("--api-key-env", help="name of an environment variable holding the API key")
        p.add_argument("--model-path", help="local transformers model directory")
        p.add_argument("--timeout", type=float, default=120.0)
        p.add_argument("--retries", type=int, default=5)
        p.add_argument("--concurrency", type=int, default=8)
        p.add_argument("--max-reask", type=int, default=2)
        p.add_argument("--cache", help="SQLite answer cache (resumes interrupted LLM runs)")
        p.add_argument("--prompts", help='JSON file replacing LLM prompts by stage, e.g. {"merge": "...", '
                       '"superclass": "...", "verbatim": ["merge", "superclass"]} for the paper\'s own text')

    ex = p = sub.add_parser("extract", help="extract entities and write the knowledge directory")
    add_input(p)
    p.add_argument("--out", required=True)
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--no-superclass-labels", action="store_true",
                   help="do not add each entity's superclass name as a label (the paper's aggregation)")
    p.add_argument("--no-progress", action="store_true")
    dry = sub.add_parser("dry-run", help="count reports and estimate LLM calls, asking nothing")
    add_input(dry)
    st = sub.add_parser("stats", help="print the statistics of a knowledge directory")
    st.add_argument("directory")
    from kmerl_edge._cli_common import add_common_args

    add_common_args(ap, prog=prog, subparsers=[ex, dry, st])  # -v / -q before or after the command
    return ap


def main(argv: Sequence[str] | None = None, prog: str = "kmerl-train knowledge") -> int:
    """Entry point; returns the exit status (1 with one line on stderr for a :class:`KmerlError`)."""
    args = build_parser(prog).parse_args(argv)
    from kmerl_edge._cli_common import configure

    quiet = configure(args) < 0  # -q: no progress bar
    try:
        if args.command == "stats":
            k = load_knowledge(args.directory)
            print(json.dumps({"stats": k.stats, "superclasses": {s: len(m) for s, m in k.superclasses.items()},
                              "top_entities": sorted(k.counts.items(), key=lambda kv: -kv[1])[:20],
                              "provenance": {x: k.provenance.get(x) for x in ("extractor", "model")}}, indent=1))
            return 0
        texts, ids = _read_reports(args)
        if args.command == "dry-run":
            print(json.dumps(dry_run(texts, _backend(args), cache=args.cache), indent=1))
            return 0
        out = extract_knowledge(texts, ids, out_dir=args.out, backend=_backend(args), cache=args.cache,
                                min_count=args.min_count, progress=not (args.no_progress or quiet),
                                superclass_labels=not args.no_superclass_labels)
        k = load_knowledge(out)
        print(f"wrote {out}: {len(k.record_ids)} reports x {len(k.vocabulary)} entities, "
              f"coverage {k.stats['coverage']:.3f}, {k.stats['reports_with_none']} reports with none")
        return 0
    except (KmerlError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
