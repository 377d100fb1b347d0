"""Parity of exported artifacts against the torch fp32 student, and latency measurement."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kmerl_edge._errors import KmerlError

from ._config import ParityConfig

__all__ = ["ParityError", "ParityResult", "sqnr_db", "top1_agreement", "check_parity", "median_latency_ms"]


class ParityError(KmerlError):
    """An exported artifact does not reproduce the torch fp32 student within the configured bounds."""


@dataclass(frozen=True)
class ParityResult:
    """Parity of one artifact at one lead count (over real windows)."""

    n_leads: int
    leads: tuple[str, ...]
    n_windows: int
    max_abs_diff: float
    sqnr_db: float
    top1_agreement: float
    ok: bool
    top1_agreement_strict: float = 1.0
    tie_tolerance: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["leads"] = list(self.leads)
        return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()}


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σref² / Σ(out−ref)²) in dB (inf when identical)."""
    noise = float(np.sum((out.astype(np.float64) - ref.astype(np.float64)) ** 2))
    sig = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(sig, 1e-30) / noise))


def top1_agreement(
    ref: np.ndarray, out: np.ndarray, groups: Sequence[slice], *, tie_tolerance: float = 0.0
) -> float:
    """Fraction of (window, label set) pairs whose top class is the same in ``ref`` and ``out``.

    With ``tie_tolerance`` > 0, ``out``'s top class also agrees when its *reference* logit is within that
    margin of the reference maximum (the reference itself could not tell the two apart).
    """
    agree, total = 0, 0
    for g in groups:
        r, o = ref[:, g], out[:, g]
        pick = o.argmax(1)
        if tie_tolerance > 0:
            ok = r[np.arange(len(r)), pick] >= r.max(1) - tie_tolerance
        else:
            ok = pick == r.argmax(1)
        agree += int(np.sum(ok))
        total += ref.shape[0]
    return agree / total if total else 1.0


def check_parity(
    ref: np.ndarray,
    out: np.ndarray,
    *,
    precision: str,
    leads: Sequence[str],
    groups: Sequence[slice],
    config: ParityConfig,
) -> ParityResult:
    """Compare logits (N, Q); fp32/fp16 need ``max_abs ≤ fp32_max_abs`` (fp16: SQNR bound only),
    int8 needs SQNR ≥ ``int8_min_sqnr_db`` and top-class agreement ≥ ``int8_min_top1_agreement``."""
    if ref.shape != out.shape:
        raise ParityError(f"output shape {out.shape} differs from the torch reference {ref.shape}")
    if not np.all(np.isfinite(out)):
        raise ParityError("artifact produced non-finite logits")
    mad = float(np.max(np.abs(out - ref))) if out.size else 0.0
    sq = sqnr_db(ref, out)
    strict = top1_agreement(ref, out, groups)
    tol = float(config.top1_tie_tolerance)
    agree = top1_agreement(ref, out, groups, tie_tolerance=tol) if tol > 0 else strict
    if precision == "fp32":
        ok = mad <= config.fp32_max_abs
    else:
        ok = sq >= config.int8_min_sqnr_db and agree >= config.int8_min_top1_agreement
    return ParityResult(len(leads), tuple(leads), int(ref.shape[0]), mad, sq, agree, bool(ok), strict, tol)


def median_latency_ms(fn: Callable[[], Any], *, iters: int = 200, warmup: int = 20) -> float:
    """Median wall time of ``fn()`` in ms over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    ts = np.empty(max(1, iters))
    for i in range(ts.size):
        t0 = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t0
    return float(np.median(ts) * 1e3)
