"""Training throughput of ``kmerl-train train`` on the machine at hand (a GPU box or this CPU).

Three parts:

- :func:`tile_shards` makes a shard store that lists the rows of a real store ``k`` times (the same shard
  directories named ``k`` times in ``index.json``), so that a global batch of 512 fills many steps from a
  few hundred real records. It is a throughput fixture, not a training set: every row repeats ``k`` times.
- :func:`run_trainer` runs the real trainer under torchrun (``python -m torch.distributed.run --standalone
  --nproc-per-node N -m trainer.cli train …``) as a subprocess, and :func:`throughput_from_metrics` reads
  the wall clock off its ``metrics.csv``: for each log interval ``Δstep × global batch ÷ Δtime_s``. The
  in-epoch rate is the median over intervals that do not cross an epoch boundary (an epoch starts new
  DataLoader workers); the rate over all intervals (epoch restarts included) and the extra seconds of each
  epoch start are reported too. The ``samples_per_s`` column of ``metrics.csv`` times one step without the
  wait for its data (and asynchronous CUDA work), so it is not used.
- :func:`compute_ceiling` times the training step alone on GPU-resident batches (no loader), with fixed
  token masks and with the masks sampled on the host inside the step, synchronised.

::

    kmerl-bench train-throughput --data shards/ptbxl --out results/tp --device cuda --preset paper \\
        --batch 512 --workers 4,8 --k 128 --steps 150 --set 'text_encoder="/tmp/te"'
    kmerl-bench train-throughput --runs benchmarks/results/train_throughput/h200_2026-11-30/runs.json

The second form only reports: it reads the runs (metrics CSVs, compute-ceiling and nvidia-smi files)
listed in a ``runs.json`` and writes ``train_throughput.json`` / ``.md`` beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmerl_edge._errors import KmerlError

__all__ = [
    "ThroughputError",
    "MetricRow",
    "tile_shards",
    "read_metrics",
    "throughput_from_metrics",
    "run_trainer",
    "compute_ceiling",
    "parse_ceiling_report",
    "summarize_smi",
    "summarize_runs",
    "throughput_markdown",
    "add_arguments",
    "run",
]

_REPO = Path(__file__).resolve().parents[1]
PAPER_PAIRS = 771_693  # MIMIC-IV-ECG report pairs the paper trains on
PAPER_EPOCHS = 50


class ThroughputError(KmerlError):
    """A throughput measurement that cannot be made or read (bad store, failed run, unusable metrics)."""


# ------------------------------------------------------------------------------------------------ tiling
def tile_shards(src: str | Path, dst: str | Path, k: int) -> Path:
    """Write a shard store at ``dst`` that lists the rows of the complete store ``src`` ``k`` times.

    The shard directories of ``src`` are symlinked (never copied) into ``dst``; ``plan.json`` and the text
    caches (``text-cache-*.safetensors``: the set of reports is the same, so is the cache key) are copied;
    ``index.json`` names every shard ``k`` times and is written last, atomically, as
    :func:`trainer.shards.prepare_shards` does, so ``dst`` is a usable store only once it is complete.
    Its index records ``"tiled": {"source", "k", "rows_per_copy"}``. Returns ``dst``.
    """
    from trainer.shards import SHARD_FORMAT, write_json_atomic

    if k < 1:
        raise ThroughputError(f"k must be >= 1, got {k}")
    s = Path(src).resolve()
    d = Path(dst)
    ip = s / "index.json"
    if not ip.is_file():
        raise ThroughputError(f"{s} is not a complete shard store (no index.json)")
    index = json.loads(ip.read_text())
    if index.get("format") != SHARD_FORMAT:
        raise ThroughputError(f"{s}: unsupported shard format {index.get('format')!r}")
    if "tiled" in index:
        raise ThroughputError(f"{s} is itself a tiled store; tile the store it was made from")
    if d.resolve() == s:
        raise ThroughputError("the tiled store needs its own directory")
    d.mkdir(parents=True, exist_ok=True)
    old = d / "index.json"
    if old.exists():
        old.unlink()  # the store is incomplete (unusable) until the new index is written
    shards = list(index["shards"])
    for sh in shards:
        link = d / sh["name"]
        target = s / sh["name"]
        if not (target / ".complete").is_file():
            raise ThroughputError(f"{target} is not complete")
        if link.is_symlink() or link.exists():
            if link.resolve() != target.resolve():
                raise ThroughputError(f"{link} exists and is not a link to {target}")
            continue
        link.symlink_to(target, target_is_directory=True)
    for f in [s / "plan.json", *sorted(s.glob("text-cache-*.safetensors"))]:
        if f.is_file():
            tmp = d / f".{f.name}.tmp-{os.getpid()}"
            shutil.copyfile(f, tmp)
            os.replace(tmp, d / f.name)
    rows = sum(int(sh["rows"]) for sh in shards)
    tiled = dict(index)
    tiled["shards"] = shards * k
    tiled["n_rows"] = rows * k
    tiled["tiled"] = {"source": str(s), "k": k, "rows_per_copy": rows}
    write_json_atomic(d / "index.json", tiled)
    return d


# -------------------------------------------------------------------------------------- metrics reading
@dataclass(frozen=True)
class MetricRow:
    step: int
    epoch: int | None
    time_s: float


def read_metrics(path: str | Path) -> list[MetricRow]:
    """The ``step``, ``epoch`` and ``time_s`` columns of a trainer ``metrics.csv``."""
    p = Path(path)
    if not p.is_file():
        raise ThroughputError(f"{p}: no metrics file")
    out: list[MetricRow] = []
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"step", "time_s"} <= set(reader.fieldnames):
            raise ThroughputError(f"{p}: not a trainer metrics.csv (needs the columns step and time_s)")
        for i, r in enumerate(reader, start=2):
            try:
                ep = r.get("epoch")
                out.append(MetricRow(int(r["step"]), int(ep) if ep not in (None, "") else None, float(r["time_s"])))
            except (TypeError, ValueError):
                raise ThroughputError(f"{p}, line {i}: unreadable step/epoch/time_s {r!r}") from None
    return out


def throughput_from_metrics(
    rows: Sequence[MetricRow], *, global_batch: int, store_rows: int, paper_pairs: int = PAPER_PAIRS,
    paper_epochs: int = PAPER_EPOCHS,
) -> dict[str, Any]:
    """Wall-clock samples/s from consecutive logged rows (see the module docstring).

    Step ``s`` (1-based) belongs to epoch ``(s - 1) // steps_per_epoch`` with ``steps_per_epoch =
    store_rows // global_batch``, as in :mod:`trainer.train`; an interval ``(a, b]`` crosses an epoch
    boundary when steps ``a`` and ``b`` lie in different epochs. The ``epoch`` column, where present, must
    agree (else the batch or row count given is not the run's). Intervals whose ``time_s`` did not advance
    (its resolution is 10 ms) are counted as unresolved and left out.
    """
    if global_batch < 1 or store_rows < 1:
        raise ThroughputError("global_batch and store_rows must be >= 1")
    spe = store_rows // global_batch
    if spe < 1:
        raise ThroughputError(f"{store_rows} rows cannot fill one global batch of {global_batch}")
    rows = list(rows)
    for r in rows:
        if r.step < 1:
            raise ThroughputError(f"step {r.step} in the metrics: steps start at 1")
        if r.epoch is not None and r.epoch != (r.step - 1) // spe:
            raise ThroughputError(
                f"step {r.step} is logged in epoch {r.epoch}, but {store_rows} rows at a global batch of "
                f"{global_batch} ({spe} steps per epoch) put it in epoch {(r.step - 1) // spe}")
    if len(rows) < 2:
        raise ThroughputError("fewer than two logged steps: no interval to measure (lower log_every or add steps)")
    intervals: list[dict[str, Any]] = []
    unresolved = 0
    for a, b in zip(rows, rows[1:]):
        if b.step <= a.step:
            raise ThroughputError(f"steps do not increase in the metrics ({a.step} then {b.step})")
        dt = b.time_s - a.time_s
        if dt <= 0:
            unresolved += 1
            continue
        crosses = (a.step - 1) // spe != (b.step - 1) // spe
        intervals.append({"from_step": a.step, "to_step": b.step, "seconds": round(dt, 4),
                          "samples_per_s": (b.step - a.step) * global_batch / dt, "crosses_epoch": crosses})
    inside = [iv for iv in intervals if not iv["crosses_epoch"]]
    if not inside:
        raise ThroughputError("no log interval lies within one epoch (lower log_every, or more rows per epoch)")
    rates = [iv["samples_per_s"] for iv in inside]
    med = statistics.median(rates)
    pooled_in = sum((iv["to_step"] - iv["from_step"]) * global_batch for iv in inside) / sum(
        iv["seconds"] for iv in inside)
    span_t = rows[-1].time_s - rows[0].time_s
    overall = (rows[-1].step - rows[0].step) * global_batch / span_t if span_t > 0 else math.nan
    # extra seconds an epoch start costs: a boundary interval's time minus what its steps take in-epoch
    restarts = [iv["seconds"] - (iv["to_step"] - iv["from_step"]) * global_batch / med
                for iv in intervals if iv["crosses_epoch"]]
    restart_med = statistics.median(restarts) if restarts else None
    paper_samples = paper_pairs * paper_epochs
    paper_s = paper_samples / med + (paper_epochs * restart_med if restart_med is not None else 0.0)
    return {
        "global_batch": global_batch,
        "store_rows": store_rows,
        "steps_per_epoch": spe,
        "logged_steps": [rows[0].step, rows[-1].step],
        "intervals": [{**iv, "samples_per_s": round(iv["samples_per_s"], 1)} for iv in intervals],
        "unresolved_intervals": unresolved,
        "in_epoch": {
            "intervals": len(inside),
            "median_samples_per_s": round(med, 1),
            "min_samples_per_s": round(min(rates), 1),
            "max_samples_per_s": round(max(rates), 1),
            "pooled_samples_per_s": round(pooled_in, 1),
        },
        "all_intervals_samples_per_s": round(overall, 1),
        "epoch_restart_extra_s": [round(x, 2) for x in restarts],
        "epoch_restart_extra_s_median": None if restart_med is None else round(restart_med, 2),
        "paper_50_epochs": {
            "pairs": paper_pairs,
            "epochs": paper_epochs,
            "hours": round(paper_s / 3600, 2),
            "rule": "pairs × epochs ÷ in-epoch median + epochs × median epoch-restart extra seconds",
        },
    }


# --------------------------------------------------------------------------------------- running the trainer
def _git_commit(cwd: Path) -> str | None:
    """The checkout's commit, with ``+modified`` when the code that trains (``trainer/``, ``kmerl_edge/``)
    differs from it: a tree copied to another machine can carry stale git metadata."""
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return None
        d = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "trainer", "kmerl_edge"], cwd=cwd,
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() + ("" if d.returncode == 0 else "+modified")


def run_trainer(
    data: str | Path, out: str | Path, *, preset: str, nproc: int = 1, device: str = "cuda", workers: int | None = None,
    batch: int | None = None, steps: int, log_every: int = 10, sets: Sequence[str] = (), timeout_s: float = 600.0,
    env: Mapping[str, str] | None = None, repo: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``steps`` steps on ``data`` under torchrun with ``nproc`` processes into ``out`` (a new folder)
    and return the command, its wall time and the run's ``metrics.csv`` path. ``workers`` / ``batch`` (per
    process) override the preset; checkpoints only at the end. ``repo``: the checkout whose ``trainer``
    runs (default: this one; another commit's for an A/B). :class:`ThroughputError` when it fails."""
    out = Path(out).resolve()
    data = Path(data).resolve()
    root = _REPO if repo is None else Path(repo).resolve()
    if not (root / "trainer" / "cli.py").is_file():
        raise ThroughputError(f"{root} holds no trainer/cli.py")
    if out.exists():
        raise ThroughputError(f"{out} exists; a throughput run needs a new folder")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "trainer.cli", "train", "--preset", preset, "--data", str(data), "--out", str(out),
           "--device", device, "--max-steps", str(steps), "--no-progress",
           "--set", f"log_every={log_every}", "--set", f"ckpt_every={steps + 1}"]
    if workers is not None:
        cmd += ["--set", f"num_workers={workers}"]
    if batch is not None:
        cmd += ["--set", f"batch_size={batch}"]
    for s in sets:
        cmd += ["--set", s]
    run_env = dict(os.environ if env is None else env)
    run_env["PYTHONPATH"] = str(root) + (os.pathsep + run_env["PYTHONPATH"] if run_env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=root, env=run_env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ThroughputError(f"the training run did not finish within {timeout_s:.0f} s: {' '.join(cmd)}") from None
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise ThroughputError(f"the training run failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    summary = None
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            try:
                summary = json.loads(line)
            except ValueError:
                continue
            break
    return {"command": ["torchrun", *cmd[3:]], "wall_s": round(wall, 2), "metrics": str(out / "metrics.csv"),
            "trainer_summary": summary}


# ------------------------------------------------------------------------------------------ compute ceiling
def compute_ceiling(
    device: str = "cuda", batch: int = 512, *, preset: str = "paper", iters: int = 30, warmup: int = 5,
    text_dim: int = 384, n_entities: int = 40, seed: int = 0,
) -> dict[str, Any]:
    """The training step of ``preset`` alone on GPU-resident random batches (no loader; the preset's
    precision: bf16 autocast on CUDA for ``paper``), synchronised, the mean over ``iters`` steps after
    ``warmup``: once with fixed token masks and once with the masks sampled on the host inside the
    step (what the trainer did before the loader workers made them), and the host mask sampling alone."""
    import torch

    from kmerl_edge._model import create_model
    from trainer._config import get_preset
    from trainer._masking import sample_token_keep
    from trainer.train import KMERLTrainModule, _precision

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ThroughputError("--device cuda was asked for but torch sees no CUDA device")
    cfg = get_preset(preset, batch_size=batch)
    torch.manual_seed(seed)
    model = create_model(cfg.model, text_dim=text_dim, temperature=cfg.loss.temperature).to(dev)
    mod = KMERLTrainModule(model, None, cfg).to(dev)
    params = [p for p in mod.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    precision = _precision(cfg, dev)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    n_samples = model.cfg.tokens_per_lead * model.cfg.patch_len  # 10 s at 500 Hz
    sig = torch.randn(batch, 12, n_samples, device=dev)
    rep = torch.randn(batch, text_dim, device=dev)
    ent = torch.randn(n_entities, text_dim, device=dev)
    y = (torch.rand(batch, n_entities, device=dev) > 0.9).float()
    present = torch.ones(batch, 12, dtype=torch.bool)
    tpl = model.cfg.tokens_per_lead
    groups = torch.arange(batch, device=dev)

    def masks(i: int) -> tuple[Any, Any]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        k, m, _ = sample_token_keep(present, tokens_per_lead=tpl, cfg=cfg.masking, generator=g)
        return k.to(dev), m.to(dev)

    fixed = masks(0)

    def step(i: int, host: bool) -> None:
        k, m = masks(i) if host else fixed
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _, _ = mod(sig, k, m, rep, ent, y, "mean", groups)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    res: dict[str, Any] = {"device": str(dev), "preset": preset, "model": cfg.model, "batch": batch,
                           "precision": precision, "iters": iters, "warmup": warmup}
    for host in (False, True):
        for i in range(warmup):
            step(i, host)
        sync()
        t = time.perf_counter()
        for i in range(iters):
            step(warmup + i, host)
        sync()
        dt = (time.perf_counter() - t) / iters
        key = "host_masks" if host else "fixed_masks"
        res[key] = {"ms_per_step": round(dt * 1e3, 2), "samples_per_s": round(batch / dt, 1)}
    t = time.perf_counter()
    for i in range(iters):
        masks(i)
    res["host_mask_sampling_ms_per_batch"] = round((time.perf_counter() - t) / iters * 1e3, 2)
    res["peak_gpu_memory_gib"] = (round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
                                  if dev.type == "cuda" else None)
    return res


_CEIL_RE = re.compile(r"compute ceiling B=(\d+) host_masks=(True|False): ([\d.]+) ms/step, ([\d.]+) samples/s")
_MASK_RE = re.compile(r"host mask sampling alone: ([\d.]+) ms/batch")
_MEM_RE = re.compile(r"peak GPU memory GiB ([\d.]+)")


def parse_ceiling_report(text: str) -> list[dict[str, Any]]:
    """The compute-ceiling results of a text report (the lines an earlier standalone script printed:
    ``compute ceiling B=512 host_masks=False: 59.3 ms/step, 8640 samples/s`` …), one dict per batch."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        if m := _CEIL_RE.search(line):
            b = int(m.group(1))
            if cur is None or cur["batch"] != b:
                cur = {"batch": b}
                out.append(cur)
            cur["host_masks" if m.group(2) == "True" else "fixed_masks"] = {
                "ms_per_step": float(m.group(3)), "samples_per_s": float(m.group(4))}
        elif (m := _MASK_RE.search(line)) and cur is not None:
            cur["host_mask_sampling_ms_per_batch"] = float(m.group(1))
        elif (m := _MEM_RE.search(line)) and cur is not None:
            cur["peak_gpu_memory_gib"] = round(float(m.group(1)), 2)
    return out


def summarize_smi(path: str | Path) -> dict[str, Any]:
    """An ``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1`` log: the peak
    memory used and the median utilisation over the samples with more than half the peak memory in use
    (while a training process held the GPU)."""
    util: list[float] = []
    mem: list[float] = []
    with Path(path).open(newline="") as fh:
        for r in csv.reader(fh):
            if len(r) < 3 or not r[1].strip().endswith("%"):
                continue
            try:
                util.append(float(r[1].strip().rstrip("%").strip()))
                mem.append(float(r[2].strip().split()[0]))
            except ValueError:
                continue
    if not mem:
        raise ThroughputError(f"{path}: no nvidia-smi samples")
    peak = max(mem)
    busy = [u for u, m in zip(util, mem) if m > peak / 2]
    return {"samples": len(mem), "peak_memory_mib": peak, "busy_samples": len(busy),
            "busy_median_utilization_pct": statistics.median(busy) if busy else None}


# ------------------------------------------------------------------------------------------------ report
def summarize_runs(manifest: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Apply :func:`throughput_from_metrics` to every run of a ``runs.json`` manifest (paths relative to
    ``base``), read its compute-ceiling and nvidia-smi files, and return the report."""
    runs = []
    for r in manifest["runs"]:
        need = {"name", "metrics", "global_batch", "store_rows"}
        if not need <= set(r):
            raise ThroughputError(f"run {r.get('name')!r} in the manifest lacks {sorted(need - set(r))}")
        tp = throughput_from_metrics(read_metrics(base / r["metrics"]), global_batch=int(r["global_batch"]),
                                     store_rows=int(r["store_rows"]))
        if r.get("preset", "paper") != "paper":
            tp.pop("paper_50_epochs")  # another model: its time for the paper's corpus means nothing
        runs.append({**r, "throughput": tp})
    ceilings: list[dict[str, Any]] = []
    for c in manifest.get("compute_ceiling", []):
        if "report" in c:
            ceilings += [{**x, "source": c["report"]} for x in parse_ceiling_report((base / c["report"]).read_text())]
        else:
            ceilings.append(dict(c))
    smi = {f: summarize_smi(base / f) for f in manifest.get("smi", [])}
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        if r.get("group"):
            g = groups.setdefault(r["group"], {"runs": [], "in_epoch_medians": [], "trainer_samples_per_s": []})
            g["runs"].append(r["name"])
            g["in_epoch_medians"].append(r["throughput"]["in_epoch"]["median_samples_per_s"])
            if (r.get("trainer_summary") or {}).get("samples_per_s") is not None:
                g["trainer_samples_per_s"].append(r["trainer_summary"]["samples_per_s"])
    for g in groups.values():
        g["median_in_epoch_samples_per_s"] = round(statistics.median(g["in_epoch_medians"]), 1)
        ts = g["trainer_samples_per_s"]
        g["median_trainer_samples_per_s"] = round(statistics.median(ts), 1) if ts else None
    keep = {k: v for k, v in manifest.items() if k not in ("runs", "compute_ceiling", "smi")}
    return {"kind": "train_throughput", **keep, "runs": runs, "groups": groups, "compute_ceiling": ceilings,
            "nvidia_smi": smi}


def throughput_markdown(rep: Mapping[str, Any]) -> str:
    lines = ["## Training throughput", ""]
    if rep.get("machine"):
        lines += [f"Machine: {rep['machine']}.", ""]
    lines += [
        "| run | trainer | nproc | batch | workers | rows (K) | steps | in-epoch samples/s, median [min, max] "
        "| all intervals | epoch restart extra s | 50 paper epochs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rep["runs"]:
        tp = r["throughput"]
        ie = tp["in_epoch"]
        rs = tp["epoch_restart_extra_s_median"]
        paper = tp.get("paper_50_epochs")
        hours = "–" if paper is None else f"{paper['hours']:.2f} h"
        lines.append(
            f"| {r['name']} | {r.get('trainer', '')} | {r.get('nproc', 1)} | {tp['global_batch']} | "
            f"{r.get('workers', '')} | {tp['store_rows']:,} ({r.get('k', '')}) | {tp['logged_steps'][1]} | "
            f"**{ie['median_samples_per_s']:,.0f}** [{ie['min_samples_per_s']:,.0f}, {ie['max_samples_per_s']:,.0f}] "
            f"({ie['intervals']} intervals) | {tp['all_intervals_samples_per_s']:,.0f} | "
            f"{'–' if rs is None else f'{round(rs, 2) or 0.0:.2f}'} | "
            f"{hours} |")
    if rep.get("groups"):
        lines += ["", "| group | runs | in-epoch samples/s, median of the runs' medians | each run "
                  "| the trainer's own samples/s (start-up included), median |", "| --- | --- | --- | --- | --- |"]
        for name, g in rep["groups"].items():
            ts = g["median_trainer_samples_per_s"]
            lines.append(f"| {name} | {len(g['runs'])} | **{g['median_in_epoch_samples_per_s']:,.0f}** | "
                         f"{', '.join(f'{x:,.0f}' for x in g['in_epoch_medians'])} | "
                         f"{'–' if ts is None else f'{ts:,.0f}'} |")
    if rep.get("compute_ceiling"):
        lines += ["", "| compute ceiling (no loader) | batch | ms/step | samples/s | with host mask sampling "
                  "| host mask sampling ms/batch | peak GPU memory GiB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in rep["compute_ceiling"]:
            fx, hm = c.get("fixed_masks", {}), c.get("host_masks", {})
            lines.append(
                f"| {c.get('device', c.get('source', ''))} | {c['batch']} | {fx.get('ms_per_step')} | "
                f"{fx.get('samples_per_s'):,.0f} | {hm.get('samples_per_s'):,.0f} | "
                f"{c.get('host_mask_sampling_ms_per_batch')} | {c.get('peak_gpu_memory_gib')} |")
    if rep.get("nvidia_smi"):
        lines += ["", "| nvidia-smi log | peak memory MiB | median utilisation while training % |",
                  "| --- | --- | --- |"]
        for f, s in rep["nvidia_smi"].items():
            lines.append(f"| {f} | {s['peak_memory_mib']:,.0f} | {s['busy_median_utilization_pct']} |")
    lines += ["", "In-epoch: the median over log intervals within one epoch of Δstep × global batch ÷ Δtime_s "
              "(`metrics.csv`, wall clock). All intervals: first to last logged step, epoch restarts included. "
              f"50 paper epochs (`paper` preset runs only): {PAPER_PAIRS:,} pairs × {PAPER_EPOCHS} ÷ the in-epoch "
              "median, plus 50 × the median epoch-restart extra seconds."]
    if rep.get("notes"):
        lines += [""] + [f"- {n}" for n in rep["notes"]]
    return "\n".join(lines) + "\n"


def _write(rep: dict[str, Any], out: Path) -> None:
    from .report import write_json

    write_json(rep, out / "train_throughput.json")
    md = throughput_markdown(rep)
    (out / "train_throughput.md").write_text(md)
    print(md)
    print(f"wrote {out / 'train_throughput.json'} and {out / 'train_throughput.md'}")


# --------------------------------------------------------------------------------------------------- CLI
def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return vals


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``kmerl-bench train-throughput`` (and ``python -m benchmarks.train_throughput``)."""
    ap.add_argument("--data", help="a complete shard store (from `kmerl-train prepare`) to tile")
    ap.add_argument("--out", help="results folder: runs.json, metrics CSVs, train_throughput.json / .md")
    ap.add_argument("--runs", help="only report: a runs.json written by an earlier run (results go beside it)")
    ap.add_argument("--work", help="keep the tiled store and the training runs here (default: a temporary "
                                   "folder, removed afterwards)")
    ap.add_argument("--preset", default="paper", help="training preset (default paper)")
    ap.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per node for torchrun (default 1)")
    ap.add_argument("--workers", type=_ints, default=None, help="loader workers per process, comma-separated "
                                                                "(default: the preset's)")
    ap.add_argument("--batch", type=_ints, default=None, help="batch per process, comma-separated (default: preset)")
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per run (default 150)")
    ap.add_argument("--k", type=int, default=128, help="times the store's rows are listed (default 128)")
    ap.add_argument("--log-every", type=int, default=10, help="metrics interval in steps (default 10)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to `kmerl-train train --set` (e.g. 'text_encoder=\"/path\"')")
    ap.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the training step alone (default on)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per training run (default 600)")
    ap.add_argument("--trainer-repo", default=None,
                    help="the checkout whose trainer runs (default: this one), e.g. an older commit for an A/B")
    ap.add_argument("--label", default=None, help="trainer label in the table (default: its git commit)")


def run(a: argparse.Namespace) -> dict[str, Any]:
    """``kmerl-bench train-throughput``: measure (``--data``) or only report (``--runs``)."""
    if a.runs:
        mp = Path(a.runs)
        if not mp.is_file():
            raise ThroughputError(f"{mp}: no runs.json")
        rep = summarize_runs(json.loads(mp.read_text()), mp.parent)
        _write(rep, Path(a.out) if a.out else mp.parent)
        return rep
    if not a.data or not a.out:
        raise ThroughputError("give --data STORE and --out DIR (or --runs runs.json to only report)")
    if a.k < 1 or a.steps < 1 or a.nproc < 1 or a.log_every < 1:
        raise ThroughputError("--k, --steps, --nproc and --log-every must be >= 1")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.work:
        return _measure(a, out, Path(a.work))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kmerl-train-throughput-") as tmp:  # runs hold checkpoints
        return _measure(a, out, Path(tmp))


def _measure(a: argparse.Namespace, out: Path, work: Path) -> dict[str, Any]:
    from trainer._config import get_preset

    cfg = get_preset(a.preset)
    tiled = tile_shards(a.data, work / f"tiled-k{a.k}", a.k)
    store_rows = int(json.loads((tiled / "index.json").read_text())["n_rows"])
    repo = Path(a.trainer_repo).resolve() if a.trainer_repo else _REPO
    commit = _git_commit(repo)
    label = a.label or (commit[:7] + commit[40:] if commit else "")
    smi = None
    smi_file = out / "smi.csv"
    if a.device.startswith("cuda") and shutil.which("nvidia-smi"):
        with smi_file.open("w") as fh:  # the child keeps its own descriptor
            smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                                    "--format=csv", "-l", "1"], stdout=fh, stderr=subprocess.DEVNULL)
    runs: list[dict[str, Any]] = []
    try:
        for b in a.batch or [cfg.batch_size]:
            for w in a.workers or [cfg.num_workers]:
                name = f"{a.preset}-b{b}-w{w}-n{a.nproc}"
                print(f"[train-throughput] {name}: {a.steps} steps on {store_rows:,} rows", flush=True)
                r = run_trainer(tiled, work / f"run-{name}-{time.strftime('%Y%m%d-%H%M%S')}", preset=a.preset,
                                nproc=a.nproc, device=a.device, workers=w, batch=b, steps=a.steps,
                                log_every=a.log_every, sets=a.set, timeout_s=a.timeout, repo=repo)
                shutil.copyfile(r["metrics"], out / f"{name}.metrics.csv")
                runs.append({"name": name, "trainer": label, "commit": commit, "preset": a.preset, "nproc": a.nproc,
                             "device": a.device, "workers": w, "batch": b, "global_batch": b * a.nproc,
                             "k": a.k, "store_rows": store_rows, "steps": a.steps, "log_every": a.log_every,
                             "metrics": f"{name}.metrics.csv", "command": r["command"], "wall_s": r["wall_s"],
                             "trainer_summary": r["trainer_summary"]})
    finally:
        if smi is not None:
            smi.terminate()
            try:
                smi.wait(timeout=10)
            except subprocess.TimeoutExpired:
                smi.kill()
                smi.wait()
    from ._stats import machine_info

    mi = machine_info()
    manifest: dict[str, Any] = {"machine": _machine_line(a.device, mi), "machine_info": mi,
                                "source_store": str(Path(a.data).resolve()), "runs": runs}
    if a.ceiling:
        manifest["compute_ceiling"] = [compute_ceiling(a.device, b, preset=a.preset)
                                       for b in a.batch or [cfg.batch_size]]
    if smi is not None and smi_file.stat().st_size > 0:
        manifest["smi"] = [smi_file.name]
    from .report import write_json

    write_json(manifest, out / "runs.json")
    rep = summarize_runs(manifest, out)
    _write(rep, out)
    return rep


def _machine_line(device: str, mi: Mapping[str, Any]) -> str:
    gpu = ""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0) + ", "
    v = mi.get("versions", {})
    return f"{gpu}{mi.get('cpu')}, {mi.get('cores')} cores, torch {v.get('torch')}, {mi.get('date')}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    a = ap.parse_args(argv)
    try:
        run(a)
    except KmerlError as exc:
        print(f"train-throughput: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
