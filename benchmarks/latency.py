"""Batch-1 latency per backend × lead count, with and without preprocessing, against a MERL baseline.

For every (backend, number of leads) configuration :func:`run_latency` times, after a separate warm-up:

- ``model``: ``backend.run(window (1, L, 5000), lead_ids)`` alone;
- ``preprocess``: :func:`kmerl_edge.preprocess` of a 10-s recording (quality, resampling, filtering,
  z-score) alone;
- ``end_to_end``: ``Classifier.predict`` of that recording (preprocessing + model + scores);

with median / p95 / p99 from ``time.perf_counter_ns``, the peak RSS (``getrusage``; process-wide, so a
fresh subprocess per configuration with ``isolate``), the artifact's size from the bundle manifest and the
analytic GFLOP per window. Backends that cannot load here are listed as skipped with the reason, and
lead counts above the bundle's ``max_leads`` as skipped too. The MERL-style baseline
(:mod:`benchmarks.merl_baseline`) is timed the same way and every configuration gets its speed-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._stats import LatencyStats, machine_info, peak_rss_mb, time_calls
from .flops import kmerl_flops, merl_baseline_flops

__all__ = [
    "ALL_BACKENDS",
    "DEFAULT_LEAD_COUNTS",
    "BASELINE",
    "LatencyOptions",
    "ConfigResult",
    "LatencyReport",
    "InputSignal",
    "load_input_signal",
    "leads_for_count",
    "run_latency",
    "speedup",
]

ALL_BACKENDS: tuple[str, ...] = (
    "torch",
    "onnxruntime",
    "onnxruntime-int8",
    "executorch",
    "executorch-int8",
    "tensorrt",
)
DEFAULT_LEAD_COUNTS: tuple[int, ...] = (1, 2, 3, 6, 12)
#: The backend name the baseline's rows carry.
BASELINE = "merl-baseline"
_RESULT_TAG = "KMERL_BENCH_RESULT "
_TORCH_BACKENDS = frozenset({"torch", "executorch", "executorch-int8"})
_DEFAULT_RECORD = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "records" / "00001_hr"


def leads_for_count(n: int) -> tuple[str, ...]:
    """The first ``n`` leads in the paper's order (I, II, III, aVF, aVR, aVL, V1–V6)."""
    from kmerl_edge._leads import PAPER_LEAD_ORDER

    if not 1 <= n <= len(PAPER_LEAD_ORDER):
        raise ValueError(f"number of leads must be 1–12, got {n}")
    return tuple(PAPER_LEAD_ORDER[:n])


@dataclass(frozen=True)
class InputSignal:
    """A 10-s, 12-lead recording in mV used as the benchmark input (its content does not change the
    amount of work; a real record keeps the quality checks on their usual path)."""

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    source: str

    def subset(self, leads: Sequence[str]) -> np.ndarray:
        return np.ascontiguousarray(self.signal[[self.leads.index(x) for x in leads]])


def load_input_signal(
    record: str | Path | None = None, seconds: float = 10.0, device_fs: float | None = None
) -> InputSignal:
    """The first ``seconds`` of a 12-lead record (default: PTB-XL ecg_id 1 from the test fixtures), or,
    when no record is available, a deterministic synthetic 500-Hz ECG-like signal (said in ``source``).
    ``device_fs``: resample it to a device's rate (e.g. 250 Hz), so that the timed preprocessing includes
    the resampling a patch at that rate needs."""
    sig = _load_input_signal(record, seconds)
    if device_fs is None or abs(device_fs - sig.fs) < 1e-9:
        return sig
    from kmerl_edge._preprocess import resample_signal

    x = resample_signal(sig.signal.astype(np.float64), fs_in=sig.fs, fs_out=float(device_fs)).astype(np.float32)
    return InputSignal(x, float(device_fs), sig.leads, f"{sig.source}, resampled to {device_fs:g} Hz")


def _load_input_signal(record: str | Path | None, seconds: float) -> InputSignal:
    from kmerl_edge import LEADS, read_record

    path = Path(record) if record is not None else _DEFAULT_RECORD
    if record is not None or path.with_suffix(".hea").exists():
        rec = read_record(path)
        missing = [x for x in LEADS if x not in rec.leads]
        if missing:
            raise ValueError(f"benchmark record {path} lacks leads {missing}; a 12-lead record is needed")
        n = int(round(seconds * rec.fs))
        sig = np.stack([rec.signal[rec.leads.index(x)][:n] for x in LEADS]).astype(np.float32)
        return InputSignal(sig, float(rec.fs), tuple(LEADS), f"record {path.name} ({rec.fs:g} Hz)")
    fs = 500.0
    t = np.arange(int(seconds * fs)) / fs
    rng = np.random.default_rng(0)
    beat = np.exp(-(((t % 0.8) - 0.3) ** 2) / (2 * 0.01**2))  # R-like spikes at 75 bpm
    sig = np.stack([(0.5 + 0.1 * i) * beat + 0.05 * rng.standard_normal(t.size) for i in range(12)])
    return InputSignal(sig.astype(np.float32), fs, tuple(LEADS), "synthetic ECG-like signal (500 Hz)")


@dataclass(frozen=True)
class LatencyOptions:
    bundle: Path
    lead_counts: tuple[int, ...] = DEFAULT_LEAD_COUNTS
    backends: tuple[str, ...] = ALL_BACKENDS
    threads: int = 1
    iters: int = 200
    warmup: int = 20
    isolate: bool = False
    baseline: bool = True
    record: Path | None = None
    device_fs: float | None = None  # input resampled to this rate (a patch's), None: the record's own

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "lead_counts": list(self.lead_counts),
            "backends": list(self.backends),
            "threads": self.threads,
            "iters": self.iters,
            "warmup": self.warmup,
            "isolate": self.isolate,
            "baseline": self.baseline,
            "record": None if self.record is None else str(self.record),
            "device_fs": self.device_fs,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyOptions:
        return cls(
            bundle=Path(d["bundle"]),
            lead_counts=tuple(int(x) for x in d["lead_counts"]),
            backends=tuple(d["backends"]),
            threads=int(d["threads"]),
            iters=int(d["iters"]),
            warmup=int(d["warmup"]),
            isolate=bool(d["isolate"]),
            baseline=bool(d["baseline"]),
            record=None if d.get("record") is None else Path(d["record"]),
            device_fs=None if d.get("device_fs") is None else float(d["device_fs"]),
        )


def _stats_from(d: dict[str, Any] | None) -> LatencyStats | None:
    return None if d is None else LatencyStats(**d)


@dataclass(frozen=True)
class ConfigResult:
    """One (backend, lead count) configuration: ``status`` is ``ok``, ``skipped`` or ``error``."""

    backend: str
    n_leads: int
    leads: tuple[str, ...]
    status: str
    reason: str = ""
    model: LatencyStats | None = None
    preprocess: LatencyStats | None = None
    end_to_end: LatencyStats | None = None
    gflop: float | None = None
    artifact: str | None = None
    artifact_bytes: int | None = None
    peak_rss_mb: float | None = None
    rss_scope: str = ""
    speedup_model: float | None = None
    speedup_end_to_end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "n_leads": self.n_leads,
            "leads": list(self.leads),
            "status": self.status,
            "reason": self.reason,
            "model": None if self.model is None else self.model.to_dict(),
            "preprocess": None if self.preprocess is None else self.preprocess.to_dict(),
            "end_to_end": None if self.end_to_end is None else self.end_to_end.to_dict(),
            "gflop": None if self.gflop is None else round(self.gflop, 6),
            "artifact": self.artifact,
            "artifact_bytes": self.artifact_bytes,
            "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
            "rss_scope": self.rss_scope,
            "speedup_model": None if self.speedup_model is None else round(self.speedup_model, 3),
            "speedup_end_to_end": None if self.speedup_end_to_end is None else round(self.speedup_end_to_end, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfigResult:
        return cls(
            backend=d["backend"],
            n_leads=int(d["n_leads"]),
            leads=tuple(d["leads"]),
            status=d["status"],
            reason=d.get("reason", ""),
            model=_stats_from(d.get("model")),
            preprocess=_stats_from(d.get("preprocess")),
            end_to_end=_stats_from(d.get("end_to_end")),
            gflop=d.get("gflop"),
            artifact=d.get("artifact"),
            artifact_bytes=d.get("artifact_bytes"),
            peak_rss_mb=d.get("peak_rss_mb"),
            rss_scope=d.get("rss_scope", ""),
            speedup_model=d.get("speedup_model"),
            speedup_end_to_end=d.get("speedup_end_to_end"),
        )


@dataclass
class LatencyReport:
    machine: dict[str, Any]
    options: LatencyOptions
    bundle: dict[str, Any]
    input: str
    results: list[ConfigResult] = field(default_factory=list)
    baseline: list[ConfigResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "latency",
            "machine": self.machine,
            "options": self.options.to_dict(),
            "bundle": self.bundle,
            "input": self.input,
            "baseline_model": "MERL ViT-tiny layout: Conv1d(12, 192, k=50, s=50), 100 tokens, depth 12, "
            "width 192, 3 heads, MLP 768, nn.MultiheadAttention, eager fp32, missing leads zero-filled",
            "results": [r.to_dict() for r in self.results],
            "baseline": [r.to_dict() for r in self.baseline],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyReport:
        return cls(
            machine=d["machine"],
            options=LatencyOptions.from_dict(d["options"]),
            bundle=d["bundle"],
            input=d["input"],
            results=[ConfigResult.from_dict(r) for r in d["results"]],
            baseline=[ConfigResult.from_dict(r) for r in d["baseline"]],
        )


def speedup(baseline_ms: float | None, ours_ms: float | None) -> float | None:
    """``baseline_ms / ours_ms`` (how many times faster ours is), None when either is missing or ours ≤ 0."""
    if baseline_ms is None or ours_ms is None or ours_ms <= 0:
        return None
    return baseline_ms / ours_ms


def _set_torch_threads(threads: int) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(int(threads))


# ------------------------------------------------------------------------------------------ measuring
def _measure_backend(opts: LatencyOptions, backend: str, lead_counts: Sequence[int], scope: str) -> list[ConfigResult]:
    """Load ``backend`` once and time it at every lead count (in this process)."""
    import kmerl_edge
    from kmerl_edge import BackendUnavailableError, load_bundle

    sig = load_input_signal(opts.record, device_fs=opts.device_fs)
    bundle = load_bundle(opts.bundle)
    max_leads = bundle.max_leads
    n_queries = sum(len(v) for v in bundle.label_sets.values())
    todo = [n for n in lead_counts if n <= max_leads]
    out: dict[int, ConfigResult] = {
        n: ConfigResult(backend, n, leads_for_count(n), "skipped", f"bundle serves at most {max_leads} leads")
        for n in lead_counts
        if n > max_leads
    }
    art = None
    if todo:
        if backend in _TORCH_BACKENDS or "torch" in sys.modules:  # don't import torch into an ORT-only RSS
            _set_torch_threads(opts.threads)
        try:
            clf = kmerl_edge.load(opts.bundle, backend=backend, threads=opts.threads)
        except BackendUnavailableError as exc:
            for n in todo:
                out[n] = ConfigResult(backend, n, leads_for_count(n), "skipped", str(exc))
            todo = []
        else:
            art_name = getattr(clf.backend, "artifact", None)
            art = bundle.artifacts.get(str(art_name)) if art_name else None
        for n in todo:
            leads = leads_for_count(n)
            x = sig.subset(leads)
            try:
                pre = clf.preprocess(x, fs=sig.fs, leads=leads)
                if pre.windows.shape[0] != 1 or pre.leads != leads:
                    raise RuntimeError(
                        f"benchmark input gave {pre.windows.shape[0]} windows of leads {pre.leads}; "
                        f"expected 1 window of {leads}"
                    )
                win, lids = pre.windows, pre.lead_ids
                t_model = time_calls(partial(clf.backend.run, win, lids), iters=opts.iters, warmup=opts.warmup)
                t_pre = time_calls(partial(clf.preprocess, x, fs=sig.fs, leads=leads), iters=opts.iters,
                                   warmup=opts.warmup)
                t_e2e = time_calls(partial(clf.predict, x, fs=sig.fs, leads=leads), iters=opts.iters,
                                   warmup=opts.warmup)
            except Exception as exc:  # a backend that loads but fails to run is reported, not hidden
                out[n] = ConfigResult(backend, n, leads, "error", f"{type(exc).__name__}: {exc}")
                continue
            out[n] = ConfigResult(
                backend,
                n,
                leads,
                "ok",
                model=t_model,
                preprocess=t_pre,
                end_to_end=t_e2e,
                gflop=kmerl_flops(bundle.model_config, n, n_queries).gflop,
                artifact=None if art is None else art.file,
                artifact_bytes=None if art is None else art.bytes,
                peak_rss_mb=peak_rss_mb(),
                rss_scope=scope,
            )
    return [out[n] for n in lead_counts]


def _measure_baseline(opts: LatencyOptions, lead_counts: Sequence[int], n_queries: int, scope: str) -> list[ConfigResult]:
    import torch

    from kmerl_edge import load_bundle, preprocess

    from .merl_baseline import MerlViTBaseline, zero_fill

    _set_torch_threads(opts.threads)
    sig = load_input_signal(opts.record, device_fs=opts.device_fs)
    pcfg = load_bundle(opts.bundle, verify=False).preprocess_config
    torch.manual_seed(0)
    model = MerlViTBaseline(n_queries=n_queries).eval()
    gflop = merl_baseline_flops(n_queries=n_queries).gflop
    n_params = sum(p.numel() for p in model.parameters())
    out = []
    for n in lead_counts:
        leads = leads_for_count(n)
        x = sig.subset(leads)

        def prep(x: np.ndarray = x, leads: tuple[str, ...] = leads) -> np.ndarray:
            pre = preprocess(x, fs=sig.fs, leads=leads, config=pcfg, drop_bad_leads=True)
            return zero_fill(pre.windows, pre.leads)

        def forward(w: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(w)).numpy()

        w12 = prep()
        t_model = time_calls(partial(forward, w12), iters=opts.iters, warmup=opts.warmup)
        t_pre = time_calls(prep, iters=opts.iters, warmup=opts.warmup)
        def both(prep: Any = prep) -> np.ndarray:
            return forward(prep())

        t_e2e = time_calls(both, iters=opts.iters, warmup=opts.warmup)
        out.append(
            ConfigResult(
                BASELINE,
                n,
                leads,
                "ok",
                model=t_model,
                preprocess=t_pre,
                end_to_end=t_e2e,
                gflop=gflop,
                artifact="(fp32 state dict)",
                artifact_bytes=4 * n_params,
                peak_rss_mb=peak_rss_mb(),
                rss_scope=scope,
            )
        )
    return out


def _in_subprocess(opts: LatencyOptions, task: dict[str, Any]) -> list[ConfigResult]:
    """Run one task in a fresh interpreter so its peak RSS is its own."""
    payload = json.dumps({"options": opts.to_dict(), "task": task})
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency", "--worker", payload],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_TAG):
            return [ConfigResult.from_dict(r) for r in json.loads(line[len(_RESULT_TAG) :])]
    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    name = task.get("backend", BASELINE)
    return [
        ConfigResult(name, n, leads_for_count(n), "error", f"worker exited {proc.returncode}: {err}")
        for n in task["lead_counts"]
    ]


def _run_task(opts: LatencyOptions, task: dict[str, Any], scope: str) -> list[ConfigResult]:
    counts = [int(n) for n in task["lead_counts"]]
    if task["what"] == "baseline":
        return _measure_baseline(opts, counts, int(task["n_queries"]), scope)
    return _measure_backend(opts, str(task["backend"]), counts, scope)


def _with_speedups(results: list[ConfigResult], baseline: list[ConfigResult]) -> list[ConfigResult]:
    base = {b.n_leads: b for b in baseline if b.status == "ok"}
    out = []
    for r in results:
        b = base.get(r.n_leads)
        if r.status != "ok" or b is None:
            out.append(r)
            continue
        out.append(
            replace(
                r,
                speedup_model=speedup(b.model.median_ms if b.model else None, r.model.median_ms if r.model else None),
                speedup_end_to_end=speedup(
                    b.end_to_end.median_ms if b.end_to_end else None,
                    r.end_to_end.median_ms if r.end_to_end else None,
                ),
            )
        )
    return out


def run_latency(opts: LatencyOptions) -> LatencyReport:
    """Time every (backend, lead count) of ``opts`` and the MERL baseline; see the module docstring."""
    from kmerl_edge import load_bundle

    bundle = load_bundle(opts.bundle)
    n_queries = sum(len(v) for v in bundle.label_sets.values())
    max_leads = bundle.max_leads
    info = {
        "path": str(bundle.path),
        "model": bundle.model_config.name,
        "trained": bundle.trained,
        "max_leads": max_leads,
        "n_queries": n_queries,
        "artifacts": {a.file: {"backend": a.backend, "precision": a.precision, "bytes": a.bytes}
                      for a in bundle.artifacts.values()},
    }
    results: list[ConfigResult] = []
    for backend in opts.backends:
        if opts.isolate:
            for n in opts.lead_counts:
                task: dict[str, Any] = {"what": "backend", "backend": backend, "lead_counts": [n]}
                if n > max_leads:  # no process needed to say so
                    results.extend(_run_task(opts, task, "isolated"))
                else:
                    results.extend(_in_subprocess(opts, task))
        else:
            task = {"what": "backend", "backend": backend, "lead_counts": list(opts.lead_counts)}
            results.extend(_run_task(opts, task, "process"))
    baseline: list[ConfigResult] = []
    if opts.baseline:
        task = {"what": "baseline", "lead_counts": list(opts.lead_counts), "n_queries": n_queries}
        baseline = _in_subprocess(opts, task) if opts.isolate else _run_task(opts, task, "process")
    return LatencyReport(
        machine=machine_info(opts.threads),
        options=opts,
        bundle=info,
        input=load_input_signal(opts.record, device_fs=opts.device_fs).source,
        results=_with_speedups(results, baseline),
        baseline=baseline,
    )


def _worker(payload: str) -> int:
    d = json.loads(payload)
    opts = LatencyOptions.from_dict(d["options"])
    res = _run_task(opts, d["task"], "isolated")
    print(_RESULT_TAG + json.dumps([r.to_dict() for r in res]), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        raise SystemExit(_worker(sys.argv[2]))
    raise SystemExit("usage: python -m benchmarks.latency --worker JSON (internal; use kmerl-bench latency)")
