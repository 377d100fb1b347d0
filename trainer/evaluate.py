"""Evaluation: zero-shot classification through the cardiac query head and the linear probe.

- :func:`evaluate_zero_shot`: class names (or prompts) → text encoder → ``project_queries`` → query head
  → per-class probabilities; macro AUC and macro max-F1 for every lead count 1–12 added in the paper's
  order (I, II, III, aVF, aVR, aVL, V1–V6) and for any named lead subset.
- :func:`linear_probe`: a logistic-regression head on frozen pooled encoder features, trained on 1 / 10 /
  100 % of the training labels; the epoch is selected on the *validation* split (never on test) and the
  learning rate follows a cosine schedule stepped once per *epoch*. :func:`random_encoder` gives the
  randomly initialised baseline.
- :func:`run_eval` runs both on a MERL benchmark task and writes ``results.json``, ``results.md`` and
  ``auc_vs_leads.png``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._errors import KmerlError
from kmerl_edge._leads import LEADS, PAPER_LEAD_ORDER, canonical_leads
from kmerl_edge._preprocess import PreprocessConfig, preprocess

from ._errors import TrainConfigError
from .data import Dataset, lead_presence, load_item

__all__ = [
    "EvalData",
    "eval_data_from_dataset",
    "eval_data_from_shards",
    "macro_auc",
    "bootstrap_auc",
    "max_f1",
    "class_names",
    "seen_classes",
    "CHANCE_AUC",
    "evaluate_zero_shot",
    "extract_features",
    "linear_probe",
    "random_encoder",
    "plot_auc_vs_leads",
    "results_markdown",
    "run_eval",
    "load_prompts",
]


@dataclass
class EvalData:
    """Preprocessed evaluation data: ``signals`` (N, 12, 5000) float32 in canonical lead order (absent
    leads are zeros and ``present`` False), ``labels`` (N, C) multi-hot of ``classes``."""

    name: str
    signals: np.ndarray
    present: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    record_ids: list[str]
    failed: dict[str, str]

    def __len__(self) -> int:
        return int(self.signals.shape[0])


def eval_data_from_dataset(
    dataset: Dataset, *, config: PreprocessConfig | None = None, classes: Sequence[str] | None = None
) -> EvalData:
    """Read and preprocess every item (its first 10-s window) with :func:`kmerl_edge.preprocess`.
    Items that fail are listed in ``failed`` (record id → reason), not dropped silently."""
    cfg = config or PreprocessConfig()
    cls = tuple(dataset.classes if classes is None else classes)
    sig, pres, ids, keep = [], [], [], []
    failed: dict[str, str] = {}
    from kmerl_edge._cli_common import progress

    for i, item in enumerate(progress(dataset.items, desc="preprocess", unit="record")):
        try:
            rec = load_item(item)
            pre = preprocess(rec.signal, fs=rec.fs, leads=rec.leads, config=cfg)
        except KmerlError as exc:
            failed[item.record_id] = f"{type(exc).__name__}: {exc}"
            continue
        w = np.zeros((len(LEADS), pre.windows.shape[-1]), dtype=np.float32)
        w[[LEADS.index(x) for x in pre.leads]] = pre.windows[0]
        sig.append(w)
        pres.append(lead_presence(pre.leads))
        ids.append(item.record_id)
        keep.append(i)
    y = dataset.label_matrix(cls)[keep] if keep else np.zeros((0, len(cls)), np.float32)
    n = len(sig)
    return EvalData(
        dataset.name,
        np.stack(sig) if n else np.zeros((0, len(LEADS), cfg.window_samples), np.float32),
        np.stack(pres) if n else np.zeros((0, len(LEADS)), bool),
        y.astype(np.float32),
        cls,
        ids,
        failed,
    )


def eval_data_from_shards(store: Any, classes: Sequence[str] | None = None) -> EvalData:
    """An :class:`EvalData` from a :class:`trainer.shards.ShardStore` (labels from its items)."""
    cls = tuple(store.index.get("classes", []) if classes is None else classes)
    sig = store.batch(list(range(len(store))))
    return EvalData(str(store.root), sig, np.asarray(store.present), store.label_matrix(cls), cls,
                    store.record_ids, {})


# ----------------------------------------------------------------------------------------------- metrics
def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _max_f1(y: np.ndarray, s: np.ndarray) -> float:
    pos = y > 0.5
    if not pos.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ys, ss = pos[order], s[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(ys) + 1)
    last = np.r_[ss[1:] != ss[:-1], True]  # only thresholds between distinct scores
    prec, rec = tp / k, tp / pos.sum()
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    return float(f1[last].max())


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, list[float]]:
    """Macro ROC-AUC over classes that have both positives and negatives, and the per-class AUCs (NaN
    for classes that cannot be scored)."""
    per = [_auc(labels[:, c], scores[:, c]) for c in range(labels.shape[1])]
    ok = [a for a in per if not np.isnan(a)]
    return (float(np.mean(ok)) if ok else float("nan")), per


def bootstrap_auc(
    labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Percentile bootstrap interval (records resampled with replacement, ``n_boot`` times) of the macro
    AUC and of each class's AUC: ``{"macro": [lo, hi], "per_class": [[lo, hi] | None, ...], "n_boot"}``.
    A resample where a class has no positives (or no negatives) leaves that class out of that resample's
    macro average, as :func:`macro_auc` does; a class with fewer than 2 positives (or negatives) gets no
    interval of its own."""
    n, c = labels.shape
    if n == 0 or n_boot < 1:
        return {"macro": None, "per_class": [None] * c, "n_boot": 0, "level": level}
    rng = np.random.default_rng(seed)
    macro = np.full(n_boot, np.nan)
    per = np.full((n_boot, c), np.nan)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        yb, sb = labels[idx], scores[idx]
        for j in range(c):
            per[b, j] = _auc(yb[:, j], sb[:, j])
        ok = per[b][~np.isnan(per[b])]
        if ok.size:
            macro[b] = ok.mean()
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def ci(v: np.ndarray) -> list[float] | None:
        v = v[~np.isnan(v)]
        return [float(x) for x in np.percentile(v, q)] if v.size >= max(10, n_boot // 2) else None

    pos = (labels > 0.5).sum(0)
    scorable = [min(int(pos[j]), n - int(pos[j])) >= 2 for j in range(c)]  # one positive: no interval
    return {"macro": ci(macro), "per_class": [ci(per[:, j]) if scorable[j] else None for j in range(c)],
            "n_boot": n_boot, "level": level}


def max_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, list[float]]:
    """Macro of the per-class maximum F1 over thresholds (classes with positives only)."""
    per = [_max_f1(labels[:, c], scores[:, c]) for c in range(labels.shape[1])]
    ok = [a for a in per if not np.isnan(a)]
    return (float(np.mean(ok)) if ok else float("nan")), per


# -------------------------------------------------------------------------------------------- zero-shot
def _keep_tokens(present: np.ndarray, leads: Sequence[str], t: int) -> tuple[Any, Any, int]:
    import torch

    rows = [LEADS.index(x) for x in leads]
    idx, n_none = [], 0
    for p in present:
        have = [r for r in rows if p[r]]
        if not have:
            n_none += 1
        idx.append(np.concatenate([np.arange(r * t, (r + 1) * t) for r in have]) if have else np.zeros(0, np.int64))
    k = max(1, max(len(i) for i in idx))
    keep = torch.zeros(len(idx), k, dtype=torch.long)
    mask = torch.zeros(len(idx), k, dtype=torch.bool)
    for b, i in enumerate(idx):
        keep[b, : len(i)] = torch.from_numpy(i)
        mask[b, : len(i)] = True
    return keep, mask, n_none


def _encode(model: Any, data: EvalData, leads: Sequence[str], batch_size: int, device: str, fn: Any) -> Any:
    import torch

    out = []
    t = model.cfg.tokens_per_lead
    n_none = 0
    lead_ids = torch.arange(len(LEADS), device=device)
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            sig = torch.from_numpy(np.ascontiguousarray(data.signals[s : s + batch_size])).float().to(device)
            keep, mask, nn_ = _keep_tokens(data.present[s : s + batch_size], leads, t)
            n_none += nn_
            tokens, pooled, m = model.encoder(sig, lead_ids, keep.to(device), mask.to(device))
            out.append(fn(tokens, pooled, m).float().cpu())
    return torch.cat(out) if out else torch.zeros(0), n_none


def _text_embeddings(text_encoder: Any, prompts: Sequence[str]) -> Any:
    import torch

    if isinstance(text_encoder, torch.Tensor):
        return text_encoder
    return text_encoder.encode(list(prompts))


def evaluate_zero_shot(
    model: Any,
    text_encoder: Any,
    dataset: EvalData | Dataset,
    classes: Sequence[str] | None = None,
    lead_subsets: Sequence[Sequence[str]] | None = None,
    *,
    prompts: Mapping[str, str] | None = None,
    lead_counts: bool = True,
    batch_size: int = 64,
    device: str = "cpu",
    preprocess_config: PreprocessConfig | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Zero-shot scores of ``model`` (a KMERLModel) on ``dataset``.

    ``classes``: the label columns to score (default: all of the dataset's); each is asked as the text
    ``prompts.get(class, class)`` embedded by ``text_encoder`` (a :class:`trainer.text.TextEncoder`, or a
    (C, text_dim) tensor of precomputed embeddings). ``lead_counts``: evaluate the first 1…12 leads of
    :data:`kmerl_edge.PAPER_LEAD_ORDER`; ``lead_subsets``: extra named subsets (e.g. ``[["I", "II"]]``).

    Returns ``{"dataset", "n", "classes", "prompts", "by_lead_count": {"1": result, …, "12": …},
    "by_subset": {"I,II": result}, "failed"}`` where ``result = {"leads", "macro_auc", "macro_max_f1",
    "per_class_auc", "per_class_max_f1", "n_without_leads", "macro_auc_ci", "per_class_auc_ci"}``;
    per-class values are ``None`` for a class without positives (or negatives), and such classes are left
    out of the macro averages. ``*_ci`` are bootstrap 95 % intervals (:func:`bootstrap_auc`, ``n_boot``).
    """
    import torch

    data = dataset if isinstance(dataset, EvalData) else eval_data_from_dataset(
        dataset, config=preprocess_config, classes=classes)
    cls = tuple(data.classes if classes is None else classes)
    col = [data.classes.index(c) for c in cls]
    y = data.labels[:, col]
    texts = [(prompts or {}).get(c, c) for c in cls]
    model = model.to(device).eval()
    emb = _text_embeddings(text_encoder, texts).to(device).float()
    if emb.shape != (len(cls), model.cfg.text_dim):
        raise TrainConfigError(f"text embeddings {tuple(emb.shape)} do not fit the model's text_dim {model.cfg.text_dim}")
    with torch.no_grad():
        queries = model.project_queries(emb)

    def score(tokens: Any, pooled: Any, m: Any) -> Any:
        return torch.sigmoid(model.query_head(queries, tokens, m))

    def run(leads: Sequence[str]) -> dict[str, Any]:
        probs, n_none = _encode(model, data, leads, batch_size, device, score)
        p = probs.numpy() if len(data) else np.zeros((0, len(cls)))
        auc, per_auc = macro_auc(y, p)
        f1, per_f1 = max_f1(y, p)
        boot = bootstrap_auc(y, p, n_boot=n_boot, seed=seed)
        return {
            "leads": list(leads),
            "macro_auc": None if np.isnan(auc) else auc,
            "macro_auc_ci": boot["macro"],
            "per_class_auc_ci": dict(zip(cls, boot["per_class"])),
            "macro_max_f1": None if np.isnan(f1) else f1,
            "per_class_auc": {c: (None if np.isnan(a) else a) for c, a in zip(cls, per_auc)},
            "per_class_max_f1": {c: (None if np.isnan(a) else a) for c, a in zip(cls, per_f1)},
            "n_without_leads": n_none,
        }

    out: dict[str, Any] = {"dataset": data.name, "n": len(data), "classes": list(cls), "prompts": texts,
                           "by_lead_count": {}, "by_subset": {}, "failed": data.failed}
    if lead_counts:
        for k in range(1, 13):
            out["by_lead_count"][str(k)] = run(PAPER_LEAD_ORDER[:k])
    for subset in lead_subsets or ():
        leads = canonical_leads(subset)
        out["by_subset"][",".join(leads)] = run(leads)
    return out


def plot_auc_vs_leads(results: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """PNG of macro AUC against the number of leads (paper order), one line per ``name → zero-shot result``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results.items():
        ks = sorted(int(k) for k in res["by_lead_count"])
        aucs = [res["by_lead_count"][str(k)]["macro_auc"] for k in ks]
        ax.plot(ks, [np.nan if a is None else a for a in aucs], marker="o", label=name)
    ax.set_xticks(range(1, 13))
    ax.set_xticklabels([f"{k}\n+{PAPER_LEAD_ORDER[k - 1]}" for k in range(1, 13)], fontsize=7)
    ax.set_xlabel("number of leads (added in the paper's order)")
    ax.set_ylabel("macro AUC (zero-shot)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- linear probe
def extract_features(
    model: Any, data: EvalData, *, leads: Sequence[str] = LEADS, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """(N, width) pooled encoder features of the frozen encoder (no masking beyond absent leads)."""
    model = model.to(device).eval()
    feats, _ = _encode(model, data, canonical_leads(leads), batch_size, device, lambda t, p, m: p)
    return feats.numpy() if len(data) else np.zeros((0, model.cfg.width), np.float32)


def random_encoder(config: Any, seed: int = 0) -> Any:
    """A randomly initialised KMERLModel of ``config`` (the linear-probe baseline)."""
    import torch

    from kmerl_edge._model import KMERLModel

    torch.manual_seed(seed)
    return KMERLModel(config).eval()


def _subsample(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    n = y.shape[0]
    k = max(1, int(round(fraction * n)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:k])


def linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Train a linear head (BCE) on frozen ``(features, labels)`` for each training fraction.

    The epoch whose **validation** macro AUC is best is selected and only then scored on test; the
    learning rate follows a cosine schedule stepped once **per epoch**. Features are standardised with
    the training subset's mean and std. ``test_macro_auc_ci`` is a bootstrap 95 % interval over test
    records.
    """
    import torch

    xtr, ytr = train
    out: dict[str, Any] = {}
    for frac in fractions:
        if not 0 < frac <= 1:
            raise TrainConfigError(f"probe fractions must be in (0, 1], got {frac}")
        sel = _subsample(ytr, frac, seed)
        x, y = xtr[sel], ytr[sel]
        mu, sd = x.mean(0), x.std(0) + 1e-6
        xt, xv, xs = (torch.from_numpy(((a - mu) / sd).astype(np.float32)) for a in (x, val[0], test[0]))
        yt = torch.from_numpy(y.astype(np.float32))
        torch.manual_seed(seed)
        head = torch.nn.Linear(x.shape[1], y.shape[1])
        torch.nn.init.zeros_(head.weight)  # logistic regression from zero: the gradient sets the direction
        torch.nn.init.zeros_(head.bias)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        g = torch.Generator().manual_seed(seed)
        best: tuple[float, int, Any] = (-1.0, -1, None)
        for ep in range(epochs):
            head.train()
            perm = torch.randperm(len(xt), generator=g)
            for s in range(0, len(xt), batch_size):
                b = perm[s : s + batch_size]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(head(xt[b]), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()  # per epoch
            head.eval()
            with torch.no_grad():
                v_auc, _ = macro_auc(val[1], torch.sigmoid(head(xv)).numpy())
            v = -1.0 if np.isnan(v_auc) else v_auc
            if v > best[0]:
                best = (v, ep, {k: t.clone() for k, t in head.state_dict().items()})
        if best[2] is not None:
            head.load_state_dict(best[2])
        with torch.no_grad():
            p = torch.sigmoid(head(xs)).numpy()
        t_auc, _ = macro_auc(test[1], p)
        t_f1, _ = max_f1(test[1], p)
        out[f"{frac * 100:g}%"] = {
            "fraction": frac,
            "n_train": int(len(sel)),
            "best_epoch": best[1],
            "val_macro_auc": None if best[0] < 0 else best[0],
            "test_macro_auc": None if np.isnan(t_auc) else t_auc,
            "test_macro_auc_ci": bootstrap_auc(test[1], p, n_boot=n_boot, seed=seed)["macro"],
            "test_macro_max_f1": None if np.isnan(t_f1) else t_f1,
        }
    return out


# -------------------------------------------------------------------------------------------- reporting
def _fmt(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _fmt_ci(v: Any, ci: Any) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def results_markdown(results: Mapping[str, Any]) -> str:
    """Markdown: zero-shot AUC per lead count and subset, per class with seen / unseen, linear-probe AUC per
    fraction and lead set; every AUC with its bootstrap 95 % interval in brackets."""
    lines = [f"## {results.get('task', '')} ({results.get('checkpoint', '')})", ""]
    for w in results.get("warnings", []):
        lines += [f"**Warning:** {w}", ""]
    if results.get("prompt_source"):
        lines += [f"Zero-shot queries: {results['prompt_source']}.", ""]
    zs = results.get("zero_shot")
    if zs:
        ks = sorted(zs["by_lead_count"], key=int)
        lines += ["Zero-shot macro AUC (%) [bootstrap 95 % CI] by number of leads (paper order):", "",
                  "| leads | AUC [95 % CI] | max-F1 |", "|---|---|---|"]
        for k in ks:
            r = zs["by_lead_count"][k]
            lines.append(f"| {k} | {_fmt_ci(r['macro_auc'], r.get('macro_auc_ci'))} | {_fmt(r['macro_max_f1'])} |")
        lines.append("")
        if zs.get("by_subset"):
            lines += ["| lead subset | AUC [95 % CI] | max-F1 |", "|---|---|---|"]
            for name, r in zs["by_subset"].items():
                lines.append(f"| {name} | {_fmt_ci(r['macro_auc'], r.get('macro_auc_ci'))} | {_fmt(r['macro_max_f1'])} |")
            lines.append("")
        full = zs["by_lead_count"].get("12")
        seen = results.get("seen", {})
        if full:
            lines += ["Per class, 12 leads (seen = the class name was a training query: exactly, or text-embedding "
                      "similarity > 0.95):", "", "| class | query text | AUC [95 % CI] | seen | nearest training query |",
                      "|---|---|---|---|---|"]
            texts = results.get("class_texts", {})
            for c, a in full["per_class_auc"].items():
                sn = seen.get(c, {})
                near = f"{sn['nearest']} ({sn['similarity']:.2f})" if sn.get("nearest") else "–"
                tag = "–" if not sn else ("seen" if sn.get("seen") else "unseen")
                lines.append(f"| {c} | {texts.get(c, c)} | {_fmt_ci(a, full.get('per_class_auc_ci', {}).get(c))} | "
                             f"{tag} | {near} |")
            lines.append("")
    for key, title in (("linear_probe", "K-MERL encoder"), ("linear_probe_random", "random init")):
        rows = []
        if results.get(key):
            rows.append(("12 leads", results[key]))
        rows += [(name, r) for name, r in results.get(f"{key}_by_leads", {}).items()]
        if not rows:
            continue
        fr = list(rows[0][1])
        lines += [f"Linear probe test macro AUC (%) [95 % CI], {title} (epoch selected on validation):", "",
                  "| leads | " + " | ".join(fr) + " |", "|---|" + "---|" * len(fr)]
        for name, r in rows:
            lines.append(f"| {name} | " + " | ".join(_fmt_ci(r[f]["test_macro_auc"], r[f].get("test_macro_auc_ci"))
                                                   for f in fr) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def load_prompts(splits_root: str | Path) -> dict[str, str]:
    """MERL's prompt-engineered class descriptions (``CKEPE_prompt.json``: class code → description), or
    ``{}`` when the file is absent. Used only when asked for (``run_eval(prompts="ckepe")``)."""
    p = Path(splits_root) / "CKEPE_prompt.json"
    return {str(k): str(v) for k, v in json.loads(p.read_text()).items()} if p.is_file() else {}


#: Plain English names of the MERL benchmark class codes that are not PTB-XL SCP statements.
ICBEB_CLASS_NAMES: dict[str, str] = {
    "NORM": "normal ECG", "AFIB": "atrial fibrillation", "1AVB": "first degree AV block",
    "CLBBB": "complete left bundle branch block", "CRBBB": "complete right bundle branch block",
    "PAC": "premature atrial complex", "VPC": "premature ventricular complex", "STD": "ST depression",
    "STE": "ST elevation",
}
CHAPMAN_CLASS_NAMES: dict[str, str] = {
    "SR": "sinus rhythm", "AFIB": "atrial fibrillation", "AF": "atrial flutter", "ST": "sinus tachycardia",
    "SB": "sinus bradycardia", "SA": "sinus arrhythmia", "SVT": "supraventricular tachycardia",
    "AT": "atrial tachycardia", "1AVB": "first degree AV block", "2AVB": "second degree AV block",
    "2AVB1": "second degree AV block type 1", "AVB": "AV block", "LBBB": "left bundle branch block",
    "RBBB": "right bundle branch block", "WPW": "Wolff-Parkinson-White syndrome",
    "APB": "premature atrial complex", "VPB": "premature ventricular complex", "VB": "ventricular bigeminy",
    "JEB": "junctional escape beat", "VEB": "ventricular escape beat", "LVH": "left ventricular hypertrophy",
    "RVH": "right ventricular hypertrophy", "MI": "myocardial infarction", "STTC": "ST/T change",
    "STE": "ST elevation", "STDD": "ST depression", "STTU": "ST/T change", "TWC": "T wave change",
    "TWO": "T wave inversion", "UW": "U wave", "AQW": "abnormal Q wave", "QTIE": "long QT interval",
    "PRIE": "prolonged PR interval", "ALS": "left axis deviation", "ARS": "right axis deviation",
    "CCR": "counterclockwise rotation", "CR": "clockwise rotation", "ERV": "early repolarization",
    "PWC": "P wave change",
}


def class_names(task: str, classes: Sequence[str]) -> dict[str, str]:
    """The plain class name (the text the zero-shot query is computed from, as in the K-MERL paper) of each
    class code of a MERL task: PTB-XL superclass / subclass names, the SCP-ECG statement descriptions
    (form, rhythm), the CPSC-2018 and Chapman diagnoses. A code without a known name is its own text."""
    from .data import PTBXL_SUBCLASS_TEXT, PTBXL_SUPERCLASS_TEXT, _embedded_scp_statements

    if task == "ptbxl_super":
        table: Mapping[str, str] = PTBXL_SUPERCLASS_TEXT
    elif task == "ptbxl_sub":
        table = PTBXL_SUBCLASS_TEXT
    elif task in ("ptbxl_form", "ptbxl_rhythm"):
        st = _embedded_scp_statements()
        table = {c: st[k].description for c in classes for k in (c, f"{c}_") if k in st}
    elif task == "icbeb":
        table = ICBEB_CLASS_NAMES
    elif task == "chapman":
        table = CHAPMAN_CLASS_NAMES
    else:
        table = {}
    return {c: table.get(c, c) for c in classes}


def seen_classes(class_texts: Mapping[str, str], entities: Sequence[str], text_encoder: Any,
                 threshold: float = 0.95) -> dict[str, dict[str, Any]]:
    """Which classes the model saw as training queries: per class code, the nearest training query (entity
    or superclass name) by cosine similarity of the text embeddings, that similarity, whether the text is
    a training query exactly, and ``seen`` (exact, or similarity > ``threshold``: the paper's rule)."""
    import torch

    codes = list(class_texts)
    if not entities or not codes:
        return {c: {"seen": False, "exact": False, "nearest": None, "similarity": None} for c in codes}
    te = torch.nn.functional.normalize(_text_embeddings(text_encoder, [class_texts[c] for c in codes]).float(), dim=-1)
    ee = torch.nn.functional.normalize(text_encoder.encode(list(entities)).float(), dim=-1)
    sim = te @ ee.t()
    lower = {e.lower() for e in entities}
    out = {}
    for i, c in enumerate(codes):
        j = int(sim[i].argmax())
        exact = class_texts[c].lower() in lower
        out[c] = {"seen": bool(exact or float(sim[i, j]) > threshold), "exact": exact,
                  "nearest": entities[j], "similarity": round(float(sim[i, j]), 4)}
    return out


#: The AUC of a classifier that has learnt nothing.
CHANCE_AUC = 0.5


def _chance_warnings(zs: Mapping[str, Any]) -> list[str]:
    out = []
    rows = [(f"{k} leads", r) for k, r in zs.get("by_lead_count", {}).items() if k in ("1", "12")]
    rows += [(name, r) for name, r in zs.get("by_subset", {}).items()]
    for name, r in rows:
        ci = r.get("macro_auc_ci")
        if ci is not None and ci[0] <= CHANCE_AUC:
            out.append(f"zero-shot macro AUC with {name} is {r['macro_auc']:.3f}, 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]: "
                       "within chance (0.5); this model has not shown that it learnt these classes")
    return out


def run_eval(
    *,
    checkpoint: str | Path,
    task: str,
    splits_root: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    lead_subsets: Sequence[Sequence[str]] | None = None,
    probe: bool = True,
    probe_fractions: Sequence[float] = (0.01, 0.1, 1.0),
    probe_epochs: int = 100,
    random_baseline: bool = True,
    device: str = "cpu",
    limit: int = 0,
    seed: int = 0,
    allow_unknown_training_set: bool = False,
    prompts: str = "names",
    n_boot: int = 1000,
    probe_leads: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Zero-shot on the test split (+ linear probe on train/val/test) of MERL task ``task``; writes
    ``results.json``, ``results.md`` and ``auc_vs_leads.png`` into ``out_dir`` and returns the results.

    Raises :class:`~trainer._errors.TrainingDataLeakError` if a test record is in the checkpoint's
    recorded training set, or if the checkpoint does not record it (unless
    ``allow_unknown_training_set``; the results then say ``"training_set": "unknown"``).

    ``prompts``: ``"names"`` (default, as the K-MERL paper) asks each class by its plain name
    (:func:`class_names`); ``"ckepe"`` by MERL's prompt-engineered descriptions (``CKEPE_prompt.json``);
    the texts used are recorded. Every AUC comes with a bootstrap 95 % interval (``n_boot`` resamples);
    ``warnings`` says when a zero-shot AUC is within chance. ``seen`` tells per class whether its text was
    a training query (exactly, or text-embedding similarity > 0.95). The linear probe runs on all 12 leads
    and on every lead set of ``probe_leads`` (default: the ``lead_subsets``)."""
    from .checkpoint import check_held_out, load_teacher
    from .data import read_merl_split
    from .text import load_text_encoder

    teacher = load_teacher(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    held_out: dict[str, Any] = {}
    for s in ("test", "train", "val") if probe else ("test",):
        ds = read_merl_split(splits_root, task, s, data_root=data_root)
        if limit:
            ds.items = ds.items[:limit]
        if s == "test":
            held_out = check_held_out(checkpoint, ds.record_ids, what=f"{task} test records",
                                      allow_unknown=allow_unknown_training_set)
        splits[s] = eval_data_from_dataset(ds, config=teacher.preprocess)
    te = load_text_encoder(teacher.text_encoder, device=device)
    classes = splits["test"].classes
    names = class_names(task, classes)
    if prompts == "names":
        texts = names
    elif prompts == "ckepe":
        ckepe = load_prompts(splits_root)
        if not ckepe:
            raise TrainConfigError(f"--prompts ckepe: no CKEPE_prompt.json in {splits_root}")
        texts = {c: ckepe.get(c, names[c]) for c in classes}
    else:
        raise TrainConfigError(f"prompts must be 'names' or 'ckepe', not {prompts!r}")
    zs = evaluate_zero_shot(teacher.model, te, splits["test"], lead_subsets=lead_subsets, prompts=texts,
                            device=device, n_boot=n_boot, seed=seed)
    seen = seen_classes(names, teacher.entities, te)
    res: dict[str, Any] = {
        "task": task, "checkpoint": str(checkpoint), "zero_shot": zs,
        "n": {k: len(v) for k, v in splits.items()}, "held_out": held_out,
        "prompt_source": "class names" if prompts == "names" else "CKEPE_prompt.json (MERL's class descriptions)",
        "class_texts": texts, "seen": seen,
        "seen_classes": [c for c in classes if seen[c]["seen"]],
        "unseen_classes": [c for c in classes if not seen[c]["seen"]],
    }
    if probe:
        lead_sets = [tuple(LEADS)] + [canonical_leads(x) for x in (probe_leads if probe_leads is not None
                                                                    else lead_subsets or ())]
        encoders = [("linear_probe", teacher.model)]
        if random_baseline:
            encoders.append(("linear_probe_random", random_encoder(teacher.config, seed)))
        for key, enc in encoders:
            for leads in dict.fromkeys(lead_sets):
                feats = {k: extract_features(enc, v, leads=leads, device=device) for k, v in splits.items()}
                args = [(feats[k], splits[k].labels) for k in ("train", "val", "test")]
                r = linear_probe(*args, fractions=probe_fractions, epochs=probe_epochs, seed=seed, n_boot=n_boot)
                if len(leads) == len(LEADS):
                    res[key] = r
                else:
                    res.setdefault(f"{key}_by_leads", {})[",".join(leads)] = r
    res["warnings"] = _chance_warnings(zs)
    plot_auc_vs_leads({Path(str(checkpoint)).name or "model": zs}, out / "auc_vs_leads.png")
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(results_markdown(res))

    def auc_ci(r: Mapping[str, Any], key: str = "macro_auc") -> list[float | None]:
        ci = r.get(f"{key}_ci") or [None, None]
        return [None if r.get(key) is None else round(r[key], 4)] + [None if x is None else round(x, 4) for x in ci]

    res["summary"] = {
        "task": task,
        "prompts": res["prompt_source"],
        "zero_shot_auc_12_leads [auc, ci_lo, ci_hi]": auc_ci(zs["by_lead_count"]["12"]),
        "zero_shot_auc_1_lead [auc, ci_lo, ci_hi]": auc_ci(zs["by_lead_count"]["1"]),
        "zero_shot_auc_by_subset": {k: auc_ci(v) for k, v in zs["by_subset"].items()},
        "seen_classes": res["seen_classes"],
        "unseen_classes": res["unseen_classes"],
        "linear_probe": {k: auc_ci(v, "test_macro_auc") for k, v in res.get("linear_probe", {}).items()},
        "linear_probe_random": {k: auc_ci(v, "test_macro_auc") for k, v in res.get("linear_probe_random", {}).items()},
        "held_out": held_out.get("training_set"),
        "warnings": res["warnings"],
        "out": str(out),
    }
    return res
