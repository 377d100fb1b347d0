"""Size the student for accuracy, not only speed: a width × depth sweep with the v2 training recipe.

Every point of the sweep is a transformer of the ``kmerl-student-s`` family (patch 100 samples, one query
layer, MLP and projection ``mlp_ratio`` × width) trained from scratch exactly as the v2 default model is
(``python -m export.default_model --teacher-model kmerl-student-s --epochs 10 --distill-steps 0 --max-leads
12``): the same corpus (split by patient), the same knowledge labels, the same seed, epochs and learning
rate; no distillation. For each point it records

- held-out AUCs with percentile-bootstrap 95 % intervals: PTB-XL fold-10 superclass macro AUC with 12
  leads, I+II+V2 and I; atrial fibrillation AUC on the held-out CPSC-2021 Holter windows with lead I and
  I+II (the model alone, before the rhythm fusion);
- analytic FLOPs per window (:mod:`benchmarks.flops`) and the measured median ONNX Runtime fp32 latency
  per window at 1, 3 and 12 leads (batch 1, one thread, :func:`benchmarks.latency.run_latency`; the model
  alone and ``predict`` end to end), with the load average at the time;

then writes ``sweep.json``, ``sweep.md`` and ``auc_vs_cost.png`` and names the knee within the budget::

    OMP_NUM_THREADS=1 python -m benchmarks.sweep --shared ../shared/data --work runs/sweep \\
        --points 32x4,48x4,64x2,64x4,64x6,96x2,112x2,96x4,128x4 --epochs 10 --out benchmarks/results/sweep

The run is resumable: a point whose ``result.json`` exists under ``--work`` is not trained again;
``--report-only`` rebuilds the tables from what is there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._stats import macro_auc_ranks

__all__ = [
    "Budget",
    "SweepPoint",
    "budget_use",
    "combine_rounds",
    "knee",
    "add_arguments",
    "main",
    "markdown_table",
    "pareto_front",
    "paired_delta",
    "parse_points",
    "run",
    "score",
    "score_sd",
    "seed_mean_auc_ci",
    "seed_paired_deltas",
    "seed_scores",
]

#: the AUCs each point reports: key → (evaluation, lead set)
AUC_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "superclass 12 leads": ("ptbxl", ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")),
    "superclass I+II+V2": ("ptbxl", ("I", "II", "V2")),
    "superclass I": ("ptbxl", ("I",)),
    "Holter AF I": ("af", ("I",)),
    "Holter AF I+II": ("af", ("I", "II")),
}
LEAD_COUNTS: tuple[int, ...] = (1, 3, 12)


@dataclass(frozen=True)
class SweepPoint:
    """One student size: ``width`` × ``depth`` encoder with ``heads`` heads and MLP ``mlp_ratio`` × width."""

    width: int
    depth: int
    heads: int = 2
    mlp_ratio: int = 2

    @property
    def name(self) -> str:
        extra = (f"-h{self.heads}" if self.heads != 2 else "") + (f"-m{self.mlp_ratio}" if self.mlp_ratio != 2 else "")
        return f"kmerl-sweep-w{self.width}-d{self.depth}{extra}"

    @property
    def label(self) -> str:
        same = self == REFERENCE
        return f"w{self.width} d{self.depth}" + (f" h{self.heads}" if self.heads != 2 else "") + (
            f" m{self.mlp_ratio}" if self.mlp_ratio != 2 else "") + (" (student-s)" if same else "")

    def model_config(self) -> Any:
        """The :class:`kmerl_edge._config.ModelConfig` of this point (``kmerl-student-s`` with new sizes)."""
        from kmerl_edge._config import get_config, with_overrides

        w = self.width
        return with_overrides(
            get_config("kmerl-student-s"), name=self.name, width=w, depth=self.depth, heads=self.heads,
            mlp_dim=self.mlp_ratio * w, query_mlp_dim=self.mlp_ratio * w, proj_dim=2 * w,
        )


#: the shipped student's size (``kmerl-student-s``): every other point is compared with it
REFERENCE = SweepPoint(64, 4)

_POINT = re.compile(r"^(\d+)x(\d+)(?:h(\d+))?(?:m(\d+))?$")


def parse_points(text: str) -> list[SweepPoint]:
    """``"64x4,96x4h3,64x6m4"`` → points (width x depth, optional ``h`` heads and ``m`` MLP ratio)."""
    out = []
    for tok in (t.strip() for t in text.split(",")):
        m = _POINT.match(tok)
        if not m:
            raise ValueError(f"sweep point {tok!r} is not WIDTHxDEPTH[hHEADS][mRATIO], e.g. 64x4 or 96x4h3")
        w, d, h, r = (int(g) if g else None for g in m.groups())
        assert w is not None and d is not None
        out.append(SweepPoint(w, d, h or 2, r or 2))
    if len({p.name for p in out}) != len(out):
        raise ValueError(f"sweep points repeat: {text!r}")
    return out


@dataclass(frozen=True)
class Budget:
    """Per-window time the model itself may take (median ms, batch 1, one thread) at each lead count: the
    end-to-end goal (1 / 2 / 8 ms at 1 / 3 / 12 leads) minus what preprocessing and rhythm analysis take."""

    model_ms: Mapping[int, float] = field(default_factory=lambda: {1: 0.4, 3: 0.8, 12: 6.0})
    end_to_end_ms: Mapping[int, float] = field(default_factory=lambda: {1: 1.0, 3: 2.0, 12: 8.0})


# ------------------------------------------------------------------------------------ pure table logic
def score(row: Mapping[str, Any]) -> float | None:
    """The sweep's accuracy axis: the mean of the point's five held-out AUCs (None if any is missing)."""
    vals = [((row.get("auc") or {}).get(k) or {}).get("auc") for k in AUC_KEYS]
    if any(v is None for v in vals):
        return None
    return float(np.mean([float(v) for v in vals if v is not None]))


def score_sd(row: Mapping[str, Any]) -> float | None:
    """The spread (sample sd) over training seeds of the per-seed mean AUC; None with fewer than 2 seeds."""
    per = [((row.get("auc") or {}).get(k) or {}).get("per_seed") or [] for k in AUC_KEYS]
    n = min(len(p) for p in per)
    if n < 2:
        return None
    return float(np.std([np.mean([p[i] for p in per]) for i in range(n)], ddof=1))


def seed_scores(row: Mapping[str, Any]) -> dict[int, float]:
    """Seed → that seed's mean AUC over the AUC keys (rows from :func:`aggregate_point`)."""
    seeds = list(row.get("seeds") or [])
    per = [((row.get("auc") or {}).get(k) or {}).get("per_seed") or [] for k in AUC_KEYS]
    if not seeds or any(len(p) != len(seeds) for p in per):
        return {}
    return {s: float(np.mean([p[i] for p in per])) for i, s in enumerate(seeds)}


def seed_paired_deltas(row: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, Any]:
    """Mean-AUC difference ``row`` minus ``ref`` seed by seed (same seed, same data order), over the seeds
    both have: the differences, their mean and sample sd, and how many are above zero."""
    a, b = seed_scores(row), seed_scores(ref)
    common = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in common]
    return {"seeds": common, "deltas": d, "mean": float(np.mean(d)) if d else None,
            "sd": float(np.std(d, ddof=1)) if len(d) > 1 else None, "positive": int(sum(x > 0 for x in d))}


def budget_use(row: Mapping[str, Any], budget: Budget) -> float | None:
    """The largest share of the model budget the point uses over the lead counts (1.0 = exactly at the
    budget); None when a lead count in the budget was not measured."""
    ms = row.get("model_ms") or {}
    shares = []
    for n, limit in budget.model_ms.items():
        v = ms.get(str(n), ms.get(n))
        if v is None:
            return None
        shares.append(float(v) / float(limit))
    return max(shares) if shares else None


def pareto_front(rows: Sequence[Mapping[str, Any]], budget: Budget) -> list[str]:
    """Names of the points no other point beats on both axes (lower budget use, higher score), cheapest
    first."""
    pts = [(budget_use(r, budget), score(r), str(r["name"])) for r in rows]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    front = []
    for c, s, n in pts:
        dominated = any(
            (c2 <= c and s2 >= s) and (c2 < c or s2 > s) for c2, s2, n2 in pts if n2 != n  # type: ignore[operator]
        )
        if not dominated:
            front.append((c, s, n))
    return [n for _, _, n in sorted(front)]


def knee(rows: Sequence[Mapping[str, Any]], budget: Budget, tolerance: float = 0.01) -> dict[str, Any]:
    """The knee of the AUC-vs-cost curve within the budget: of the Pareto points that fit the budget at
    every lead count, the cheapest whose score is within ``tolerance`` of the best fitting score (past it,
    more cost buys less than ``tolerance`` AUC). ``{"name": None, ...}`` when no point fits."""
    by_name = {str(r["name"]): r for r in rows}
    fits = [r for r in rows if (u := budget_use(r, budget)) is not None and u <= 1.0 and score(r) is not None]
    over = sorted(str(r["name"]) for r in rows if r not in fits)
    if not fits:
        return {"name": None, "reason": "no point fits the model budget at every lead count", "over_budget": over,
                "tolerance": tolerance}
    front = pareto_front(fits, budget)
    best = max(score(by_name[n]) or 0.0 for n in front)
    name = next(n for n in front if (score(by_name[n]) or 0.0) >= best - tolerance)
    return {
        "name": name,
        "score": score(by_name[name]),
        "best_fitting_score": best,
        "budget_use": budget_use(by_name[name], budget),
        "front": front,
        "over_budget": over,
        "tolerance": tolerance,
        "reason": f"cheapest point on the within-budget Pareto front whose mean AUC is within {tolerance} of "
                  f"the best within-budget mean AUC ({best:.3f})",
    }


def _fmt_auc(a: Mapping[str, Any] | None) -> str:
    if not a or a.get("auc") is None:
        return "–"
    ci = a.get("ci")
    return f"{a['auc']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _fmt_delta(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "–"
    ci = d.get("ci")
    out = f"{d['delta']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
    ps = d.get("per_seed") or {}
    if ps.get("deltas"):
        out += f"; per seed {' '.join(f'{x:+.3f}' for x in ps['deltas'])} ({ps['positive']}/{len(ps['deltas'])} > 0)"
    return out


def _fmt_ms(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3g}"


def markdown_table(rows: Sequence[Mapping[str, Any]], budget: Budget, kn: Mapping[str, Any]) -> str:
    """One row per point: size, parameters, GFLOP, model / end-to-end ms at 1/3/12 leads, the AUCs with
    their intervals, the mean AUC and the budget share; the knee in bold."""
    head = ["config", "seeds", "params", "GFLOP 1/3/12 leads", "model ms 1/3/12", "end-to-end ms 1/3/12",
            *AUC_KEYS, "mean AUC ± seed sd", f"Δ mean AUC vs {REFERENCE.label}", "budget use"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in sorted(rows, key=lambda r: (budget_use(r, budget) or float("inf"), str(r["name"]))):
        g = r.get("gflop") or {}
        m = r.get("model_ms") or {}
        e = r.get("end_to_end_ms") or {}
        s = score(r)
        u = budget_use(r, budget)
        label = str(r.get("label", r["name"]))
        if r["name"] == kn.get("name"):
            label = f"**{label} (knee)**"
        cells = [
            label,
            str(len(r.get("seeds") or [])) if r.get("seeds") else "–",
            f"{int(r.get('params', 0)) / 1e3:.0f} k",
            " / ".join(_fmt_ms(g.get(str(n))) for n in LEAD_COUNTS),
            " / ".join(_fmt_ms(m.get(str(n))) for n in LEAD_COUNTS),
            " / ".join(_fmt_ms(e.get(str(n))) for n in LEAD_COUNTS),
            *(_fmt_auc((r.get("auc") or {}).get(k)) for k in AUC_KEYS),
            "–" if s is None else f"{s:.3f}" + ("" if (sd := score_sd(r)) is None else f" ± {sd:.3f}"),
            _fmt_delta(r.get("vs_reference")),
            "–" if u is None else f"{u:.0%}" + ("" if u <= 1.0 else " (over)"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- training
def _prepare(shared: Path, work: Path) -> dict[str, Any]:
    """The v2 recipe's data, once for every point: corpus, knowledge labels, shards, evaluation windows."""
    from export.default_model import build_labels, default_datasets
    from kmerl_edge._labels import DEFAULT_LABEL_SETS
    from trainer.evaluate import eval_data_from_dataset
    from trainer.shards import prepare_shards

    common = work / "common"
    common.mkdir(parents=True, exist_ok=True)
    ds = default_datasets(shared)
    labels, _ = build_labels(ds["train"], common)
    shards = common / "shards"
    if not (common / "shards.done").exists():
        prepare_shards(ds["train"], shards, workers=2, progress=False)
        (common / "shards.done").write_text("ok\n")
    superclass = list(DEFAULT_LABEL_SETS["ptbxl_superclass"])
    return {
        "datasets": ds,
        "labels": labels,
        "shards": shards,
        "superclass": superclass,
        "ptb": eval_data_from_dataset(ds["ptbxl_fold10"], classes=superclass),
        "af": eval_data_from_dataset(ds["cpsc2021_heldout"], classes=["atrial fibrillation"]),
    }


def seed_mean_auc_ci(
    y: np.ndarray, scores: Sequence[np.ndarray], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Macro AUC averaged over the seeds' ``scores`` (each (n, C), the same n windows), with a percentile
    bootstrap interval of that average (windows resampled with replacement, the same resample for every
    seed, so the interval covers test-set sampling; the seeds' spread is ``sd``)."""
    from benchmarks.accuracy import macro_auc

    y = np.asarray(y) > 0.5
    if y.ndim == 1:
        y = y[:, None]
    per_seed = [macro_auc(y, np.asarray(s, dtype=np.float64).reshape(len(y), -1))[0] for s in scores]
    if not per_seed or any(v is None for v in per_seed):
        return {"auc": None, "ci": None, "per_seed": per_seed, "sd": None, "n": int(len(y))}
    rng = np.random.default_rng(seed)
    n = len(y)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if not (yb.any(axis=0) & ~yb.all(axis=0)).any():
            continue
        vals.append(np.mean([macro_auc_ranks(yb, np.asarray(s, dtype=np.float64).reshape(n, -1)[idx]) for s in scores]))
    a = (1.0 - level) / 2.0
    ci = [float(np.quantile(vals, a)), float(np.quantile(vals, 1.0 - a))] if len(vals) >= 20 else None
    got = [float(v) for v in per_seed if v is not None]
    return {"auc": float(np.mean(got)), "ci": ci, "per_seed": got,
            "sd": float(np.std(got, ddof=1)) if len(got) > 1 else None, "n": int(n),
            "positives": [int(v) for v in y.sum(axis=0)]}


def paired_delta(
    y: Mapping[str, np.ndarray], a: Mapping[str, Sequence[np.ndarray]], b: Mapping[str, Sequence[np.ndarray]],
    *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
) -> dict[str, Any]:
    """Mean-AUC difference of point ``a`` minus point ``b`` on the same held-out windows (``y[key]``; ``a[key]``
    and ``b[key]``: one score array per training seed), averaged over the AUC keys, with a paired bootstrap
    interval: each resample draws the windows once per evaluation set and scores both points on them."""
    keys = list(y)

    def mean_auc(k: str, ss: Sequence[np.ndarray], idx: np.ndarray | None) -> float:
        yy = np.asarray(y[k]) > 0.5
        yy = yy.reshape(len(yy), -1)
        sel = slice(None) if idx is None else idx
        return float(np.mean([macro_auc_ranks(yy[sel], np.asarray(s, np.float64).reshape(len(yy), -1)[sel]) for s in ss]))

    per_key = {k: mean_auc(k, a[k], None) - mean_auc(k, b[k], None) for k in keys}
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        draws: dict[int, np.ndarray] = {}  # evaluation sets of the same size share a draw (the same windows)
        d = []
        for k in keys:
            n = len(y[k])
            idx = draws.setdefault(n, rng.integers(0, n, n))
            d.append(mean_auc(k, a[k], idx) - mean_auc(k, b[k], idx))
        if np.all(np.isfinite(d)):
            vals.append(float(np.mean(d)))
    q = (1.0 - level) / 2.0
    ci = [float(np.quantile(vals, q)), float(np.quantile(vals, 1.0 - q))] if len(vals) >= 20 else None
    return {"delta": float(np.mean(list(per_key.values()))), "ci": ci, "per_key": per_key}


def _load_scores(work: Path, name: str, seeds: Sequence[int]) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    npz = [np.load(work / name / f"seed{s}" / "scores.npz") for s in seeds]
    y = {k: npz[0][f"{k}__y"] for k in AUC_KEYS}
    return y, {k: [z[k] for z in npz] for k in AUC_KEYS}


def _scores(model: Any, queries: Any, prep: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Held-out probabilities for every AUC key (``<key>``) and their labels (``<key>/y``)."""
    import torch

    from kmerl_edge import lead_ids

    out = {}
    for key, (which, leads) in AUC_KEYS.items():
        data = prep["ptb"] if which == "ptbxl" else prep["af"]
        q = queries["ptbxl"] if which == "ptbxl" else queries["af"]
        ids = lead_ids(leads)
        have = data.present[:, ids].all(axis=1)
        x = np.ascontiguousarray(data.signals[have][:, ids], dtype=np.float32)
        with torch.no_grad():
            out[key] = torch.sigmoid(model(torch.from_numpy(x), torch.from_numpy(ids), q)).numpy()
        out[f"{key}/y"] = np.asarray(data.labels[have], dtype=np.float32)
    return out


def train_point(point: SweepPoint, prep: Mapping[str, Any], work: Path, *, epochs: int, seed: int = 0,
                batch_size: int = 32, export: bool = True) -> dict[str, Any]:
    """Train one point with the v2 recipe and ``seed``, keep its held-out scores (``scores.npz``) and, with
    ``export``, its fp32 ONNX bundle; writes and returns ``work/<name>/seed<seed>/result.json``."""
    import torch

    from kmerl_edge._config import register_model
    from trainer._config import get_preset
    from trainer.checkpoint import load_teacher
    from trainer.text import load_text_encoder
    from trainer.train import train as train_model

    cfg = register_model(point.model_config())
    run = work / point.name / f"seed{seed}"
    t0 = time.time()
    torch.manual_seed(seed)
    tcfg = get_preset("cpu-small").override(
        model=point.name, epochs=epochs, batch_size=batch_size, seed=seed, lr=5e-4,
        warmup_steps=50, ckpt_every=100000, log_every=20, loss={"bce_weight": 1.0},
    )
    res = train_model(tcfg, data=prep["shards"], out_dir=run / "train", labels=prep["labels"], device="cpu",
                      progress=False, resume=(run / "train" / "train_config.json").exists())
    train_s = time.time() - t0
    teacher = load_teacher(run / "train")
    text = load_text_encoder(teacher.text_encoder)
    with torch.no_grad():
        queries = {
            "ptbxl": teacher.model.project_queries(text.encode(prep["superclass"]).float()),
            "af": teacher.model.project_queries(text.encode(["atrial fibrillation"]).float()),
        }
    scores = _scores(teacher.model, queries, prep)
    np.savez(run / "scores.npz", allow_pickle=False, **{k.replace("/", "__"): v for k, v in scores.items()})
    bundle = _export_onnx(run, cfg.name, prep, text, seed) if export else None
    row = {
        "name": point.name,
        "label": point.label,
        "point": asdict(point),
        "seed": seed,
        "model_config": cfg.to_dict(),
        "params": int(sum(p.numel() for n, p in teacher.model.named_parameters()
                          if not n.startswith(("ecg_proj.", "text_proj.", "query_proj.")))),
        "auc": {k: seed_mean_auc_ci(scores[f"{k}/y"], [scores[k]], n_boot=0)["auc"] for k in AUC_KEYS},
        "training": {"epochs": epochs, "seed": seed, "batch_size": batch_size, "steps": res.steps,
                     "train_s": round(train_s, 1), "wall_s": round(time.time() - t0, 1),
                     "torch_threads": torch.get_num_threads()},
        "bundle": None if bundle is None else str(bundle),
    }
    (run / "result.json").write_text(json.dumps(row, indent=2))
    return row


def aggregate_point(point: SweepPoint, work: Path, seeds: Sequence[int], *, n_boot: int = 1000) -> dict[str, Any] | None:
    """The point's row over the seeds trained so far: mean AUC over seeds with a bootstrap interval, the
    seeds' spread, and the first seed's bundle for timing. None when no seed is trained."""
    done = [s for s in seeds if (work / point.name / f"seed{s}" / "result.json").exists()]
    if not done:
        return None
    first = json.loads((work / point.name / f"seed{done[0]}" / "result.json").read_text())
    npz = [np.load(work / point.name / f"seed{s}" / "scores.npz") for s in done]
    auc = {}
    for k in AUC_KEYS:
        kk = k.replace("/", "__")
        auc[k] = seed_mean_auc_ci(npz[0][f"{kk}__y"], [z[kk] for z in npz], n_boot=n_boot)
        auc[k]["leads"] = list(AUC_KEYS[k][1])
    bundle = next((json.loads((work / point.name / f"seed{s}" / "result.json").read_text())["bundle"] for s in done
                   if json.loads((work / point.name / f"seed{s}" / "result.json").read_text()).get("bundle")), None)
    return {
        "name": point.name, "label": point.label, "point": asdict(point), "model_config": first["model_config"],
        "params": first["params"], "seeds": done, "auc": auc, "bundle": bundle,
        "training": {"epochs": first["training"]["epochs"],
                     "train_s": [json.loads((work / point.name / f"seed{s}" / "result.json").read_text())
                                 ["training"]["train_s"] for s in done]},
    }


def _export_onnx(run: Path, student: str, prep: Mapping[str, Any], text: Any, seed: int) -> Path:
    """The trained weights as a device bundle with the fp32 ONNX artifact only (no distillation: the
    student starts from, and stays at, the trained weights)."""
    from dataclasses import replace

    from export import EcgWindows, ExportConfig, export_bundle
    from export.default_model import EVAL_SUBSETS
    from trainer.shards import open_shards

    store = open_shards(prep["shards"])
    n_train = min(64, len(store))
    train = np.asarray(store.batch(list(range(n_train))), dtype=np.float32)
    ptb = prep["ptb"]
    y = ptb.labels.astype(np.float32)
    data = EcgWindows(
        windows=np.concatenate([train, ptb.signals.astype(np.float32)]),
        labels=np.concatenate([np.zeros((n_train, y.shape[1]), np.float32), y]),
        classes=tuple(prep["superclass"]), label_set="ptbxl_superclass",
        folds=np.concatenate([np.zeros(n_train, np.int64), np.full(len(y), 10, np.int64)]),
        ids=tuple(store.record_ids[:n_train]) + tuple(ptb.record_ids),
        source="sweep: 64 training windows + PTB-XL fold 10",
    )
    lead_sets = (("I",), ("I", "II"), ("I", "II", "V2"), EVAL_SUBSETS[0])
    ecfg = ExportConfig(student=student, max_leads=12, seed=seed, backends=("onnxruntime",),
                        qdq_for_tensorrt=False, eval_auc=False)
    ecfg = replace(ecfg, distill=replace(ecfg.distill, steps=0), parity=replace(ecfg.parity, lead_sets=lead_sets))
    return Path(export_bundle(run / "train", run / "bundle", ecfg, data=data, text_encoder=text, overwrite=True))


# ---------------------------------------------------------------------------------------- latency
def time_bundle(bundle: Path, *, iters: int, warmup: int) -> dict[str, Any]:
    """One timing round of a point's bundle: median (and p95) fp32 ONNX Runtime latency at 1/3/12 leads
    (batch 1, one thread, in a fresh process), the model alone, preprocessing, and ``predict`` end to end,
    with the load average before and after."""
    from benchmarks.latency import LatencyOptions, run_latency

    load_before = os.getloadavg()
    rep = run_latency(LatencyOptions(bundle=bundle, lead_counts=LEAD_COUNTS, backends=("onnxruntime",),
                                     threads=1, iters=iters, warmup=warmup, isolate=True, baseline=False))
    out: dict[str, Any] = {"model_ms": {}, "model_ms_p95": {}, "end_to_end_ms": {}, "preprocess_ms": {}, "gflop": {}}
    for r in rep.results:
        if r.status != "ok" or r.model is None:
            raise RuntimeError(f"latency of {bundle} at {r.n_leads} leads: {r.status} {r.reason}")
        n = str(r.n_leads)
        out["model_ms"][n] = r.model.median_ms
        out["model_ms_p95"][n] = r.model.p95_ms
        out["end_to_end_ms"][n] = None if r.end_to_end is None else r.end_to_end.median_ms
        out["preprocess_ms"][n] = None if r.preprocess is None else r.preprocess.median_ms
        out["gflop"][n] = r.gflop
    out["loadavg_before"] = [round(v, 2) for v in load_before]
    out["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    out["machine"] = rep.machine
    out["input"] = rep.input
    return out


def combine_rounds(rounds: Sequence[Mapping[str, Any]], *, iters: int, warmup: int) -> dict[str, Any]:
    """The point's latency over timing rounds: per lead count the smallest round median (the round least
    disturbed by the other work on a shared machine), every round kept under ``latency``."""
    if not rounds:
        raise ValueError("no timing round to combine")
    out: dict[str, Any] = {}
    for key in ("model_ms", "model_ms_p95", "end_to_end_ms", "preprocess_ms"):
        out[key] = {}
        for n in rounds[0][key]:
            vals = [r[key][n] for r in rounds if r[key].get(n) is not None]
            out[key][n] = min(vals) if vals else None
    out["gflop"] = dict(rounds[0]["gflop"])
    out["latency"] = {
        "iters": iters, "warmup": warmup, "threads": 1, "backend": "onnxruntime (fp32)", "batch": 1,
        "statistic": f"smallest of {len(rounds)} round medians",
        "loadavg_before": rounds[0]["loadavg_before"],
        "rounds": [{k: r[k] for k in ("model_ms", "end_to_end_ms", "loadavg_before", "loadavg_after")} for r in rounds],
        "machine": rounds[0].get("machine"), "input": rounds[0].get("input"),
    }
    return out


# ----------------------------------------------------------------------------------------- reporting
def plot(rows: Sequence[Mapping[str, Any]], budget: Budget, kn: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LEAD_COUNTS), figsize=(4.2 * len(LEAD_COUNTS), 3.8), sharey=True)
    for ax, n in zip(axes, LEAD_COUNTS, strict=True):
        for r in rows:
            ms = (r.get("model_ms") or {}).get(str(n))
            s = score(r)
            if ms is None or s is None:
                continue
            knee_pt = r["name"] == kn.get("name")
            ax.errorbar([ms], [s], yerr=[score_sd(r) or 0.0], fmt="*" if knee_pt else "o", ms=10 if knee_pt else 5,
                        color="tab:red" if knee_pt else "tab:blue", capsize=2, zorder=3)
            ax.annotate(str(r.get("label", r["name"])), (ms, s), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axvline(budget.model_ms[n], color="grey", ls="--", lw=1)
        ax.text(budget.model_ms[n], ax.get_ylim()[0], " budget", color="grey", fontsize=8, va="bottom")
        ax.set_xlabel(f"model ms per window, {n} lead{'s' if n > 1 else ''} (median)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean held-out AUC (5 evaluations; bars: seed sd)")
    fig.suptitle("Student size sweep: accuracy vs cost (ONNX Runtime fp32, 1 thread, batch 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(rows: list[dict[str, Any]], out: Path, budget: Budget, *, tolerance: float, command: str,
                 meta: Mapping[str, Any]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    kn = knee(rows, budget, tolerance)
    doc = {"kind": "student_sweep", "command": command, "budget": {
        "model_ms": {str(k): v for k, v in budget.model_ms.items()},
        "end_to_end_ms": {str(k): v for k, v in budget.end_to_end_ms.items()}},
        "score": "mean of the five held-out AUCs: " + ", ".join(AUC_KEYS), "knee": kn, "points": rows, **meta}
    (out / "sweep.json").write_text(json.dumps(doc, indent=2, default=float))
    table = markdown_table(rows, budget, kn)
    md = [
        "# Student size sweep (issue 15)",
        "",
        f"Command: `{command}`",
        "",
        "Every point trained with the v2 recipe (same corpus split by patient, seed, epochs; no distillation), "
        "scored on data it never saw: PTB-XL fold 10 superclass macro AUC, and AF AUC on the held-out CPSC-2021 "
        "Holter windows (3 patients: the interval is over windows, so it is too narrow). Brackets: "
        "bootstrap 95 % intervals. Latency: ONNX Runtime fp32, batch 1, one thread, median per 10-s window "
        "(model alone; end to end = `predict` with preprocessing and rhythm analysis). Budget for the model "
        "alone: " + ", ".join(f"{v:g} ms at {k} lead{'s' if k > 1 else ''}" for k, v in budget.model_ms.items())
        + " (the end-to-end goal " + ", ".join(f"{v:g} ms" for v in budget.end_to_end_ms.values())
        + " minus preprocessing and rhythm analysis). Budget use: the largest share over the lead counts. "
        "Mean AUC: the mean of the five held-out AUCs, averaged over the training seeds (± the seeds' sd). "
        f"Δ vs {REFERENCE.label}: the difference of that mean with a paired bootstrap interval over the held-out "
        "windows (test-set sampling only), then the same-seed differences (training variation; a difference "
        "within their spread is not a result).",
        "",
        table,
        "",
        f"**Knee within the budget: {kn['name'] or 'none'}** — {kn['reason']}.",
        "",
        "![AUC vs cost](auc_vs_cost.png)",
        "",
    ]
    if meta.get("loadavg"):
        md.insert(-3, f"Load average (1/5/15 min) while timing: {meta['loadavg']}.")
        md.insert(-3, "")
    (out / "sweep.md").write_text("\n".join(md))
    if any(r.get("model_ms") for r in rows):
        plot(rows, budget, kn, out / "auc_vs_cost.png")
    return doc


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The sweep's options (``python -m benchmarks.sweep`` and ``kmerl-bench sweep``)."""
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data",
                    help="the shared data folder (default ../shared/data)")
    ap.add_argument("--work", type=Path, default=Path("runs/sweep"), help="training runs and bundles")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep"),
                    help="where sweep.json, sweep.md and auc_vs_cost.png go")
    ap.add_argument("--points", default="32x4,48x4,64x2,64x4,64x6,96x2,112x2,96x4,128x4",
                    help="WIDTHxDEPTH[hHEADS][mMLP_RATIO], comma-separated (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=10, help="the same for every point (v2: 10)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, the same for every point (default 0,1,2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--iters", type=int, default=500, help="timed calls per lead count")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds over all points (the smallest median counts)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--tolerance", type=float, default=0.01, help="knee: mean AUC within this of the best")
    ap.add_argument("--train-only", action="store_true", help="train and score; no latency, no report")
    ap.add_argument("--report-only", action="store_true", help="no training: time and report what --work holds")
    ap.add_argument("--no-timing", action="store_true", help="report without timing points not timed yet")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    a = ap.parse_args(argv)
    import sys

    return run(a, sys.argv[1:] if argv is None else argv)


def _seeds(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated whole numbers, got {text!r}") from None
    if not out or len(set(out)) != len(out):
        raise ValueError(f"--seeds must name distinct seeds, got {text!r}")
    return out


def run(a: argparse.Namespace, argv: Sequence[str], prog: str = "python -m benchmarks.sweep") -> int:
    """Train (unless ``--report-only``), time and report the points of ``a.points``. Training goes seed by
    seed (every point with the first seed, then the next seed), so a cut-short sweep is still complete for
    its first seeds."""
    import shlex

    points = parse_points(a.points)
    seeds = _seeds(a.seeds)
    command = prog + " " + " ".join(shlex.quote(x) for x in argv)
    if not a.report_only:
        import torch

        torch.set_num_threads(a.threads)
        prep = None
        for seed in seeds:
            for p in points:
                done = a.work / p.name / f"seed{seed}" / "result.json"
                if done.exists():
                    print(f"[sweep] {p.name} seed {seed}: trained already ({done})", flush=True)
                    continue
                if prep is None:
                    prep = _prepare(a.shared, a.work)
                print(f"[sweep] {p.name} seed {seed}: training {a.epochs} epochs", flush=True)
                row = train_point(p, prep, a.work, epochs=a.epochs, seed=seed, export=seed == seeds[0])
                print(f"[sweep] {p.name} seed {seed}: {json.dumps({k: round(v, 3) for k, v in row['auc'].items()})} "
                      f"({row['training']['wall_s']} s)", flush=True)
    if a.train_only:
        return 0
    rows: list[dict[str, Any]] = []
    for p in points:
        agg = aggregate_point(p, a.work, seeds, n_boot=a.n_boot)  # the seeds it has of those asked
        if agg is None:
            print(f"[sweep] {p.name}: not trained; left out of the report", flush=True)
            continue
        if a.epochs != agg["training"]["epochs"]:
            raise SystemExit(f"{p.name} was trained for {agg['training']['epochs']} epochs, not {a.epochs}")
        if agg["bundle"] is None:
            print(f"[sweep] {p.name}: no bundle to time (the first seed exports it)", flush=True)
        rows.append(agg)
    ref = next((r for r in rows if r["name"] == REFERENCE.name), None)
    if ref is not None:
        y_ref, s_ref = _load_scores(a.work, ref["name"], ref["seeds"])
        for r in rows:
            if r is not ref:
                y_r, s_r = _load_scores(a.work, r["name"], r["seeds"])
                if any(len(y_r[k]) != len(y_ref[k]) for k in AUC_KEYS):
                    raise SystemExit(f"{r['name']} was scored on other windows than {ref['name']}")
                r["vs_reference"] = paired_delta(y_ref, s_r, s_ref, n_boot=a.n_boot)
                r["vs_reference"]["per_seed"] = seed_paired_deltas(r, ref)
    todo = [r for r in rows if r["bundle"] is not None and not (a.work / r["name"] / "latency.json").exists()
            and not a.no_timing]
    rounds: dict[str, list[dict[str, Any]]] = {r["name"]: [] for r in todo}
    for k in range(a.rounds):  # every point once per round, alternating the order
        for r in todo if k % 2 == 0 else todo[::-1]:
            print(f"[sweep] {r['name']}: timing, round {k + 1}/{a.rounds}", flush=True)
            rounds[r["name"]].append(time_bundle(Path(r["bundle"]), iters=a.iters, warmup=a.warmup))
    for r in todo:
        (a.work / r["name"] / "latency.json").write_text(
            json.dumps(combine_rounds(rounds[r["name"]], iters=a.iters, warmup=a.warmup), indent=2))
    for r in rows:
        lat = a.work / r["name"] / "latency.json"
        if lat.exists():
            r.update(json.loads(lat.read_text()))
    doc = write_report(rows, a.out, Budget(), tolerance=a.tolerance, command=command,
                       meta={"epochs": a.epochs, "seeds": seeds,
                             "loadavg": [r["latency"]["loadavg_before"] for r in rows if r.get("latency")]})
    print((a.out / "sweep.md").read_text())
    print(f"knee: {doc['knee']['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
