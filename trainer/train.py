"""The distributed training loop (``kmerl-train train``).

Launch with ``torchrun --nproc-per-node N -m trainer.cli train …`` (or plain ``python -m trainer.cli
train`` for one process). The process group is NCCL on CUDA and gloo on CPU; autocast is bf16 on CUDA
(``precision="auto"``); AdamW, warm-up + cosine schedule per step, gradient clipping.

Determinism: the data order of epoch ``e`` is a permutation seeded by ``(seed, e)``; step ``s`` of rank
``r`` takes rows ``perm[(s·W + r)·B : …+B]``; the masks of a step come from a generator seeded by
``(seed, global_step, rank)``. A checkpoint therefore needs only the model, optimizer, scheduler, scaler
and the data position to continue *exactly*; RNG states are saved and restored as well.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from kmerl_edge._model import KMERLModel, create_model

from ._config import TrainConfig
from ._errors import CheckpointError, TrainConfigError
from ._losses import contrastive_loss, query_bce_loss
from ._masking import sample_token_keep
from .checkpoint import latest_checkpoint, load_train_state, save_checkpoint
from .labels import LabelMatrix
from .shards import ShardStore, open_shards, write_json_atomic

__all__ = ["train", "TrainResult", "rng_state", "KMERLTrainModule", "resolve_device"]


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_checkpoint: Path | None
    losses: list[float]
    samples_per_s: float
    rank: int = 0
    world_size: int = 1


# ------------------------------------------------------------------------------------------- utilities
def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainConfigError("--device cuda was asked for but torch sees no CUDA device")
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return torch.device(device)


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rng_state() -> dict[str, Any]:
    """This process's RNG states: torch CPU / CUDA (uint8 tensors), numpy and python (JSON-able)."""
    np_state: Any = np.random.get_state()  # noqa: NPY002 - the legacy global state is what we save
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np.asarray(np_state[1]).tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": json.loads(json.dumps(random.getstate())),
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], state: dict[str, Any], rank: int) -> None:
    if f"rng.torch.{rank}" not in tensors:
        return
    torch.set_rng_state(tensors[f"rng.torch.{rank}"])
    r = state["rng"][rank]
    if torch.cuda.is_available() and r["n_cuda"]:
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{rank}.{i}"] for i in range(r["n_cuda"])])
    n = r["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    p = r["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes in the environment. Returns True if we created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # generous timeout: rank 0 embeds every unique report once before the first step (see _text_cache)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
    return True


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------------------------- the train module
class KMERLTrainModule(nn.Module):
    """The K-MERL model plus (when some of its layers train) the text encoder, so DDP sees one module.

    ``forward`` returns ``(loss, clip_loss, bce_loss)`` for a batch.
    """

    def __init__(self, model: KMERLModel, text_model: nn.Module | None, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.text_model = text_model
        self.cfg = cfg

    def _text(self, inputs: Any, pooling: str) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return inputs
        assert self.text_model is not None
        hidden = self.text_model(**inputs).last_hidden_state
        if pooling == "cls":
            return hidden[:, 0]
        m = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)

    def forward(
        self,
        signal: torch.Tensor,
        keep_idx: torch.Tensor,
        keep_mask: torch.Tensor,
        report_inputs: Any,
        entity_inputs: Any,
        labels: torch.Tensor,
        pooling: str = "mean",
        groups: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lead_ids = torch.arange(signal.shape[1], device=signal.device)
        tokens, pooled, mask = self.model.encoder(signal, lead_ids, keep_idx, keep_mask)
        report = self._text(report_inputs, pooling)
        ent = self._text(entity_inputs, pooling)
        ecg_emb = self.model.ecg_embedding(pooled)
        txt_emb = self.model.text_embedding(report.to(pooled.dtype))
        lc = self.cfg.loss
        clip = contrastive_loss(ecg_emb, txt_emb, temperature=lc.temperature, gather=lc.gather, groups=groups,
                                same_report=lc.same_report)
        queries = self.model.project_queries(ent.to(pooled.dtype))
        logits = self.model.query_head(queries, tokens, mask)
        bce = query_bce_loss(logits, labels)
        return lc.clip_weight * clip + lc.bce_weight * bce, clip.detach(), bce.detach()


# ------------------------------------------------------------------------------------- text feature cache
def _text_cache(
    store: ShardStore, entities: list[str], spec: str | None, cfg: TrainConfig, cache_dir: Path, rank: int,
    device: torch.device,
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, str, int, str]:
    """Frozen text encoder: embed every unique report and entity once (rank 0 writes, all read)."""
    from safetensors.torch import load_file, save_file

    from .text import default_text_encoder_spec

    spec_s = default_text_encoder_spec() if spec is None else spec
    reports = store.reports
    uniq = sorted(set(reports))
    h = hashlib.sha256(json.dumps([spec_s, cfg.text_max_length, uniq, entities]).encode()).hexdigest()[:20]
    path = cache_dir / f"text-cache-{h}.safetensors"
    if rank == 0 and not path.is_file():
        from .text import load_text_encoder

        te = load_text_encoder(spec_s, device=str(device), max_length=cfg.text_max_length)
        rep = te.encode(uniq)
        ent = te.encode(entities)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        save_file({"reports": rep.cpu().contiguous(), "entities": ent.cpu().contiguous()}, str(tmp),
                  metadata={"spec": spec_s, "pooling": te.pooling, "dim": str(te.dim)})
        os.replace(tmp, path)
    _barrier()
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        md = fh.metadata()
    t = load_file(str(path))
    pos = {r: i for i, r in enumerate(uniq)}
    idx = np.asarray([pos[r] for r in reports], dtype=np.int64)
    return t["reports"], idx, t["entities"], spec_s, int(md["dim"]), md["pooling"]


# ------------------------------------------------------------------------------------------ the loop
def _groups(store: ShardStore, aligned: LabelMatrix, key: str) -> np.ndarray:
    """(N,) int64: rows with the same report (``key="report"``) or the same non-empty entity set
    (``"entities"``) share an id; the contrastive loss masks such pairs from each other's negatives."""
    ids: dict[Any, int] = {}
    out = np.empty(len(store), dtype=np.int64)
    m = aligned.matrix.tocsr()
    for i in range(len(store)):
        if key == "report":
            k: Any = ("r", store.meta[i]["report"])
        else:
            cols = m.indices[m.indptr[i] : m.indptr[i + 1]][m.data[m.indptr[i] : m.indptr[i + 1]] != 0]
            k = ("e", tuple(sorted(cols.tolist()))) if cols.size else ("row", i)
        out[i] = ids.setdefault(k, len(ids))
    return out


def _cosine(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, total - cfg.warmup_steps)
        prog = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))

    return f


class _Batches(torch.utils.data.Dataset):
    """Batch ``j`` of one rank within an epoch, read from the memory-mapped shards (opened lazily, so
    loader workers do not receive copies of the arrays), with everything else the step needs from the host:
    the token masks (seeded by the global step, so a batch is the same whichever process makes it) and the
    dense label rows. With loader workers this host work (≈ 40 ms per batch of 512) runs beside the GPU
    step instead of before it."""

    def __init__(self, root: Path, rows: np.ndarray, step0: int, present: np.ndarray, labels: LabelMatrix,
                 cfg: TrainConfig, tokens_per_lead: int, rank: int) -> None:
        self.root = root
        self.rows = rows  # (n_batches, B)
        self.step0 = step0  # global step of batch 0
        self.present = present
        self.labels = labels
        self.cfg = cfg
        self.tpl = tokens_per_lead
        self.rank = rank
        self._store: ShardStore | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, j: int) -> tuple[torch.Tensor, ...]:
        if self._store is None:
            self._store = open_shards(self.root)
        r = self.rows[j]
        g = torch.Generator().manual_seed(_seed_for(self.cfg.seed, self.step0 + j, self.rank))
        keep_idx, keep_mask, _ = sample_token_keep(torch.from_numpy(self.present[r]), tokens_per_lead=self.tpl,
                                                   cfg=self.cfg.masking, generator=g)
        y = torch.from_numpy(self.labels.rows(r))
        return torch.from_numpy(self._store.batch(r)), torch.from_numpy(r), keep_idx, keep_mask, y


def _precision(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.precision


def _read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


_FIELDS = ["step", "epoch", "loss", "clip_loss", "bce_loss", "lr", "samples_per_s", "time_s"]


def train(
    cfg: TrainConfig,
    *,
    data: str | Path,
    out_dir: str | Path,
    labels: LabelMatrix | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    stop_at_step: int | None = None,
    label_missing: str = "error",
) -> TrainResult:
    """Train on the shard store ``data`` and write checkpoints, ``metrics.csv`` and ``train_config.json``
    under ``out_dir``.

    ``labels``: the entity label matrix (record ids → entities); default: the shard store's own labels
    (:meth:`LabelMatrix.from_records`). ``resume`` continues from the newest complete checkpoint.
    ``stop_at_step`` ends the process abruptly (``os._exit``) right after that optimizer step without
    writing anything more, as a kill would (used to test resumption).
    """
    dev = resolve_device(device)
    created = _init_distributed(dev)
    rank, world = _dist()
    out = Path(out_dir)
    try:
        return _train(cfg, Path(data), out, labels, resume, dev, progress and rank == 0, stop_at_step,
                      label_missing, rank, world)
    finally:
        if created:
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig, data: Path, out: Path, labels: LabelMatrix | None, resume: bool, dev: torch.device,
    progress: bool, stop_at_step: int | None, label_missing: str, rank: int, world: int,
) -> TrainResult:
    store = open_shards(data)
    n = len(store)
    per_step = cfg.batch_size * world
    spe = n // per_step
    if spe == 0:
        raise TrainConfigError(f"{n} rows cannot fill one global batch of {per_step} ({world} × {cfg.batch_size})")
    total = spe * cfg.epochs if cfg.max_steps is None else min(spe * cfg.epochs, cfg.max_steps)

    if labels is None:
        labels = LabelMatrix.from_records(store.record_ids, [m["labels"] for m in store.meta])
    aligned = labels.align(store.record_ids, missing=label_missing)
    entities = list(labels.entities)
    if not entities:
        raise TrainConfigError("the label matrix has no entities; the query BCE needs at least one")

    groups_all = torch.from_numpy(_groups(store, aligned, cfg.loss.same_key))

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    text_model = None
    tokenizer = None
    if cfg.text_trainable_layers > 0:
        from .text import load_text_encoder

        te = load_text_encoder(cfg.text_encoder, device=str(dev), max_length=cfg.text_max_length)
        te.set_trainable_layers(cfg.text_trainable_layers)
        te.model.train()
        text_model, tokenizer, pooling, text_dim, spec = te.model, te, te.pooling, te.dim, te.spec
        rep_feats = ent_feats = None
        rep_idx = None
    else:
        rep_feats_t, rep_idx, ent_feats_t, spec, text_dim, pooling = _text_cache(
            store, entities, cfg.text_encoder, cfg, data, rank, dev)
        rep_feats, ent_feats = rep_feats_t.to(dev), ent_feats_t.to(dev)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, text_dim=text_dim, temperature=cfg.loss.temperature).to(dev)
    module = KMERLTrainModule(model, text_model, cfg).to(dev)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(cfg, total))
    precision = _precision(cfg, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    ddp: nn.Module = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None)

    ckdir = out / "checkpoints"
    start_step = 0
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    _barrier()
    cfg_path = out / "train_config.json"
    if resume:
        ck = latest_checkpoint(out)
        if ck is None:
            raise CheckpointError(f"--resume: no complete checkpoint under {out}/checkpoints")
        start_step = _load_resume(ck, cfg, world, rank, module, opt, sched, scaler, dev)
    elif latest_checkpoint(out) is not None:
        raise CheckpointError(f"{out} already holds checkpoints; pass --resume or use a new --out")
    if rank == 0:
        write_json_atomic(cfg_path, {"train_config": cfg.to_dict(), "data": str(data), "world_size": world})
        for leftover in ckdir.glob("*.tmp-*") if ckdir.is_dir() else []:
            shutil.rmtree(leftover, ignore_errors=True)
        _truncate_metrics(out / "metrics.csv", start_step)

    writer = _tensorboard(out) if rank == 0 else None
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=start_step, desc="train", unit="step")
        except ImportError:  # pragma: no cover
            bar = None

    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    losses: list[float] = []
    step = start_step
    t_start = time.perf_counter()
    seen = 0
    final: Path | None = None
    tpl = model.cfg.tokens_per_lead
    while step < total:
        epoch, in_epoch = divmod(step, spe)
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        rows = perm[: spe * per_step].reshape(spe, world, cfg.batch_size)[:, rank]
        loader = torch.utils.data.DataLoader(
            _Batches(data, rows[in_epoch:], step, store.present, aligned, cfg, tpl, rank), batch_size=None,
            shuffle=False, num_workers=cfg.num_workers, pin_memory=dev.type == "cuda",
        )
        for sig, idx, keep_idx, keep_mask, y in loader:
            if step >= total:
                break
            t0 = time.perf_counter()
            y = y.to(dev, non_blocking=True)
            if text_model is not None:
                assert tokenizer is not None
                rep_in: Any = tokenizer.tokenize([store.meta[int(i)]["report"] for i in idx])
                ent_in: Any = tokenizer.tokenize(entities)
            else:
                assert rep_feats is not None and rep_idx is not None
                rep_in = rep_feats[torch.from_numpy(rep_idx[idx.numpy()]).to(dev)]
                ent_in = ent_feats
            sig = sig.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss, clip, bce = ddp(sig, keep_idx.to(dev, non_blocking=True), keep_mask.to(dev, non_blocking=True),
                                      rep_in, ent_in, y, pooling, groups_all[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            seen += sig.shape[0] * world
            dt = time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
            stats = torch.stack([loss.detach().float(), clip.float(), bce.float()])
            if step % cfg.log_every == 0 or step == total:
                if world > 1:
                    dist.all_reduce(stats)
                    stats /= world
                losses.append(float(stats[0]))
                if rank == 0:
                    row = {
                        "step": step, "epoch": epoch, "loss": f"{float(stats[0]):.6f}",
                        "clip_loss": f"{float(stats[1]):.6f}", "bce_loss": f"{float(stats[2]):.6f}",
                        "lr": f"{sched.get_last_lr()[0]:.3e}", "samples_per_s": f"{sig.shape[0] * world / dt:.2f}",
                        "time_s": f"{time.perf_counter() - t_start:.2f}",
                    }
                    _append_metrics(out / "metrics.csv", row)
                    if writer is not None:
                        for k in ("loss", "clip_loss", "bce_loss", "lr"):
                            writer.add_scalar(f"train/{k}", float(str(row[k])), step)
                    if bar is not None:
                        bar.set_postfix(loss=row["loss"])
            if stop_at_step is not None and step == stop_at_step:
                os._exit(75)  # simulate a kill: nothing after this step is written
            if step % cfg.ckpt_every == 0 or step == total:
                final = _checkpoint(ckdir, step, spe, module, opt, sched, scaler, cfg, store, entities, spec,
                                    pooling, tokenizer, rank, world)
        in_epoch = 0
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    elapsed = time.perf_counter() - t_start
    return TrainResult(out, step, final, losses, seen / elapsed if elapsed > 0 else 0.0, rank, world)


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric rows written after the checkpoint (they will be written again)."""
    rows = [r for r in _read_metrics(path) if int(r["step"]) <= step]
    if not path.is_file():
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _gather_rng(world: int) -> list[dict[str, Any]]:
    mine = rng_state()
    if world == 1:
        return [mine]
    objs: list[Any] = [None] * world
    dist.all_gather_object(objs, mine)
    return objs


def _checkpoint(
    ckdir: Path, step: int, spe: int, module: KMERLTrainModule, opt: Any, sched: Any, scaler: Any,
    cfg: TrainConfig, store: ShardStore, entities: list[str], spec: str, pooling: str, tokenizer: Any,
    rank: int, world: int,
) -> Path:
    rngs = _gather_rng(world)
    path = ckdir / f"step-{step:08d}"
    if rank == 0:
        save_checkpoint(
            path,
            model=module.model,
            text_encoder=spec,
            entities=entities,
            preprocess=store.preprocess_config,
            train_config=cfg.to_dict(),
            step=step,
            optimizer=opt,
            scheduler=sched,
            scaler=scaler if scaler.is_enabled() else None,
            rng_states=rngs,
            position={"global_step": step, "epoch": step // spe, "step_in_epoch": step % spe,
                      "world_size": world, "steps_per_epoch": spe},
            text_model=module.text_model,
            text_tokenizer=getattr(tokenizer, "tokenizer", None),
            text_pooling=pooling,
            meta={"data": str(store.root), "dataset": store.index.get("dataset"), "split": store.index.get("split")},
            training_records={"record_ids": store.record_ids, "dataset": store.index.get("dataset"),
                              "split": store.index.get("split"), "data": str(store.root)},
        )
        old = sorted(p for p in ckdir.iterdir() if p.name.startswith("step-") and ".tmp" not in p.name)
        for p in old[: max(0, len(old) - cfg.keep_checkpoints)]:
            shutil.rmtree(p, ignore_errors=True)
    _barrier()
    return path


_RESUMABLE_CHANGES = {"max_steps", "epochs", "log_every", "ckpt_every", "keep_checkpoints", "num_workers"}


def _load_resume(
    ck: Path, cfg: TrainConfig, world: int, rank: int, module: KMERLTrainModule, opt: Any, sched: Any,
    scaler: Any, dev: torch.device,
) -> int:
    from safetensors.torch import load_file

    conf = json.loads((ck / "config.json").read_text())
    old = conf.get("train_config") or {}
    if old:  # fields added since the checkpoint was written take their default, which is the old behaviour
        try:
            old = TrainConfig.from_dict(old).to_dict()
        except (TrainConfigError, TypeError, ValueError):
            pass  # keys this code does not know: compare as written
    now = cfg.to_dict()
    diff = sorted(k for k in now if k not in _RESUMABLE_CHANGES and json.dumps(old.get(k), sort_keys=True) != json.dumps(now[k], sort_keys=True))
    if diff:
        raise CheckpointError(f"{ck}: the training config differs from the checkpoint's in {diff}")
    tensors, state = load_train_state(ck)
    pos = state["position"]
    if pos.get("world_size") != world:
        raise CheckpointError(f"{ck} was written by {pos.get('world_size')} processes; this run has {world}")
    module.model.load_state_dict(load_file(str(ck / "model.safetensors")))
    if module.text_model is not None:
        from safetensors.torch import load_file as lf

        tdir = ck / "text_encoder"
        sd: dict[str, torch.Tensor] = {}
        for f in sorted(tdir.glob("*.safetensors")):
            sd.update(lf(str(f)))
        missing, unexpected = module.text_model.load_state_dict(sd, strict=False)
        if unexpected:
            raise CheckpointError(f"{ck}: text encoder weights do not match ({unexpected[:3]})")
    osd: dict[str, Any] = dict(opt.state_dict())
    new_state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            new_state.setdefault(int(pid), {})[name] = val.to(dev) if name != "step" else val
    for pid, extra in state["optimizer"]["state"].items():
        new_state.setdefault(int(pid), {}).update(extra)
    osd["state"] = new_state
    osd["param_groups"] = state["optimizer"]["param_groups"]
    opt.load_state_dict(osd)
    sd_s = sched.state_dict()
    sd_s.update(state.get("scheduler", {}))
    sched.load_state_dict(sd_s)
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(tensors, state, rank)
    return int(pos["global_step"])
