"""Optional recipe stage: a supervised linear superclass head on the frozen encoder (the linear-probe
protocol of the paper's downstream evaluation).

The trained network's encoder is frozen. Its mean-pooled tokens (the mean over the tokens of the leads
given, as the device graph computes them) are taken for the network's own training windows — the PTB-XL
records of the run's ``train`` split (``export._corpus``), with their PTB-XL superclass labels from the
official statement table — on several lead subsets per window: lead I, lead II, I+II, I+II+V2, the six
limb leads, all twelve, and ``random_subsets`` random subsets of 1–12 leads (seeded). One logistic
regression per class (sklearn, on standardised embeddings; the inverse regularisation C chosen per class by
``cv_folds``-fold cross-validation grouped by record, on the training windows only) then gives one head
for every lead count. The standardisation is folded into the head's weights, which go into the model as
:class:`kmerl_edge._model.LinearProbe` (weights in ``weights.safetensors`` like the rest): the device graph
scores the label set's rows with it and leaves every other row (AF, the rhythm classes) bit for bit as it
was. ``python -m export.default_model ... --superclass-probe``; off by default.

A window whose corpus record is not in the ``train`` split (a validation or test record: PTB-XL folds 9
and 10, held-out patients) is an :class:`ExportError`, never fitted on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kmerl_edge._config import PROBE_MODES
from kmerl_edge._errors import ConfigError, ExportError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kmerl_edge._model import KMERLModel

__all__ = [
    "FIXED_LEAD_SETS",
    "ProbeConfig",
    "ProbeData",
    "ProbeHead",
    "attach_probe",
    "fit_probe",
    "pooled_embeddings",
    "subset_embeddings",
    "subset_rows",
    "probe_training_windows",
]

#: lead subsets every training window is embedded with (plus ``ProbeConfig.random_subsets`` random ones)
FIXED_LEAD_SETS: tuple[tuple[str, ...], ...] = (
    ("I",),
    ("II",),
    ("I", "II"),
    ("I", "II", "V2"),
    ("I", "II", "III", "aVR", "aVL", "aVF"),
    ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
)


@dataclass(frozen=True)
class ProbeConfig:
    """The linear superclass head (see the module docstring)."""

    #: the label set whose rows the head scores
    label_set: str = "ptbxl_superclass"
    #: ``replace``: the head's logit; ``mean``: logit of the mean of the query network's and the head's
    #: probabilities
    mode: str = "replace"
    #: random 1–12-lead subsets per window, besides :data:`FIXED_LEAD_SETS`
    random_subsets: int = 2
    #: inverse regularisation strengths tried (log-spaced from ``c_min`` to ``c_max``)
    n_cs: int = 8
    c_min: float = 1e-3
    c_max: float = 1e2
    cv_folds: int = 5
    seed: int = 0
    batch: int = 64

    def __post_init__(self) -> None:
        if self.mode not in PROBE_MODES:
            raise ConfigError(f"probe mode must be one of {PROBE_MODES}, got {self.mode!r}")
        if self.random_subsets < 0 or self.n_cs < 1 or self.cv_folds < 2 or self.batch < 1:
            raise ConfigError("probe: random_subsets >= 0, n_cs >= 1, cv_folds >= 2 and batch >= 1 are required")
        if not 0 < self.c_min <= self.c_max:
            raise ConfigError(f"probe: 0 < c_min <= c_max required, got {self.c_min}, {self.c_max}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeHead:
    """A fitted head: ``weight`` (C, width) and ``bias`` (C,) on the raw pooled embedding (the
    standardisation folded in), the classes in order, and what the fit chose."""

    classes: tuple[str, ...]
    weight: np.ndarray
    bias: np.ndarray
    meta: dict[str, Any]

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        return np.asarray(pooled, np.float64) @ self.weight.T.astype(np.float64) + self.bias


@dataclass
class ProbeData:
    """What :func:`export.export_bundle` fits the head on: training ``windows`` (N, 12, S) in canonical
    lead order, ``labels`` (N, C) over ``classes`` (from :func:`probe_training_windows`)."""

    windows: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    record_ids: tuple[str, ...] = ()
    config: ProbeConfig = field(default_factory=ProbeConfig)


def probe_training_windows(shards: str | Path, corpus_records: Sequence[Any], classes: Sequence[str]
                           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The PTB-XL windows of a run's shard store with their labels over ``classes``: ``(windows (N, 12, S)
    float16, labels (N, C) float32, record ids)``. Every shard record must be a ``train``-split record of
    ``corpus_records`` (else :class:`ExportError`: a validation or test record is never fitted on)."""
    from ._corpus import shard_records

    store, ids, by_id = shard_records(shards, corpus_records)
    held = [i for i in ids if by_id[i].split != "train"]
    if held:
        raise ExportError(f"{len(held)} shard records are not in the corpus's train split (e.g. {held[:3]}, "
                          f"split {by_id[held[0]].split!r}): the superclass head is fitted on training records only")
    rows = [i for i, rid in enumerate(ids) if by_id[rid].source == "ptbxl"]
    if not rows:
        raise ExportError("no PTB-XL training record in the shard store: nothing to fit the superclass head on")
    x = np.asarray(store.batch(rows), dtype=np.float16)
    y = np.asarray([[c in by_id[ids[i]].labels for c in classes] for i in rows], np.float32)
    return x, y, [ids[i] for i in rows]


def pooled_embeddings(model: KMERLModel, windows: np.ndarray, lead_ids: np.ndarray, batch: int = 64) -> np.ndarray:
    """Mean-pooled encoder tokens (N, width) of ``windows`` (N, L, S) on ``lead_ids`` ((L,) or (N, L)),
    exactly as the device graph pools them."""
    import torch

    out = []
    lid = torch.from_numpy(np.ascontiguousarray(lead_ids, dtype=np.int64))
    model.eval()
    with torch.no_grad():
        for a in range(0, len(windows), batch):
            sig = torch.from_numpy(np.ascontiguousarray(windows[a:a + batch], dtype=np.float32))
            ids = lid if lid.dim() == 1 else lid[a:a + batch]
            out.append(model.encoder(sig, ids)[1].numpy())
    w = model.cfg.width
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, w))


def _subset_groups(x: np.ndarray, config: ProbeConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (window, lead subset) rows of :func:`subset_embeddings` in groups of one lead count: (window
    indices (n,), lead ids — one (k,) set for every window of a fixed lead set, or (n, k) per window for the
    ``config.random_subsets`` random draws). One sequence of random draws for every caller."""
    from kmerl_edge import lead_ids

    present = np.abs(x.astype(np.float32)).max(axis=-1) > 0  # (N, 12); absent leads are zero rows
    for leads in FIXED_LEAD_SETS:
        ids = np.asarray(lead_ids(leads))
        have = np.flatnonzero(present[:, ids].all(axis=1))
        if len(have):
            yield have, ids
    rng = np.random.default_rng(config.seed)
    for _ in range(config.random_subsets):
        n_present = present.sum(axis=1)
        k = np.minimum(rng.integers(1, 13, len(x)), n_present)
        for kk in np.unique(k[k > 0]):
            rows = np.flatnonzero(k == kk)
            yield rows, np.stack([np.sort(rng.choice(np.flatnonzero(present[i]), size=int(kk), replace=False))
                                  for i in rows])


def subset_embeddings(model: KMERLModel, x: np.ndarray, config: ProbeConfig
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, window index, lead count) of every (window, lead subset) row."""
    emb, win, count = [], [], []
    for rows, lid in _subset_groups(x, config):
        if lid.ndim == 1:
            emb.append(pooled_embeddings(model, x[rows][:, lid], lid, config.batch))
        else:
            xs = np.stack([x[i][lid[j]] for j, i in enumerate(rows)])
            emb.append(pooled_embeddings(model, xs, lid, config.batch))
        win.append(rows)
        count.append(np.full(len(rows), lid.shape[-1]))
    return np.concatenate(emb), np.concatenate(win), np.concatenate(count)


def subset_rows(x: np.ndarray, config: ProbeConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """(window index, lead ids) of every row of :func:`subset_embeddings`, in its order and with its
    random draws."""
    win: list[np.ndarray] = []
    lids: list[np.ndarray] = []
    for rows, lid in _subset_groups(x, config):
        win.append(rows)
        lids.extend([lid] * len(rows) if lid.ndim == 1 else list(lid))
    return (np.concatenate(win) if win else np.zeros(0, np.int64)), lids


def fit_head(emb: np.ndarray, y: np.ndarray, groups: np.ndarray, classes: Sequence[str], config: ProbeConfig
             ) -> ProbeHead:
    """Per class a standardised logistic regression with C chosen by grouped cross-validation (ROC AUC);
    the standardisation folded into the returned weights."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    mean = emb.mean(axis=0)
    std = np.maximum(emb.std(axis=0), 1e-6)
    z = (emb - mean) / std
    cs = np.logspace(np.log10(config.c_min), np.log10(config.c_max), config.n_cs)
    weight = np.zeros((len(classes), emb.shape[1]))
    bias = np.zeros(len(classes))
    chosen: dict[str, Any] = {}
    n_groups = len(np.unique(groups))
    for j, c in enumerate(classes):
        yj = y[:, j] > 0.5
        if yj.all() or not yj.any():
            raise ExportError(f"superclass head: class {c!r} has no {'negative' if yj.all() else 'positive'} "
                              "training window")
        folds = min(config.cv_folds, n_groups)
        if folds >= 2:
            splits = list(GroupKFold(n_splits=folds).split(z, yj, groups))
            if all(0 < yj[tr].sum() < len(tr) and 0 < yj[te].sum() < len(te) for tr, te in splits):
                lr = LogisticRegressionCV(Cs=cs, cv=splits, scoring="roc_auc", max_iter=2000).fit(z, yj)
                best = float(lr.C_[0])
            else:  # a fold without both labels (tiny data): the middle of the grid
                best = float(cs[len(cs) // 2])
                lr = LogisticRegression(C=best, max_iter=2000).fit(z, yj)
        else:
            best = float(cs[len(cs) // 2])
            lr = LogisticRegression(C=best, max_iter=2000).fit(z, yj)
        coef = lr.coef_[0] / std
        weight[j] = coef
        bias[j] = float(lr.intercept_[0]) - float(coef @ mean)
        chosen[c] = {"C": best, "positives": int(yj.sum())}
    return ProbeHead(tuple(classes), weight, bias, {"per_class": chosen})


def fit_probe(model: KMERLModel, windows: np.ndarray, labels: np.ndarray, classes: Sequence[str],
              config: ProbeConfig | None = None, record_ids: Sequence[str] | None = None) -> ProbeHead:
    """Fit the head on the frozen encoder of ``model`` for training ``windows`` (N, 12, S) in canonical lead
    order (absent leads are zero rows) with ``labels`` (N, C) over ``classes``
    (:func:`probe_training_windows`)."""
    import time

    cfg = config or ProbeConfig()
    if len(windows) != len(labels) or labels.shape[1] != len(classes):
        raise ConfigError(f"probe: {len(windows)} windows, labels {labels.shape}, {len(classes)} classes")
    t0 = time.perf_counter()
    emb, win, count = subset_embeddings(model, windows, cfg)
    head = fit_head(emb, labels[win], win, classes, cfg)
    head.meta.update({
        "fitted_on": "PTB-XL records of the network's training split (export._corpus), superclass labels",
        "windows": int(len(windows)), "rows": int(len(emb)),
        "lead_sets": ["+".join(s) for s in FIXED_LEAD_SETS] + [f"{cfg.random_subsets} random 1-12-lead subsets"],
        "lead_counts": {str(int(k)): int((count == k).sum()) for k in np.unique(count)},
        "records": len(set(record_ids)) if record_ids is not None else int(len(windows)),
        "config": cfg.to_dict(), "seconds": round(time.perf_counter() - t0, 1),
    })
    return head


def attach_probe(model: KMERLModel, head: ProbeHead, queries: torch.Tensor | np.ndarray, mode: str = "replace"
                 ) -> KMERLModel:
    """A copy of ``model`` with the head in its config and weights: ``queries`` (C, width) are the projected
    query vectors of the head's classes as the bundle deploys them (the graph matches rows by them)."""
    import torch

    from kmerl_edge._config import with_overrides
    from kmerl_edge._model import PROBE_MATCH_TOLERANCE, KMERLModel

    q = torch.as_tensor(np.asarray(queries, np.float32))
    if q.shape != (len(head.classes), model.cfg.width):
        raise ConfigError(f"probe queries {tuple(q.shape)} != ({len(head.classes)}, {model.cfg.width})")
    if len(q) > 1:
        gap = (q.unsqueeze(1) - q.unsqueeze(0)).abs().amax(-1) + torch.eye(len(q)) * 1e9
        if float(gap.min()) <= 100 * PROBE_MATCH_TOLERANCE:
            raise ExportError("two of the head's classes have near-identical query vectors: rows cannot be matched")
    cfg = with_overrides(model.cfg, probe_classes=len(head.classes), probe_mode=mode)
    out = KMERLModel(cfg)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - {"probe.weight", "probe.bias", "probe.queries"}:
        raise ExportError(f"cannot attach the head: {missing} {unexpected}")
    assert out.probe is not None
    with torch.no_grad():
        out.probe.weight.copy_(torch.as_tensor(head.weight, dtype=torch.float32))
        out.probe.bias.copy_(torch.as_tensor(head.bias, dtype=torch.float32))
        out.probe.queries.copy_(q)
    return out.eval()
