"""``kmerl-train``: prepare shards, train (DDP via torchrun), evaluate, and the knowledge pipeline.

    kmerl-train prepare --source ptbxl --root ../shared/data/ptbxl --out shards/ptbxl
    torchrun --nproc-per-node 8 -m trainer.cli train --preset paper --data shards/mimic --out runs/paper
    kmerl-train train --preset cpu-small --data shards/ptbxl --out runs/small [--resume]
    kmerl-train eval --checkpoint runs/small --task ptbxl_super --splits ../shared/data/merl_splits \
        --data-root ../shared/data/ptbxl --out results/small
    kmerl-train knowledge …          (trainer.knowledge.cli)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from kmerl_edge._errors import KmerlError

__all__ = ["main", "read_source"]

SOURCES = ("mimic", "ptbxl", "cinc", "cpsc2018", "cpsc2021", "merl")


def read_source(source: str, root: str, *, split: str, **kw: Any) -> Any:
    """The ``split`` (train, val or test) of a :class:`trainer.data.Dataset` for ``--source``.

    PTB-XL splits by ``strat_fold`` (1–8 train, 9 val, 10 test), ``merl`` reads MERL's benchmark split CSV,
    ``cpsc2018`` / ``cinc`` follow MERL's icbeb / chapman split when ``splits`` (the merl_splits directory)
    is given, every other source splits by patient (:func:`trainer.data.select_split`)."""
    from . import data as d
    from ._errors import SplitError

    if split not in d.SPLITS:
        raise SplitError(f"unknown split {split!r}; known: {', '.join(d.SPLITS)}")
    if source == "ptbxl":
        return d.read_ptbxl(root, rate=int(kw["rate"]) if kw.get("rate") else None, split=split)
    if source == "merl":
        if not kw.get("splits") or not kw.get("task"):
            raise SplitError("--source merl needs --splits (the merl_splits directory) and --task")
        return d.read_merl_split(kw["splits"], kw["task"], split, data_root=root, rate=int(kw.get("rate") or 500))
    if source == "mimic":
        ds = d.read_mimic_iv_ecg(root)
    elif source == "cinc":
        ds = d.read_cinc(root)
    elif source == "cpsc2018":
        ds = d.read_cpsc2018(root, reference=kw.get("reference"))
    elif source == "cpsc2021":
        ds = d.read_cpsc2021_af(root)
    else:
        raise KmerlError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    task = d.MERL_SOURCE_TASKS.get(source)
    if task and kw.get("splits"):
        return d.select_benchmark_split(ds, split, kw["splits"], task)
    return d.select_split(ds, split)


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise KmerlError(f"--set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        try:
            val: Any = json.loads(v)
        except ValueError:
            val = v
        if "." in k:
            head, sub = k.split(".", 1)
            out.setdefault(head, {})[sub] = val
        else:
            out[k] = val
    return out


def _cmd_prepare(a: argparse.Namespace) -> int:
    from .shards import prepare_shards

    ds = read_source(a.source, a.root, rate=a.rate, splits=a.splits, task=a.task, split=a.split,
                     reference=a.reference)
    from .data import MERL_SOURCE_TASKS

    split_rule = {"ptbxl": "PTB-XL strat_fold (train 1-8, val 9, test 10)", "merl": f"MERL benchmark split ({a.task})"}
    bench = MERL_SOURCE_TASKS.get(a.source)
    if bench and a.splits:
        split_rule[a.source] = f"MERL benchmark split ({bench}; train = neither its val nor its test)"
    elif bench:
        print(f"note: MERL's {bench} split covers {a.source}; pass --splits DIR to follow it (now: by patient)",
              file=sys.stderr)
    split_info = {"source": a.source, "split": a.split,
                  "rule": split_rule.get(a.source, "by patient (sha256 of the patient id; 80/10/10)")}
    if a.limit:
        ds.items = ds.items[: a.limit]
    print(f"{ds.name}: {len(ds)} items; skipped by the reader: {ds.skipped or 'none'}", file=sys.stderr)
    prepare_shards(ds, a.out, shard_size=a.shard_size, workers=a.workers, windows=a.windows, dtype=a.dtype,
                   progress=not a.no_progress, split=split_info)
    from .shards import open_shards

    s = open_shards(a.out)
    print(json.dumps({"out": a.out, "rows": len(s), "failed": s.index["n_failed"]}))
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from ._config import TrainConfig, get_preset
    from .labels import LabelMatrix
    from .train import train

    cfg = TrainConfig.from_json(a.config) if a.config else get_preset(a.preset)
    ov = _overrides(a.set or [])
    if a.max_steps is not None:
        ov["max_steps"] = a.max_steps
    if ov:
        cfg = cfg.override(**ov)
    labels = LabelMatrix.from_knowledge(a.knowledge) if a.knowledge else None
    res = train(cfg, data=a.data, out_dir=a.out, labels=labels, resume=a.resume, device=a.device,
                progress=not a.no_progress, stop_at_step=a.stop_at_step,
                label_missing="zeros" if a.allow_unlabelled else "error")
    if res.rank == 0:
        print(json.dumps({"out": str(res.out_dir), "steps": res.steps, "checkpoint": str(res.final_checkpoint),
                          "samples_per_s": round(res.samples_per_s, 2),
                          "last_loss": res.losses[-1] if res.losses else None}))
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from .evaluate import run_eval

    leads = [s.split(",") for s in a.leads] if a.leads else None
    res = run_eval(
        checkpoint=a.checkpoint, task=a.task, splits_root=a.splits, data_root=a.data_root, out_dir=a.out,
        lead_subsets=leads, probe=not a.no_probe, probe_fractions=tuple(a.fractions), device=a.device,
        limit=a.limit, random_baseline=not a.no_baseline,
        allow_unknown_training_set=a.allow_unknown_training_set, prompts=a.prompts, n_boot=a.bootstrap,
    )
    for w in res["warnings"]:
        print(f"kmerl-train eval: WARNING: {w}", file=sys.stderr)
    print(json.dumps(res["summary"], indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kmerl-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser("prepare", help="preprocess a dataset into memory-mapped training shards")
    pr.add_argument("--source", choices=SOURCES, required=True)
    pr.add_argument("--root", required=True, help="dataset directory")
    pr.add_argument("--out", required=True)
    pr.add_argument("--rate", type=int, default=None,
                    help="PTB-XL: 500 or 100 Hz records of a download (default 500); the folds layout is 250 Hz")
    pr.add_argument("--splits", help="the merl_splits directory: merl reads it; cpsc2018 / cinc follow its "
                    "icbeb / chapman split")
    pr.add_argument("--task", help="merl: ptbxl_super, ptbxl_sub, ptbxl_form, ptbxl_rhythm, icbeb, chapman")
    pr.add_argument("--split", choices=("train", "val", "test"), required=True,
                    help="PTB-XL: strat_fold 1-8 / 9 / 10; merl: MERL's split CSV; other sources: by patient")
    pr.add_argument("--reference", help="cpsc2018: REFERENCE.csv (default <root>/REFERENCE.csv)")
    pr.add_argument("--shard-size", type=int, default=4096)
    pr.add_argument("--workers", type=int, default=None)
    pr.add_argument("--windows", choices=("first", "all"), default="first")
    pr.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    pr.add_argument("--limit", type=int, default=0, help="only the first N items")
    pr.add_argument("--no-progress", action="store_true")
    pr.set_defaults(func=_cmd_prepare)

    tr = sub.add_parser("train", help="train (launch with torchrun for several processes / GPUs)")
    tr.add_argument("--preset", default="cpu-small", help="paper, cpu-small or test")
    tr.add_argument("--config", help="a TrainConfig JSON file (instead of --preset)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config field (JSON value), e.g. --set loss.bce_weight=0")
    tr.add_argument("--data", required=True, help="shard store from `prepare`")
    tr.add_argument("--knowledge", help="knowledge directory (entity label matrix); default: dataset labels")
    tr.add_argument("--allow-unlabelled", action="store_true", help="records without a label row get zeros")
    tr.add_argument("--out", required=True)
    tr.add_argument("--resume", action="store_true")
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    tr.add_argument("--max-steps", type=int)
    tr.add_argument("--stop-at-step", type=int, help=argparse.SUPPRESS)
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="zero-shot and linear-probe evaluation on a MERL benchmark task")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--task", required=True)
    ev.add_argument("--splits", required=True, help="merl_splits directory")
    ev.add_argument("--data-root", required=True)
    ev.add_argument("--out", required=True)
    ev.add_argument("--leads", action="append", help="a named lead subset, e.g. I,II (repeatable)")
    ev.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ev.add_argument("--no-probe", action="store_true")
    ev.add_argument("--no-baseline", action="store_true")
    ev.add_argument("--limit", type=int, default=0)
    ev.add_argument("--prompts", choices=("names", "ckepe"), default="names",
                    help="zero-shot query texts: plain class names (default, as the paper) or MERL's CKEPE descriptions")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    ev.add_argument("--allow-unknown-training-set", action="store_true",
                    help="score a checkpoint that does not record its training records (flagged in the results)")
    ev.add_argument("--device", default="cpu")
    ev.set_defaults(func=_cmd_eval)
    sub.add_parser("knowledge", help="the knowledge-extraction pipeline (trainer.knowledge)", add_help=False)
    from kmerl_edge._cli_common import add_common_args

    add_common_args(p, prog="kmerl-train", subparsers=[pr, tr, ev])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # -v / -q before the command (``kmerl-train -q knowledge extract ...``) go to the knowledge CLI with the rest
    i = 0
    while i < len(args) and (args[i] in ("--verbose", "-q", "--quiet") or re.fullmatch(r"-v+", args[i])):
        i += 1
    if i < len(args) and args[i] == "knowledge":
        try:
            from trainer.knowledge import cli as kcli  # type: ignore[attr-defined]
        except ImportError:
            print("kmerl-train: the knowledge CLI (trainer.knowledge.cli) is not installed", file=sys.stderr)
            return 2
        return int(kcli.main(args[:i] + args[i + 1 :]) or 0)
    a = _parser().parse_args(args)
    from kmerl_edge._cli_common import configure

    if configure(a) < 0 and hasattr(a, "no_progress"):
        a.no_progress = True  # -q: no bars
    try:
        return int(a.func(a))
    except KmerlError as exc:
        print(f"kmerl-train: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
