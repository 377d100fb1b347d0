"""Training shards: preprocess a :class:`~trainer.data.Dataset` once into memory-mapped arrays.

Layout of a shard store (``format: kmerl-shards/1``)::

    out/
      plan.json               what is being written (dataset, item fingerprint, shard size, preprocessing)
      shard-00000/
        signals.npy           (n, 12, 5000) float16 (or float32): z-scored 500 Hz windows, rows in the
                              canonical lead order of kmerl_edge.LEADS; absent leads are zeros
        present.npy           (n, 12) bool: which leads the window really has
        items.jsonl           one JSON object per row: record_id, report, labels, window_start_s, item
        failed.jsonl          items that could not be preprocessed, with the reason
        .complete             written last (fsynced): the shard's row count
      index.json              written after every shard is complete: the store is usable only then

Every array is written with :func:`numpy.lib.format.open_memmap` into ``shard-XXXXX.tmp-<pid>/``,
fsynced, and the directory renamed into place; an interrupted run leaves only ``.tmp`` directories,
which the next run deletes before it continues with the first shard that is not complete. Readers open
the arrays with ``mmap_mode="r"``, so 800 k × 12 × 5000 streams from disk.

Preprocessing is :func:`kmerl_edge.preprocess` (the one shared function), run in a process pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._errors import KmerlError
from kmerl_edge._leads import LEADS
from kmerl_edge._preprocess import PreprocessConfig, preprocess

from ._errors import ShardError
from .data import Dataset, EcgItem, lead_presence, load_item

__all__ = ["SHARD_FORMAT", "prepare_shards", "ShardStore", "open_shards"]

SHARD_FORMAT = "kmerl-shards/1"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a fsynced temporary file and :func:`os.replace`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _item_json(item: EcgItem) -> dict[str, Any]:
    return {
        "record_id": item.record_id,
        "path": item.path,
        "start_s": item.start_s,
        "stop_s": item.stop_s,
    }


def _process(args: tuple[EcgItem, dict[str, Any], str, bool]) -> dict[str, Any]:
    item, cfg_dict, windows, drop_bad = args
    cfg = PreprocessConfig.from_dict(cfg_dict)
    try:
        rec = load_item(item)
        pre = preprocess(rec.signal, fs=rec.fs, leads=rec.leads, config=cfg, drop_bad_leads=drop_bad)
    except KmerlError as exc:
        return {"ok": False, "record_id": item.record_id, "reason": f"{type(exc).__name__}: {exc}"}
    n = 1 if windows == "first" else pre.windows.shape[0]
    out = np.zeros((n, len(LEADS), pre.windows.shape[-1]), dtype=np.float32)
    rows = [LEADS.index(lead) for lead in pre.leads]
    out[:, rows] = pre.windows[:n]
    return {
        "ok": True,
        "windows": out,
        "present": lead_presence(pre.leads),
        "starts": list(pre.window_starts_s[:n]),
        "dropped": list(pre.quality.dropped_leads),
    }


def _fingerprint(items: Sequence[EcgItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.record_id, it.path, it.start_s, it.stop_s, it.report, list(it.labels)]).encode())
    return h.hexdigest()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, desc="prepare", unit="rec")


def prepare_shards(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    config: PreprocessConfig | None = None,
    shard_size: int = 4096,
    workers: int | None = None,
    windows: str = "first",
    dtype: str = "float16",
    drop_bad_leads: bool = True,
    progress: bool = True,
    stop_after_shards: int | None = None,
    split: dict[str, Any] | None = None,
) -> Path:
    """Preprocess ``dataset`` into a shard store at ``out_dir`` (resumable; see the module docstring).

    ``windows="first"`` stores the first 10-s window of each record, ``"all"`` every window (long
    records). ``drop_bad_leads`` marks flat / saturated leads absent. Records that fail preprocessing are
    listed in each shard's ``failed.jsonl`` and counted in ``index.json``. ``stop_after_shards`` stops
    early (for tests of resumption). ``split`` (e.g. ``{"source": "ptbxl", "split": "train", "rule": …}``)
    is recorded in the plan and index; the trainer copies it and the record ids into each checkpoint.
    Returns ``out_dir``.
    """
    if windows not in ("first", "all"):
        raise ShardError("windows must be 'first' or 'all'")
    if dtype not in ("float16", "float32"):
        raise ShardError("dtype must be float16 or float32")
    if shard_size < 1:
        raise ShardError("shard_size must be >= 1")
    cfg = config or PreprocessConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = list(dataset.items)
    plan = {
        "format": SHARD_FORMAT,
        "dataset": dataset.name,
        "n_items": len(items),
        "items_sha256": _fingerprint(items),
        "shard_size": shard_size,
        "windows": windows,
        "dtype": dtype,
        "drop_bad_leads": drop_bad_leads,
        "preprocess": cfg.to_dict(),
        "classes": list(dataset.classes),
        "skipped_by_reader": dict(dataset.skipped),
    }
    if split is not None:
        plan["split"] = dict(split)
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old != plan:
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise ShardError(f"{out} holds shards of a different plan (differs in {diff}); use a new directory")
    else:
        write_json_atomic(plan_path, plan)
    for leftover in out.glob("shard-*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    n_shards = (len(items) + shard_size - 1) // shard_size
    done = [i for i in range(n_shards) if (out / f"shard-{i:05d}" / ".complete").is_file()]
    bar = _progress(len(items), min(len(done) * shard_size, len(items)), progress)
    nproc = max(1, (os.cpu_count() or 1) if workers is None else workers)
    pool = None
    if nproc > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(nproc)
    written = 0
    try:
        for s in range(n_shards):
            final = out / f"shard-{s:05d}"
            if s in done:
                continue
            if final.exists():  # a directory without .complete cannot come from os.replace; refuse
                raise ShardError(f"{final} exists but is not complete; delete it and rerun")
            if stop_after_shards is not None and written >= stop_after_shards:
                break
            chunk = items[s * shard_size : (s + 1) * shard_size]
            args = [(it, cfg.to_dict(), windows, drop_bad_leads) for it in chunk]
            results: Iterator[dict[str, Any]] = (
                pool.imap(_process, args, chunksize=max(1, len(args) // (4 * nproc)))
                if pool is not None
                else map(_process, args)
            )
            _write_shard(out, s, chunk, results, np.dtype(dtype), bar)
            written += 1
        complete = all((out / f"shard-{i:05d}" / ".complete").is_file() for i in range(n_shards))
        if complete:
            _write_index(out, plan, n_shards)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()
    return out


def _write_shard(
    out: Path, s: int, chunk: Sequence[EcgItem], results: Iterator[dict[str, Any]], dtype: np.dtype, bar: Any
) -> None:
    tmp = out / f"shard-{s:05d}.tmp-{os.getpid()}"
    tmp.mkdir()
    wins: list[np.ndarray] = []
    present: list[np.ndarray] = []
    meta: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item, res in zip(chunk, results):
        if bar is not None:
            bar.update(1)
        if not res["ok"]:
            failed.append({"record_id": res["record_id"], "reason": res["reason"], "item": _item_json(item)})
            continue
        for k in range(res["windows"].shape[0]):
            wins.append(res["windows"][k])
            present.append(res["present"])
            meta.append(
                {
                    "record_id": item.record_id,
                    "report": item.report,
                    "labels": list(item.labels),
                    "window_start_s": res["starts"][k],
                    "dropped_leads": res["dropped"],
                    "item": _item_json(item),
                }
            )
    n = len(wins)
    t = wins[0].shape[-1] if wins else 5000
    sig = np.lib.format.open_memmap(tmp / "signals.npy", mode="w+", dtype=dtype, shape=(n, len(LEADS), t))
    for i, w in enumerate(wins):
        sig[i] = w
    sig.flush()
    del sig
    np.save(tmp / "present.npy", np.asarray(present, dtype=bool).reshape(n, len(LEADS)))
    with (tmp / "items.jsonl").open("w") as fh:
        for m in meta:
            fh.write(json.dumps(m) + "\n")
    with (tmp / "failed.jsonl").open("w") as fh:
        for f in failed:
            fh.write(json.dumps(f) + "\n")
    for name in ("signals.npy", "present.npy", "items.jsonl", "failed.jsonl"):
        _fsync_file(tmp / name)
    with (tmp / ".complete").open("w") as fh:
        json.dump({"rows": n, "items": len(chunk), "failed": len(failed)}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    os.replace(tmp, out / f"shard-{s:05d}")
    _fsync_dir(out)


def _write_index(out: Path, plan: dict[str, Any], n_shards: int) -> None:
    shards = []
    failed = 0
    for i in range(n_shards):
        c = json.loads((out / f"shard-{i:05d}" / ".complete").read_text())
        shards.append({"name": f"shard-{i:05d}", "rows": c["rows"]})
        failed += c["failed"]
    index = dict(plan)
    index.update({"shards": shards, "n_rows": sum(s["rows"] for s in shards), "n_failed": failed,
                  "leads": list(LEADS)})
    write_json_atomic(out / "index.json", index)


@dataclass
class ShardStore:
    """A complete shard store opened read-only: rows are 10-s windows in canonical lead order."""

    root: Path
    index: dict[str, Any]
    signals: list[np.ndarray]
    present: np.ndarray  # (N, 12) bool
    meta: list[dict[str, Any]]
    offsets: np.ndarray  # (n_shards + 1,) row offsets

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def record_ids(self) -> list[str]:
        return [m["record_id"] for m in self.meta]

    @property
    def reports(self) -> list[str]:
        return [m["report"] for m in self.meta]

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.index["preprocess"])

    def signal(self, i: int) -> np.ndarray:
        """(12, 5000) float32 of row ``i`` (read from the memory map)."""
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return np.asarray(self.signals[s][i - self.offsets[s]], dtype=np.float32)

    def batch(self, rows: Sequence[int]) -> np.ndarray:
        return np.stack([self.signal(int(i)) for i in rows]) if len(rows) else np.zeros((0, 12, 5000), np.float32)

    def label_matrix(self, classes: Sequence[str] | None = None) -> np.ndarray:
        cls = list(self.index.get("classes", []) if classes is None else classes)
        pos = {c: i for i, c in enumerate(cls)}
        y = np.zeros((len(self), len(cls)), dtype=np.float32)
        for r, m in enumerate(self.meta):
            for lab in m["labels"]:
                if lab in pos:
                    y[r, pos[lab]] = 1.0
        return y

    def failed(self) -> list[dict[str, Any]]:
        out = []
        for s in self.index["shards"]:
            p = self.root / s["name"] / "failed.jsonl"
            out += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        return out


def open_shards(root: str | Path) -> ShardStore:
    """Open a shard store; :class:`ShardError` unless ``index.json`` (written last) is there."""
    root = Path(root)
    ip = root / "index.json"
    if not ip.is_file():
        raise ShardError(f"{root} is not a complete shard store (no index.json; rerun `kmerl-train prepare`)")
    index = json.loads(ip.read_text())
    if index.get("format") != SHARD_FORMAT:
        raise ShardError(f"{root}: unsupported shard format {index.get('format')!r}")
    signals, present, meta = [], [], []
    offsets = [0]
    for s in index["shards"]:
        d = root / s["name"]
        if not (d / ".complete").is_file():
            raise ShardError(f"{d} is not complete")
        sig = np.load(d / "signals.npy", mmap_mode="r")
        if sig.shape[0] != s["rows"]:
            raise ShardError(f"{d}: {sig.shape[0]} rows but the index says {s['rows']}")
        signals.append(sig)
        present.append(np.load(d / "present.npy"))
        meta += [json.loads(line) for line in (d / "items.jsonl").read_text().splitlines() if line.strip()]
        offsets.append(offsets[-1] + s["rows"])
    pres = np.concatenate(present) if present else np.zeros((0, len(LEADS)), dtype=bool)
    return ShardStore(root, index, signals, pres, meta, np.asarray(offsets, dtype=np.int64))
