"""kmerl-bench: JSON / markdown format, skipped-backend reporting, AF window labels and macro AUC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks._stats import LatencyStats
from benchmarks.accuracy import af_episodes, af_window_labels, macro_auc
from benchmarks.latency import ConfigResult, LatencyOptions, LatencyReport
from benchmarks.report import accuracy_markdown, fmt_bytes, fmt_ms, latency_markdown, write_json


def _st(ms: float) -> LatencyStats:
    return LatencyStats(iters=200, warmup=20, median_ms=ms, p95_ms=ms * 1.5, p99_ms=ms * 2, mean_ms=ms,
                        min_ms=ms / 2, max_ms=ms * 3)


def _report() -> LatencyReport:
    ok = ConfigResult("onnxruntime-int8", 1, ("I",), "ok", model=_st(0.25), preprocess=_st(0.8),
                      end_to_end=_st(1.2), gflop=0.0123, artifact="model.int8.onnx", artifact_bytes=345_678,
                      peak_rss_mb=120.4, rss_scope="isolated", speedup_model=33.2, speedup_end_to_end=7.5)
    skipped = ConfigResult("tensorrt", 1, ("I",), "skipped", "tensorrt is not installed")
    too_many = ConfigResult("onnxruntime-int8", 12, tuple("I II III aVF aVR aVL V1 V2 V3 V4 V5 V6".split()),
                            "skipped", "bundle serves at most 3 leads")
    base = ConfigResult("merl-baseline", 1, ("I",), "ok", model=_st(8.3), preprocess=_st(0.8), end_to_end=_st(9.0),
                        gflop=1.177, artifact="(fp32 state dict)", artifact_bytes=22_091_008, peak_rss_mb=400.0,
                        rss_scope="isolated")
    opts = LatencyOptions(bundle=__import__("pathlib").Path("/b"), lead_counts=(1, 12), iters=200, warmup=20, isolate=True)
    machine = {"cpu": "Test CPU", "cores": 2, "cores_usable": 2, "threads": 1,
               "versions": {"torch": "2.13.0", "onnxruntime": "1.31.1"}, "date": "2026-01-01T00:00:00+00:00"}
    bundle = {"model": "kmerl-student-s", "trained": True, "max_leads": 3, "n_queries": 11, "path": "/b", "artifacts": {}}
    return LatencyReport(machine, opts, bundle, "record 00001_hr (500 Hz)", [ok, skipped, too_many], [base])


def test_latency_report_round_trips_through_json(tmp_path):
    rep = _report()
    p = write_json(rep.to_dict(), tmp_path / "sub" / "latency.json")
    d = json.loads(p.read_text())
    assert d["kind"] == "latency" and d["machine"]["cpu"] == "Test CPU"
    assert d["results"][1] == {**d["results"][1], "status": "skipped", "reason": "tensorrt is not installed", "model": None}
    assert d["results"][0]["model"]["p99_ms"] == 0.5 and d["results"][0]["speedup_model"] == 33.2
    back = LatencyReport.from_dict(d)
    assert back.to_dict() == rep.to_dict()


def test_latency_markdown_lists_every_configuration_and_skip_reason():
    md = latency_markdown(_report().to_dict())
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| backend |"))
    assert lines[header + 1].count("---") == 9
    rows = lines[header + 2 : header + 6]
    assert rows[0] == (
        "| onnxruntime-int8 | 1 (I) | 0.250 / 0.375 / 0.500 | 1.20 / 2.40 | 0.800 | 0.0123 | "
        "model.int8.onnx (345.7 kB) | 120 | 33.2× / 7.5× |"
    )
    assert rows[1].startswith("| tensorrt | 1 (I) | skipped: tensorrt is not installed |")
    assert rows[2].startswith("| onnxruntime-int8 | 12 | skipped: bundle serves at most 3 leads |")
    assert rows[3].startswith("| merl-baseline | 1 (I) | 8.30 / 12.4 / 16.6 |") and rows[3].endswith("| baseline |")
    assert all(r.count("|") == 10 for r in rows)
    assert "Test CPU, 2 cores" in md and "torch 2.13.0" in md
    assert "**33.2×** (onnxruntime-int8; goal ≥ 25× with the default int8 student: met)" in md


def test_write_json_writes_nan_as_null(tmp_path):
    p = write_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}}, tmp_path / "x.json")
    assert json.loads(p.read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2}}


def test_formatters():
    assert [fmt_ms(v) for v in (None, 0.01234, 1.234, 12.34, 123.4)] == ["—", "0.012", "1.23", "12.3", "123"]
    assert [fmt_bytes(v) for v in (None, 999, 1500, 2_500_000)] == ["—", "999 B", "1.5 kB", "2.5 MB"]


def test_af_episodes_from_rhythm_marks():
    # '(AFIB' opens, the next rhythm mark closes; beat notes ('', 'None') are ignored; an open episode ends
    # at the end of the record.
    eps = af_episodes([0, 30, 100, 400, 500, 900], ["(N", "None", "(AFIB", "", "(N", "(AFIB"], 1000)
    assert eps == [(100, 500), (900, 1000)]
    assert af_episodes([0, 30], ["(AFIB", "None"], 50) == [(0, 50)]
    assert af_episodes([], [], 10) == []


def test_af_window_labels_majority_inside():
    y = af_window_labels(4, 100, [(50, 160), (390, 400)])
    # window 0: 50 % inside (not more than half) → 0; window 1: 60 % → 1; windows 2, 3: 0 and 10 %
    assert y.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_macro_auc_skips_classes_without_both_labels():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], float)
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.4], [0.4, 0.2, 0.3], [0.5, 0.1, 0.2]])
    auc, per = macro_auc(y, s)
    assert per[1] is None and per[2] is None
    assert per[0] == pytest.approx(0.75) and auc == pytest.approx(0.75)
    assert macro_auc(y[:, 1:], s[:, 1:])[0] is None


def test_accuracy_markdown_format():
    rep = {
        "machine": {"cpu": "Test CPU", "cores": 2, "cores_usable": 2, "threads": 1, "versions": {}, "date": "d"},
        "bundle": "/b",
        "skipped_models": {"teacher": "no teacher checkpoint given (--teacher PATH)"},
        "tasks": [{"name": "cpsc2021_af", "n": 10, "classes_scored": ["atrial fibrillation"],
                   "subsets": {"1": ["I"], "12": ["I"] * 12},
                   "auc": {"student (torch fp32)": {"1": 0.8123, "12": "n/a: data lacks leads"}}}],
    }
    md = accuracy_markdown(rep)
    assert "- teacher: skipped — no teacher checkpoint given (--teacher PATH)" in md
    assert "| model | 1 | 12 |" in md
    assert "| student (torch fp32) | 0.812 | n/a: data lacks leads |" in md
