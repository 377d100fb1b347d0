"""Does the supervised fine-tuning stage (:mod:`export._finetune`) help? Paired, on the validation fold.

Takes a default-model run directory (``python -m export.default_model --work RUN``: ``RUN/teacher``,
``RUN/shards``, ``RUN/corpus.csv``), fine-tunes its trained network with a :class:`FinetuneConfig` on the
run's training windows, and scores both networks (their query logits, torch fp32) on the same rows:

- PTB-XL superclass macro AUC on fold 9 (``--split val``, the default; selection happens here) or fold 10
  (``--split test``, once, for the chosen setting) with 12 leads, I+II+V2, I+II, I and II;
- AF-vs-rest AUC on the held-out CPSC-2021 windows with lead I and lead II.

Each AUC has a percentile-bootstrap 95 % interval, and the difference fine-tuned − start a paired one
(the same resampled records for both; 1,000 resamples, seeded).

    python -m benchmarks.finetune_val --run runs/base --data ../shared/data --steps 600 --lr 3e-4 \\
        --consistency 0.3 --out benchmarks/results/finetune/d600_3e4_c03_val.json
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._stats import macro_auc_ranks

__all__ = ["main", "paired_macro_auc_diff_ci"]


def _macro(y: np.ndarray, s: np.ndarray) -> float:
    """Macro ROC-AUC (Mann-Whitney, ties averaged) over the classes with both labels; NaN when none has."""
    return macro_auc_ranks(np.asarray(y) > 0.5, s)


def paired_macro_auc_diff_ci(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 1000,
                             seed: int = 0) -> list[float]:
    """Percentile-bootstrap 95 % interval of macro AUC(b) − macro AUC(a) on the same resampled rows."""
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        v = _macro(y[i], b[i]) - _macro(y[i], a[i])
        if np.isfinite(v):
            d.append(v)
    return [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))]


def _eval_cache(shared: Path, cache: Path | None, ptbxl_val_folds: Sequence[int]) -> dict[str, np.ndarray]:
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    from export._corpus import CorpusConfig
    from export.default_model import default_datasets
    from kmerl_edge._labels import DEFAULT_LABEL_SETS
    from trainer.evaluate import eval_data_from_dataset

    ds = default_datasets(shared, CorpusConfig(ptbxl_val_folds=tuple(ptbxl_val_folds)))
    classes = [c for cs in DEFAULT_LABEL_SETS.values() for c in cs]
    out: dict[str, np.ndarray] = {}
    for key, name, cl in (("val", "ptbxl_fold9_val", classes), ("test", "ptbxl_fold10", classes),
                          ("af", "cpsc2021_heldout", ["atrial fibrillation"])):
        if not len(ds[name]):
            continue
        e = eval_data_from_dataset(ds[name], classes=cl)
        out[f"x_{key}"], out[f"p_{key}"], out[f"y_{key}"] = e.signals.astype(np.float32), e.present, e.labels
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, **out)  # type: ignore[arg-type]
        tmp.replace(cache)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from export._augment import AugmentConfig
    from export._corpus import read_corpus_csv
    from export._finetune import FinetuneConfig, finetune_af_labels, finetune_model, finetune_windows
    from export.default_model import EVAL_SUBSETS
    from kmerl_edge import lead_ids
    from kmerl_edge._labels import DEFAULT_LABEL_SETS
    from trainer.checkpoint import load_teacher
    from trainer.text import load_text_encoder

    from .accuracy import bootstrap_macro_auc_ci

    ap = argparse.ArgumentParser(prog="python -m benchmarks.finetune_val", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a default-model run directory (teacher, shards, corpus.csv)")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, default=None, help="npz cache of the preprocessed evaluation rows")
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--consistency", type=float, default=1.0)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--af-label-weight", type=float, default=0.0, help="BCE weight on the AF query against the training split's AF labels")
    ap.add_argument("--af-consistency", type=float, default=0.0, help="extra MSE weight anchoring the AF logit to the start network")
    ap.add_argument("--one-lead-share", type=float, default=0.0, help="share of steps forced to one lead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, default=None, help="write the fine-tuned weights (safetensors) here")
    ap.add_argument("--load", type=Path, default=None, help="score these fine-tuned weights (a safetensors state dict or a bundle's weights.safetensors) instead of training")
    ap.add_argument("--compare", type=Path, default=None, help="also score these fine-tuned weights (another setting) and the paired difference to them")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = FinetuneConfig(steps=a.steps, lr=a.lr, consistency_weight=a.consistency, seed=a.seed,
                         augment=AugmentConfig() if a.augment else None, af_label_weight=a.af_label_weight,
                         af_index=list(DEFAULT_LABEL_SETS["rhythm"]).index("atrial fibrillation"),
                         af_consistency_weight=a.af_consistency, one_lead_share=a.one_lead_share)
    ev = _eval_cache(a.data, a.cache, (9,))
    teacher = load_teacher(a.run / "teacher")
    text = load_text_encoder(teacher.text_encoder)
    emb = {ls: text.encode(list(cs)).float() for ls, cs in DEFAULT_LABEL_SETS.items()}
    sup = list(DEFAULT_LABEL_SETS["ptbxl_superclass"])
    classes = [c for cs in DEFAULT_LABEL_SETS.values() for c in cs]
    start = copy.deepcopy(teacher.model).eval()
    t0 = time.time()
    info: dict[str, Any] = {}

    def load_into(model: Any, path: Path) -> None:
        from safetensors.torch import load_file

        # a bundle's weights.safetensors lacks the contrastive heads, which the query logits do not use
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
        if unexpected or any(not k.startswith(("ecg_proj.", "text_proj.")) for k in missing):
            raise SystemExit(f"{path}: weights do not match the run's model ({(unexpected + missing)[:3]})")

    other = None
    if a.compare is not None:
        other = copy.deepcopy(start)
        load_into(other, a.compare)
    if a.load is not None:
        load_into(teacher.model, a.load)
    else:
        recs = read_corpus_csv(a.run / "corpus.csv").records
        x, y, lab = finetune_windows(a.run / "shards", recs, sup)
        af, af_lab = finetune_af_labels(a.run / "shards", recs, DEFAULT_LABEL_SETS["rhythm"])
        res = finetune_model(teacher.model, emb, x, y, lab, cfg, af, af_lab)
        info = {"labelled_windows": res.labelled, "windows": res.windows, "seconds": round(res.seconds, 1),
                "af_labelled_windows": int(af_lab.sum()), "af_positive_windows": int(af[af_lab].sum()),
                "history": res.history}
        if a.save is not None:
            from safetensors.torch import save_file

            a.save.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in teacher.model.state_dict().items()}, str(a.save))

    def scores(model: Any, xs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        q = torch.cat([model.project_queries(emb[ls]) for ls in DEFAULT_LABEL_SETS])
        out = []
        with torch.no_grad():
            for i in range(0, len(xs), 32):
                tok, _, _ = model.encoder(torch.from_numpy(np.ascontiguousarray(xs[i:i + 32][:, ids])),
                                          torch.from_numpy(ids))
                out.append(model.query_head(q, tok, None).numpy())
        return np.concatenate(out)

    results: dict[str, Any] = {}
    sets = [(",".join(s) if len(s) < 12 else "12 leads", s, a.split, sup) for s in EVAL_SUBSETS]
    sets += [(f"AF {lead}", (lead,), "af", ["atrial fibrillation"]) for lead in ("I", "II")]
    for key, leads, sp, cl in sets:
        ids = lead_ids(leads)
        have = ev[f"p_{sp}"][:, ids].all(axis=1)
        xs = ev[f"x_{sp}"][have]
        yy = ev[f"y_{sp}"][have] if sp == "af" else ev[f"y_{sp}"][have][:, [classes.index(c) for c in cl]]
        col = [classes.index(c) for c in cl]
        s_new, s_old = scores(teacher.model, xs, ids)[:, col], scores(start, xs, ids)[:, col]
        ci_new, ci_old = bootstrap_macro_auc_ci(yy, s_new), bootstrap_macro_auc_ci(yy, s_old)
        results[key] = {"n": int(have.sum()), "finetuned": round(_macro(yy, s_new), 4),
                        "finetuned_ci95": [round(v, 4) for v in ci_new] if ci_new else None,
                        "start": round(_macro(yy, s_old), 4),
                        "start_ci95": [round(v, 4) for v in ci_old] if ci_old else None,
                        "diff": round(_macro(yy, s_new) - _macro(yy, s_old), 4),
                        "diff_ci95": [round(v, 4) for v in paired_macro_auc_diff_ci(yy, s_old, s_new)]}
        if other is not None:
            s_cmp = scores(other, xs, ids)[:, col]
            results[key].update({"compare": round(_macro(yy, s_cmp), 4),
                                 "diff_vs_compare": round(_macro(yy, s_new) - _macro(yy, s_cmp), 4),
                                 "diff_vs_compare_ci95": [round(v, 4) for v in
                                                          paired_macro_auc_diff_ci(yy, s_cmp, s_new)]})
    args = sys.argv[1:] if argv is None else argv
    out = {"run": str(a.run), "split": {"val": "PTB-XL fold 9", "test": "PTB-XL fold 10"}[a.split],
           "config": cfg.to_dict(), "loaded": str(a.load) if a.load else None,
           "compared": str(a.compare) if a.compare else None, "finetune": info,
           "results": results, "wall_s": round(time.time() - t0, 1),
           "command": "python -m benchmarks.finetune_val " + " ".join(shlex.quote(x) for x in args)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: (v["finetuned"], v["diff"], v["diff_ci95"]) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
