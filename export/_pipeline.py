"""``export_bundle``: teacher checkpoint → device bundle, in three visible steps.

1. :func:`distil` — student for 1..max_leads leads, distilled on real ECG; query vectors precomputed;
2. :func:`lower` — ONNX fp32 / int8, int8 QDQ ONNX for TensorRT, ExecuTorch fp32 / int8, each compared
   with the torch fp32 student on real windows (1, 2, 3 leads) and timed (batch 1); a failed parity
   check raises :class:`ParityError` before anything is written;
3. :func:`save` — one atomic bundle write with parity, latency and the teacher → student → int8 AUC change
   in the manifest and the model card.
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kmerl_edge._errors import ConfigError
from kmerl_edge._leads import LEADS

from ._config import ExportConfig
from ._data import EcgWindows, default_ptbxl_root, load_ptbxl_windows, load_windows_npz
from ._distill import distill_student, embed_texts, macro_auc, model_logits
from ._parity import ParityError, ParityResult, check_parity, median_latency_ms
from ._probe import ProbeData
from ._teacher import TeacherSpec, load_text_encoder, resolve_teacher

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kmerl_edge._model import KMERLModel

__all__ = ["Distilled", "Lowered", "distil", "lower", "save", "export_bundle", "resolve_data", "add_label_set"]

log = logging.getLogger("export")

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Distilled:
    """Output of step 1."""

    teacher: TeacherSpec
    student: KMERLModel
    queries: dict[str, torch.Tensor]
    teacher_queries: dict[str, torch.Tensor]
    text_spec: str
    train: EcgWindows
    eval: EcgWindows
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Lowered:
    """Output of step 2: artifact file → (path in the work dir, manifest info), plus metrics."""

    files: dict[str, tuple[Path, dict[str, Any]]]
    metrics: dict[str, Any]
    workdir: Path


# ----------------------------------------------------------------------------------------------- data


def resolve_data(data: EcgWindows | str | Path | None) -> EcgWindows:
    """``EcgWindows``, a ``.npz`` written by :func:`export._data.save_windows_npz`, a PTB-XL root, or
    None for ``../shared/data/ptbxl``."""
    if isinstance(data, EcgWindows):
        return data
    if data is not None and str(data).endswith(".npz"):
        return load_windows_npz(data)
    root = Path(data) if data is not None else default_ptbxl_root()
    if root is None:
        raise FileNotFoundError("no ECG data given and ../shared/data/ptbxl is not there; pass data=")
    return load_ptbxl_windows(root)


def _split(data: EcgWindows, fold: int) -> tuple[EcgWindows, EcgWindows]:
    ev = data.fold(fold)
    tr = data.without_fold(fold)
    if len(ev) == 0 or len(tr) == 0:  # tiny fixtures: use everything for both, say so in the metrics
        return data, data
    return tr, ev


# ------------------------------------------------------------------------------------------- step 1


def distil(
    teacher: Any,
    config: ExportConfig,
    data: EcgWindows | str | Path | None = None,
    *,
    text_encoder: Any = None,
) -> Distilled:
    """Step 1: distil ``teacher`` into ``config.student`` and precompute the deployed query vectors."""
    import torch

    from kmerl_edge._model import create_model

    spec = resolve_teacher(teacher)
    windows = resolve_data(data)
    train, ev = _split(windows, config.auc_fold)
    enc = text_encoder or spec.text_encoder
    if enc is None or isinstance(enc, str):
        enc = load_text_encoder(enc)
    if int(getattr(enc, "dim", spec.model.cfg.text_dim)) != spec.model.cfg.text_dim:
        raise ConfigError(f"text encoder dim {enc.dim} != teacher text_dim {spec.model.cfg.text_dim}")
    texts = {name: embed_texts(enc, list(classes)) for name, classes in config.label_sets.items()}
    if config.entities:
        texts["_entities"] = embed_texts(enc, list(config.entities))
    torch.manual_seed(config.seed)
    student = create_model(config.student, text_dim=spec.model.cfg.text_dim)
    same = {**student.cfg.to_dict(), "name": ""} == {**spec.model.cfg.to_dict(), "name": ""}
    if config.distill.steps == 0 and not (same and config.distill.init_from_teacher):
        raise ConfigError(
            f"no distillation steps, and the student {student.cfg.name!r} "
            + ("is not initialised from the teacher" if same else
               f"shares no architecture with the teacher {spec.model.cfg.name!r}")
            + ": nothing would train it. Export the teacher's architecture as the student, or distil (steps > 0)"
        )
    if config.distill.init_from_teacher and same:
        # same architecture: distillation fine-tunes the teacher's own weights for the device's lead
        # subsets and signal (augmentation) instead of starting from random weights
        student.load_state_dict(spec.model.state_dict())
    res = distill_student(
        spec.model, student, texts, train, max_leads=config.max_leads, config=config.distill,
        deployed=list(config.label_sets),
    )
    return Distilled(
        spec, res.student, res.queries, res.teacher_queries, str(getattr(enc, "spec", type(enc).__name__)),
        train, ev, res.history, res.seconds,
    )


# ------------------------------------------------------------------------------------------- step 2


def _ort_runner(path: Path, queries: np.ndarray) -> Runner:
    """The runtime's own ONNX Runtime backend over the artifact's bytes (what a device runs)."""
    from kmerl_edge._backends import OnnxRuntimeBackend

    return OnnxRuntimeBackend.from_bytes(path.read_bytes(), queries, 1, artifact=path.name).run


def _pte_runner(path: Path, queries: np.ndarray, *, quantized_kernels: bool = False) -> Runner:
    """The runtime's own ExecuTorch backend over the ``.pte`` bytes (what a device runs)."""
    from kmerl_edge._backend_executorch import ExecuTorchBackend

    from ._executorch import PTE_MAX_BATCH

    return ExecuTorchBackend.from_bytes(path.read_bytes(), queries, None, artifact=path.name,
                                        max_batch=PTE_MAX_BATCH, quantized_kernels=quantized_kernels).run


def _torch_runner(model: KMERLModel, queries: np.ndarray) -> Runner:
    """The runtime's own torch backend over the in-memory student (the parity reference)."""
    from kmerl_edge._backends import TorchBackend

    return TorchBackend.from_model(model, queries).run


def _bind(run: Runner, x: np.ndarray, lid: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: run(x, lid)


def _groups(label_sets: Mapping[str, tuple[str, ...]]) -> list[slice]:
    out, off = [], 0
    for classes in label_sets.values():
        out.append(slice(off, off + len(classes)))
        off += len(classes)
    return out


class _Evaluator:
    """Runs one artifact on the eval windows for each lead set: parity vs torch, latency, AUC."""

    def __init__(self, d: Distilled, config: ExportConfig) -> None:
        import torch

        self.config = config
        self.queries = torch.cat([d.queries[n] for n in config.label_sets]).numpy().astype(np.float32)
        self.groups = _groups(config.label_sets)
        n = min(len(d.eval), config.parity.max_windows) if config.parity.max_windows else len(d.eval)
        self.eval = d.eval.subset(np.arange(n))
        self.inputs = {len(ls): self.eval.select(ls) for ls in config.parity.lead_sets}
        self.lead_sets = {len(ls): ls for ls in config.parity.lead_sets}
        torch_run = _torch_runner(d.student, self.queries)
        self.ref = {k: torch_run(x, lid) for k, (x, lid) in self.inputs.items()}
        self.logits: dict[str, dict[int, np.ndarray]] = {"torch": self.ref}
        # the AUC is computed on the first label set that the eval data is labelled with
        self.auc_slice: slice | None = None
        if self.eval.labels is not None and self.eval.label_set in config.label_sets:
            names = list(config.label_sets)
            g = self.groups[names.index(self.eval.label_set)]
            if tuple(config.label_sets[self.eval.label_set]) == tuple(self.eval.classes):
                self.auc_slice = g

    def evaluate(self, name: str, run: Runner, precision: str) -> tuple[dict[str, Any], list[ParityResult]]:
        results, lat = [], {}
        self.logits[name] = {}
        for k, (x, lid) in self.inputs.items():
            out = run(x, lid)
            self.logits[name][k] = out
            results.append(
                check_parity(self.ref[k], out, precision=precision, leads=self.lead_sets[k], groups=self.groups,
                             config=self.config.parity)
            )
            lat[str(k)] = round(
                median_latency_ms(_bind(run, np.ascontiguousarray(x[:1]), lid), iters=self.config.latency_iters,
                                  warmup=self.config.latency_warmup), 4
            )
        info = {
            "latency_ms": lat,
            "parity": {str(r.n_leads): r.to_dict() for r in results},
            "parity_ok": all(r.ok for r in results),
        }
        return info, results

    def auc(self, name: str) -> dict[str, float]:
        if self.auc_slice is None or self.eval.labels is None:
            return {}
        return {
            str(k): round(macro_auc(self.eval.labels, v[:, self.auc_slice]), 4) for k, v in self.logits[name].items()
        }


def _describe_failure(name: str, precision: str, results: list[ParityResult], cfg: ExportConfig) -> str:
    bad = [r for r in results if not r.ok]
    parts = []
    for r in bad:
        if precision == "fp32":
            parts.append(f"{r.n_leads} lead(s): max |diff| {r.max_abs_diff:.2e} > {cfg.parity.fp32_max_abs:g}")
        else:
            parts.append(
                f"{r.n_leads} lead(s): SQNR {r.sqnr_db:.1f} dB (≥ {cfg.parity.int8_min_sqnr_db:g}), top-class "
                f"agreement {r.top1_agreement:.1%} (≥ {cfg.parity.int8_min_top1_agreement:.0%}"
                + (f", ties within {r.tie_tolerance:g} logit; strict {r.top1_agreement_strict:.1%})"
                   if r.tie_tolerance > 0 else "; near-ties of the reference count as disagreements: see "
                   "ParityConfig.top1_tie_tolerance / --top1-tie-tolerance)")
            )
    return f"{name} ({precision}): " + "; ".join(parts)


def lower(d: Distilled, config: ExportConfig, workdir: str | Path | None = None) -> Lowered:
    """Step 2: build every artifact in ``config.backends`` into ``workdir``, check parity, time it.

    Raises :class:`ParityError` naming every artifact and lead count that missed its bound.
    """
    import torch

    wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kmerl-export-"))
    wd.mkdir(parents=True, exist_ok=True)
    student = d.student.eval()
    ev = _Evaluator(d, config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    files: dict[str, tuple[Path, dict[str, Any]]] = {}
    failures: list[str] = []
    metrics: dict[str, Any] = {"artifacts": {}}
    rng = np.random.default_rng(config.seed)
    calib_idx = rng.permutation(len(d.train))[: config.calibration_windows]
    calib: list[tuple[np.ndarray, np.ndarray]] = []
    for j, i in enumerate(calib_idx):  # real windows, lead counts 1..max_leads, random leads
        k = 1 + j % config.max_leads
        leads = [LEADS[t] for t in sorted(rng.choice(len(LEADS), size=k, replace=False))]
        x, lid = d.train.subset([int(i)]).select(leads)
        calib.append((x, lid))

    def record(fname: str, path: Path, backend: str, precision: str, bname: str, run: Runner, kind: str = "model",
               **extra: Any) -> dict[str, Any]:
        info, results = ev.evaluate(bname, run, precision)
        info = {"backend": backend, "precision": precision, "backend_name": bname, "kind": kind,
                "max_leads": config.max_leads, **extra, **info}
        if not info["parity_ok"]:
            failures.append(_describe_failure(fname, precision, results, config))
        metrics["artifacts"][fname] = {k: v for k, v in info.items() if k not in ("kind",)} | {
            "bytes": path.stat().st_size
        }
        files[fname] = (path, info)
        log.info("%s: latency %s parity_ok %s", fname, info["latency_ms"], info["parity_ok"])
        return info

    try:
        # torch reference latency (not an artifact: weights.safetensors is written by save())
        tinfo, _ = ev.evaluate("torch", _torch_runner(student, ev.queries), "fp32")
        metrics["torch"] = {"latency_ms": tinfo["latency_ms"]}
        want_onnx = any(b.startswith("onnxruntime") for b in config.backends) or config.qdq_for_tensorrt
        if want_onnx:
            from ._onnx import export_onnx, quantize_onnx_dynamic, quantize_onnx_static

            fp32 = export_onnx(student, wd / "model.onnx", max_leads=config.max_leads)
            feeds = [{"signal": x, "lead_ids": lid, "queries": ev.queries} for x, lid in calib]
            if "onnxruntime" in config.backends:
                record("model.onnx", fp32, "onnxruntime", "fp32", "onnxruntime", _ort_runner(fp32, ev.queries))
            if "onnxruntime-int8" in config.backends:
                cands: dict[str, tuple[Path, dict[str, Any], list[ParityResult]]] = {}
                kept: dict[str, tuple[str, ...]] = {}
                modes = ["dynamic", "static"] if config.onnx_int8 == "auto" else [config.onnx_int8]
                for extra, tag, file_tag in _fp32_rounds(config):
                    for mode in modes:
                        name = mode + tag
                        keep = (() if mode == "dynamic" else tuple(config.int8_keep_fp32)) + extra
                        p = wd / f"model.int8-{mode}{file_tag}.onnx"
                        if mode == "dynamic":
                            quantize_onnx_dynamic(fp32, p, keep_fp32=keep)
                        else:
                            quantize_onnx_static(fp32, p, feeds, target="cpu", keep_fp32=keep)
                        info, res = ev.evaluate(f"onnxruntime-int8-{name}", _ort_runner(p, ev.queries), "int8")
                        cands[name] = (p, info, res)
                        kept[name] = keep
                    if any(c[1]["parity_ok"] for c in cands.values()):
                        break
                metrics["onnx_int8_candidates"] = {
                    m: {"latency_ms": c[1]["latency_ms"], "parity": c[1]["parity"], "parity_ok": c[1]["parity_ok"],
                        "bytes": c[0].stat().st_size, "kept_fp32": list(kept[m])}
                    for m, c in cands.items()
                }
                ok = [m for m, c in cands.items() if c[1]["parity_ok"]] or list(cands)
                best = min(ok, key=lambda m: float(np.median(list(cands[m][1]["latency_ms"].values()))))
                metrics["onnx_int8_choice"] = best
                dst = wd / "model.int8.onnx"
                shutil.copyfile(cands[best][0], dst)
                record("model.int8.onnx", dst, "onnxruntime", "int8", "onnxruntime-int8",
                       _ort_runner(dst, ev.queries), quantization=best, kept_fp32=list(kept[best]))
            if config.qdq_for_tensorrt:
                qdq = quantize_onnx_static(fp32, wd / "model.qdq.onnx", feeds, target="tensorrt",
                                           keep_fp32=config.int8_keep_fp32)
                # not a runtime artifact: TensorRT builds its int8 engine from it; parity measured in ORT CPU
                record("model.qdq.onnx", qdq, "tensorrt", "int8", "onnxruntime-qdq-tensorrt",
                       _ort_runner(qdq, ev.queries), kind="onnx-qdq", format="onnx-qdq",
                       note="int8 QDQ ONNX (symmetric, per-channel) for `kmerl-export tensorrt`; "
                            "latency/parity measured with ONNX Runtime CPU")
        if "executorch" in config.backends or "executorch-int8" in config.backends:
            from ._executorch import PTE_MAX_BATCH, export_pte

            if "executorch" in config.backends:
                p = export_pte(student, wd / "model.pte", max_leads=config.max_leads)
                record("model.pte", p, "executorch", "fp32", "executorch", _pte_runner(p, ev.queries),
                       max_batch=PTE_MAX_BATCH)
            if "executorch-int8" in config.backends:
                cal = [(x, lid, ev.queries) for x, lid in calib]
                modes = ["static", "dynamic"] if config.executorch_int8 == "auto" else [config.executorch_int8]
                tried: dict[str, Any] = {}
                chosen = ""
                for extra, tag, file_tag in _fp32_rounds(config):
                    keep = tuple(config.int8_keep_fp32) + extra
                    for mode in modes:
                        name = mode + tag
                        p = export_pte(student, wd / f"model.int8-{mode}{file_tag}.pte",
                                       max_leads=config.max_leads, quantize=mode, calibration=cal, keep_fp32=keep)
                        info, _ = ev.evaluate(f"executorch-int8-{name}",
                                              _pte_runner(p, ev.queries, quantized_kernels=mode == "dynamic"), "int8")
                        tried[name] = {"latency_ms": info["latency_ms"], "parity": info["parity"],
                                       "parity_ok": info["parity_ok"], "bytes": p.stat().st_size,
                                       "kept_fp32": list(keep), "file": p.name, "mode": mode}
                        chosen = name
                        if info["parity_ok"]:  # static is faster; dynamic only when static fails parity
                            break
                    if tried[chosen]["parity_ok"]:
                        break
                metrics["executorch_int8_candidates"] = tried
                metrics["executorch_int8_choice"] = chosen
                dst = wd / "model.int8.pte"
                shutil.copyfile(wd / tried[chosen]["file"], dst)
                record("model.int8.pte", dst, "executorch", "int8", "executorch-int8",
                       _pte_runner(dst, ev.queries, quantized_kernels=tried[chosen]["mode"] == "dynamic"),
                       max_batch=PTE_MAX_BATCH, quantization=chosen, kept_fp32=tried[chosen]["kept_fp32"],
                       needs_quantized_kernels=tried[chosen]["mode"] == "dynamic")
    finally:
        torch.set_num_threads(threads)
    if failures:
        raise ParityError("export failed its parity checks against the torch fp32 student:\n  " + "\n  ".join(failures))
    metrics["auc"] = _auc_metrics(d, config, ev)
    metrics["quality_gate"] = quality_gate(ev, metrics["auc"])
    metrics["parity_windows"] = {"n": len(ev.eval), "source": ev.eval.source,
                                 "lead_sets": {str(k): list(v) for k, v in ev.lead_sets.items()}}
    return Lowered(files, metrics, wd)


#: a model passes the quality gate when, on every measured lead set, the held-out macro AUC's bootstrap
#: 95 % interval lies above this (chance is 0.5)
QUALITY_GATE_MIN_LOWER = 0.55


def _bootstrap_lower(labels: np.ndarray, scores: np.ndarray, n_boot: int = 500, seed: int = 0) -> float:
    """2.5th percentile of the bootstrap distribution of the macro AUC (rows resampled)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(labels), len(labels))
        v = macro_auc(labels[i], scores[i])
        if np.isfinite(v):
            vals.append(v)
    return float(np.quantile(vals, 0.025)) if vals else float("nan")


def quality_gate(ev: _Evaluator, auc: Mapping[str, Any]) -> dict[str, Any]:
    """Is the student's held-out AUC clearly above chance? ``passed`` is False when the lower end of the
    bootstrap 95 % interval of any lead set is at or below :data:`QUALITY_GATE_MIN_LOWER`; ``None`` when
    there is no held-out labelled fold to judge it on. The manifest, the model card and every ``predict``
    result say so when it fails."""
    if not auc.get("meaningful") or ev.auc_slice is None or ev.eval.labels is None:
        return {"passed": None, "reason": "no held-out labelled evaluation (or an untrained teacher)"}
    lower = {str(k): round(_bootstrap_lower(ev.eval.labels, v[:, ev.auc_slice]), 4)
             for k, v in ev.logits["torch"].items()}
    bad = {k: v for k, v in lower.items() if not v > QUALITY_GATE_MIN_LOWER}
    return {
        "passed": not bad,
        "criterion": f"bootstrap 95 % lower bound of the held-out macro AUC > {QUALITY_GATE_MIN_LOWER} on every lead set",
        "lower_bound_by_leads": lower,
        "label_set": auc.get("label_set"),
        "n_windows": auc.get("n_windows"),
        **({"reason": f"held-out AUC not clearly above chance with {', '.join(sorted(bad))} lead(s)"} if bad else {}),
    }


def _auc_metrics(d: Distilled, config: ExportConfig, ev: _Evaluator) -> dict[str, Any]:
    if not config.eval_auc or ev.auc_slice is None or ev.eval.labels is None:
        return {"note": "not measured (evaluation windows carry no labels of a deployed label set)"}

    name = ev.eval.label_set
    tq = d.teacher_queries[name]
    teacher_auc: dict[str, float] = {}
    x12, lid12 = ev.eval.select(LEADS)
    teacher_auc["12"] = round(macro_auc(ev.eval.labels, model_logits(d.teacher.model, x12, lid12, tq)), 4)
    for k, (x, lid) in ev.inputs.items():
        teacher_auc[str(k)] = round(macro_auc(ev.eval.labels, model_logits(d.teacher.model, x, lid, tq)), 4)
    out: dict[str, Any] = {
        "label_set": name,
        "data": ev.eval.source,
        "fold": None if d.eval is d.train else config.auc_fold,
        "n_windows": len(ev.eval),
        "lead_sets": {str(k): list(v) for k, v in ev.lead_sets.items()},
        "teacher": teacher_auc,
        "student": ev.auc("torch"),
    }
    for art in ev.logits:
        if art != "torch" and "int8" in art and not art.endswith(("-dynamic", "-static")):
            out[art] = ev.auc(art)
    changes: dict[str, dict[str, float]] = {}
    for art in [a for a in out if a not in ("label_set", "data", "fold", "n_windows", "lead_sets", "teacher")]:
        changes[f"{art}_vs_teacher"] = {
            k: round(100 * (v - teacher_auc[k]), 2) for k, v in out[art].items() if k in teacher_auc
        }
    out["change_points"] = changes
    out["meaningful"] = bool(d.teacher.trained) and d.eval is not d.train
    if not d.teacher.trained:
        out["note"] = "teacher is not trained: these AUCs and their changes are not meaningful"
    elif d.eval is d.train:
        out["note"] = "no held-out fold in the data: AUC measured on the distillation windows"
    return out


# ------------------------------------------------------------------------------------------- step 3


def _summary_table(metrics: Mapping[str, Any]) -> str:
    rows = ["| artifact | leads | median ms (batch 1) | bytes | parity |", "| --- | --- | --- | --- | --- |"]
    for k, v in metrics.get("torch", {}).get("latency_ms", {}).items():
        rows.append(f"| torch fp32 (eager) | {k} | {v:.3f} | – | reference |")
    for name, a in metrics.get("artifacts", {}).items():
        for k, v in a["latency_ms"].items():
            p = a["parity"][k]
            par = (f"max abs {p['max_abs_diff']:.1e}" if a["precision"] == "fp32"
                   else f"SQNR {p['sqnr_db']:.1f} dB, top-1 {p['top1_agreement']:.1%}"
                   + (f" (strict {p['top1_agreement_strict']:.1%}, ties ≤ {p['tie_tolerance']:g})"
                      if p.get("tie_tolerance") else ""))
            rows.append(f"| {name} ({a['precision']}) | {k} | {v:.3f} | {a['bytes']} | {par} |")
    return "\n".join(rows)


def save(d: Distilled, lowered: Lowered, out_dir: str | Path, config: ExportConfig, *, overwrite: bool = False,
         signing_key: Any = None) -> Path:
    """Step 3: write the bundle atomically (weights, queries, artifacts, metrics, model card) and seal it
    (``SEAL.json``: every file's SHA-256; signed with the Ed25519 ``signing_key`` if given)."""
    import torch

    from kmerl_edge import PreprocessConfig
    from kmerl_edge._bundle import write_bundle

    versions: dict[str, str] = {"torch": torch.__version__, "python": platform.python_version()}
    for mod in ("onnx", "onnxruntime", "executorch"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            pass
    state = {k: v for k, v in d.student.state_dict().items() if not k.startswith(("ecg_proj.", "text_proj."))}
    metrics = dict(lowered.metrics)
    metrics["distillation"] = {"seconds": round(d.seconds, 1), "steps": config.distill.steps,
                               "final": d.history[-1] if d.history else {}, "train_windows": len(d.train)}
    auc = metrics.get("auc", {})
    desc = config.description or (
        f"K-MERL Edge device student `{config.student}` for 1–{config.max_leads} leads (any of the 12), distilled "
        f"from teacher `{d.teacher.model.cfg.name}`."
    )
    desc += "\n\n## Export summary (this machine)\n\n" + _summary_table(metrics)
    if auc.get("change_points"):
        desc += "\n\nAUC change vs teacher (points, " + str(auc.get("label_set")) + "): " + str(auc["change_points"])
        if not auc.get("meaningful"):
            desc += " — **not meaningful: the teacher is not trained.**"
    extra = {name: (path, info) for name, (path, info) in lowered.files.items()}
    provenance = {
        "source": "kmerl-export",
        "teacher": {"model": d.teacher.model.cfg.name, **{k: v for k, v in d.teacher.meta.items() if k != "model"}},
        "teacher_trained": d.teacher.trained,
        "text_encoder": d.text_spec,
        # what `kmerl-export queries` loads to embed new class names (same encoder and pooling)
        "text_encoder_spec": d.text_spec,
        "data": {"train": d.train.source, "eval": d.eval.source, "licence": "PTB-XL: CC BY 4.0 (Wagner et al., 2020)"},
        "export_config": config.to_dict(),
        "versions": versions,
        "latency_note": "median of batch-1 runs, 1 thread, on the export machine (shared; see metrics)",
    }
    return write_bundle(
        out_dir,
        weights=state,
        model_config=d.student.cfg,
        preprocess_config=PreprocessConfig(),
        label_sets=config.label_sets,
        queries={k: v for k, v in d.queries.items()},
        trained=d.teacher.trained,
        provenance=_jsonable(provenance),
        metrics=_jsonable(metrics),
        extra_files=extra,
        description=desc,
        overwrite=overwrite,
        max_leads=config.max_leads,
        signing_key=signing_key,
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if np.isfinite(f) else str(f)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _fp32_rounds(config: ExportConfig) -> list[tuple[tuple[str, ...], str, str]]:
    """Rounds of int8 candidates: (extra fp32 module scopes, candidate-name suffix, file-name suffix) —
    none first, then ``int8_fallback_fp32``."""
    rounds: list[tuple[tuple[str, ...], str, str]] = [((), "", "")]
    if config.int8_fallback_fp32:
        extra = tuple(config.int8_fallback_fp32)
        rounds.append((extra, "+fp32:" + ",".join(extra), "-fallback"))
    return rounds


def export_bundle(
    teacher: Any,
    out_dir: str | Path,
    config: ExportConfig | None = None,
    *,
    data: EcgWindows | str | Path | None = None,
    text_encoder: Any = None,
    overwrite: bool = False,
    signing_key: Any = None,
    superclass_probe: ProbeData | None = None,
) -> Path:
    """Teacher (checkpoint path, trainer ``Teacher`` or ``KMERLModel``) → device bundle at ``out_dir``.

    distil → lower → save; nothing is written to ``out_dir`` unless every parity check passes. The bundle
    is sealed, and signed with ``signing_key`` (Ed25519 private key: PEM path, PEM bytes or key object).
    ``superclass_probe``: training windows and labels for the optional linear superclass head
    (:mod:`export._probe`), fitted on the distilled student before lowering, so every artifact and parity
    check covers it.
    """
    cfg = config or ExportConfig()
    d = distil(teacher, cfg, data, text_encoder=text_encoder)
    probe_meta = None
    if superclass_probe is not None:
        d, probe_meta = _with_probe(d, superclass_probe)
    with tempfile.TemporaryDirectory(prefix="kmerl-export-") as td:
        low = lower(d, cfg, td)
        if probe_meta is not None:
            low.metrics["superclass_probe"] = probe_meta
        return save(d, low, out_dir, cfg, overwrite=overwrite, signing_key=signing_key)


def _with_probe(d: Distilled, data: ProbeData) -> tuple[Distilled, dict[str, Any]]:
    """Fit the linear superclass head on the distilled student's frozen encoder and put it in the student
    (:mod:`export._probe`)."""
    from dataclasses import replace as dc_replace

    from ._probe import attach_probe, fit_probe

    ls = data.config.label_set
    if ls not in d.queries:
        raise ConfigError(f"superclass head: label set {ls!r} is not deployed (deployed: {sorted(d.queries)})")
    head = fit_probe(d.student, data.windows, data.labels, data.classes, data.config, data.record_ids)
    student = attach_probe(d.student, head, d.queries[ls].detach().cpu().numpy(), data.config.mode)
    meta = {"label_set": ls, "classes": list(head.classes), "mode": data.config.mode,
            "protocol": "supervised linear head on the mean-pooled encoder tokens (linear-probe protocol); "
                        "the label set's rows only, every other row is the query network's", **head.meta}
    return dc_replace(d, student=student), meta


def add_label_set(
    bundle_dir: str | Path,
    name: str,
    classes: list[str],
    *,
    text_encoder: Any = None,
    signing_key: Any = None,
) -> Path:
    """Embed ``classes`` with the text encoder, project them with the bundle's ``query_proj`` and add the
    label set ``name`` to the bundle (the device graph takes queries as an input: no re-export needed)."""
    from kmerl_edge._bundle import load_bundle, update_label_sets

    b = load_bundle(bundle_dir)
    if not classes:
        raise ConfigError("no class names given")
    if text_encoder is None or isinstance(text_encoder, str):
        spec = text_encoder or (b.spec.text_encoder_spec if b.spec is not None else None)
        if spec and Path(str(spec)).is_absolute() and not Path(str(spec)).exists():
            raise FileNotFoundError(
                f"the bundle's queries were made with text encoder {spec}, which is not on this machine; "
                "pass the same encoder (--text-encoder DIR): another encoder would give wrong queries"
            )
        text_encoder = load_text_encoder(str(spec) if spec and Path(str(spec)).exists() else None)
    enc = text_encoder
    w = b.weights()
    emb = embed_texts(enc, classes).numpy().astype(np.float32)
    if emb.shape[1] != w["query_proj.weight"].shape[1]:
        raise ConfigError(f"text encoder dim {emb.shape[1]} != bundle text_dim {w['query_proj.weight'].shape[1]}")
    q = emb @ w["query_proj.weight"].T + w["query_proj.bias"]
    update_label_sets(b.path, {name: (classes, q.astype(np.float32))}, signing_key=signing_key)
    return b.path
