"""Step 1 of the export: distil a teacher into a small student for 1..max_leads leads.

The student keeps the K-MERL architecture (lead-aware encoder + cardiac query head), so one student serves
every subset of up to ``max_leads`` of the 12 leads through the lead-id embedding. Targets come from the
teacher on real ECG windows: its pooled embedding (through a linear adapter that is thrown away) and its
cardiac-query logits for the deployed label sets (plus optional entity names).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kmerl_edge._errors import ConfigError

from ._config import DistillConfig
from ._data import EcgWindows

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kmerl_edge._model import KMERLModel

__all__ = ["DistillResult", "distill_student", "embed_texts", "macro_auc", "model_logits"]

log = logging.getLogger("export")


@dataclass
class DistillResult:
    student: KMERLModel
    #: label set → projected student queries (n_classes, student width)
    queries: dict[str, torch.Tensor]
    #: label set → projected teacher queries (n_classes, teacher width)
    teacher_queries: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def embed_texts(encoder: Any, texts: Sequence[str]) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return encoder.encode(list(texts)).detach().to(torch.float32).cpu()


def model_logits(
    model: KMERLModel, windows: np.ndarray, lead_ids: np.ndarray, queries: torch.Tensor, batch: int = 32
) -> np.ndarray:
    """Eager fp32 logits (N, Q) of ``model`` (its DeviceGraph) on (N, L, 5000) windows."""
    import torch

    from kmerl_edge._model import DeviceGraph

    g = DeviceGraph(model).eval()
    out = []
    lid = torch.from_numpy(np.asarray(lead_ids, dtype=np.int64))
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(np.ascontiguousarray(windows[i : i + batch], dtype=np.float32))
            out.append(g(x, lid, queries).numpy())
    return np.concatenate(out) if out else np.zeros((0, queries.shape[0]), np.float32)


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Macro ROC-AUC over the classes that have both positives and negatives (Mann–Whitney, ties halved)."""
    from scipy.stats import rankdata

    aucs = []
    for c in range(labels.shape[1]):
        y = labels[:, c] > 0.5
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        r = rankdata(scores[:, c])
        aucs.append((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def distill_student(
    teacher: KMERLModel,
    student: KMERLModel,
    text_embeddings: Mapping[str, torch.Tensor],
    data: EcgWindows,
    *,
    max_leads: int,
    config: DistillConfig,
    deployed: Sequence[str] | None = None,
) -> DistillResult:
    """Train ``student`` in place to match ``teacher`` on ``data`` with 1..``max_leads``-lead inputs.

    ``text_embeddings`` maps a label set (or ``"_entities"``) to raw text embeddings (n, text_dim); all are
    distilled, those named in ``deployed`` (default: all but ``_entities``) get student queries returned.
    """
    import torch
    import torch.nn.functional as F


    t0 = time.perf_counter()
    from kmerl_edge._preprocess import PreprocessConfig

    fs = PreprocessConfig().target_fs  # augmentation re-runs the shared band-pass at the model rate
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    teacher = teacher.eval()
    names = list(text_embeddings)
    deployed = [n for n in names if n != "_entities"] if deployed is None else list(deployed)
    text = torch.cat([text_embeddings[n] for n in names]).to(torch.float32)
    sizes = [int(text_embeddings[n].shape[0]) for n in names]
    with torch.no_grad():
        t_queries = teacher.project_queries(text)
    x_all = torch.from_numpy(np.ascontiguousarray(data.windows, dtype=np.float32))

    def teacher_targets(x: torch.Tensor, lid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            tokens, pooled, _ = teacher.encoder(x, lid)
            return pooled, teacher.query_head(t_queries, tokens, None)

    # Leads a window really has (zero rows are leads its recording lacks, e.g. 2-lead Holter windows):
    # the teacher is asked on those leads only, and the student's lead subsets are drawn from them.
    present = (x_all.abs().amax(dim=-1) > 0).numpy()
    usable = np.flatnonzero(present.any(axis=1))
    if usable.size == 0:
        raise ConfigError("no distillation window has a non-zero lead")

    cache: tuple[torch.Tensor, torch.Tensor] | None = None
    if config.teacher_leads == "all" and config.steps > 0:
        groups: dict[bytes, list[int]] = {}
        for i in usable:
            groups.setdefault(present[i].tobytes(), []).append(int(i))
        pooled_all = torch.zeros(len(x_all), teacher.cfg.width)
        logit_all = torch.zeros(len(x_all), t_queries.shape[0])
        for rows in groups.values():
            ids = torch.from_numpy(np.flatnonzero(present[rows[0]]).astype(np.int64))
            for j in range(0, len(rows), 32):
                r = torch.tensor(rows[j : j + 32])
                p, lg = teacher_targets(x_all[r][:, ids], ids)
                pooled_all[r] = p
                logit_all[r] = lg
        cache = (pooled_all, logit_all)

    adapter = torch.nn.Linear(student.cfg.width, teacher.cfg.width)
    params = [p for n, p in student.named_parameters() if not n.startswith(("ecg_proj.", "text_proj."))]
    opt = torch.optim.AdamW(params + list(adapter.parameters()), lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / max(1, config.warmup_steps)
        frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    history: list[dict[str, float]] = []
    student.train()
    T = config.temperature
    n_present = present.sum(axis=1)
    # logit columns distilled on few-lead windows (the others are masked out of their loss)
    partial_cols = torch.zeros(sum(sizes), dtype=torch.bool)
    off = 0
    for name, sz in zip(names, sizes):
        if name in config.partial_lead_label_sets:
            partial_cols[off : off + sz] = True
        off += sz
    weight = np.zeros(len(present))
    rich = np.intersect1d(usable, np.flatnonzero(n_present > max_leads))
    partial = np.intersect1d(usable, np.flatnonzero(n_present <= max_leads))
    if rich.size and partial.size:
        share = min(max(float(config.partial_lead_share), 0.0), 1.0)
        weight[rich] = (1.0 - share) / rich.size
        weight[partial] = share / partial.size
    else:
        weight[usable] = 1.0 / usable.size
    for step in range(config.steps):
        k = int(rng.integers(1, max_leads + 1))
        cand = usable[n_present[usable] >= k]
        if cand.size == 0:  # no window has k leads
            k = int(n_present[usable].max())
            cand = usable[n_present[usable] >= k]
        p_cand = weight[cand] / weight[cand].sum()
        idx = rng.choice(cand, size=min(config.batch_size, cand.size), p=p_cand)
        lid = np.stack(
            [np.sort(rng.choice(np.flatnonzero(present[i]), size=k, replace=False)) for i in idx]
        ).astype(np.int64)
        xb = x_all[torch.from_numpy(idx)]
        lid_t = torch.from_numpy(lid)
        xs = torch.gather(xb, 1, lid_t.unsqueeze(-1).expand(-1, -1, xb.shape[-1]))
        x_student = xs
        if config.augment is not None:  # the teacher sees the clean window, the student a device's version
            from ._augment import augment_windows

            x_student = torch.from_numpy(augment_windows(xs.numpy(), rng, fs=fs, config=config.augment))
        if cache is not None:
            t_pooled, t_logits = cache[0][torch.from_numpy(idx)], cache[1][torch.from_numpy(idx)]
        else:
            t_pooled, t_logits = teacher_targets(xs, lid_t)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        tokens, pooled, _ = student.encoder(x_student, lid_t)
        s_logits = student.query_head(student.project_queries(text), tokens, None)
        l_pool = F.mse_loss(adapter(pooled), t_pooled)
        few = torch.from_numpy(n_present[idx] <= max_leads)
        mask = torch.where(few.unsqueeze(1), partial_cols.unsqueeze(0), torch.ones_like(partial_cols).unsqueeze(0))
        mask = mask.to(s_logits.dtype)
        denom = mask.sum().clamp_min(1.0)
        bce = F.binary_cross_entropy_with_logits(s_logits / T, torch.sigmoid(t_logits / T), reduction="none")
        l_logit = (bce * mask).sum() / denom * T * T + (((s_logits - t_logits) ** 2) * mask).sum() / denom
        loss = config.pooled_weight * l_pool + config.logit_weight * l_logit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % max(1, config.log_every) == 0 or step == config.steps - 1:
            rec = {"step": float(step), "loss": loss.item(), "pooled": l_pool.item(), "logits": l_logit.item()}
            history.append(rec)
            log.info("distill step %d loss %.4f (pooled %.4f, logits %.4f)", step, rec["loss"], rec["pooled"], rec["logits"])
    student.eval()
    s_q: dict[str, torch.Tensor] = {}
    t_q: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        off = 0
        sq_all = student.project_queries(text)
        for name, sz in zip(names, sizes):
            if name in deployed:
                s_q[name] = sq_all[off : off + sz].clone()
                t_q[name] = t_queries[off : off + sz].clone()
            off += sz
    return DistillResult(student, s_q, t_q, history, time.perf_counter() - t0)
