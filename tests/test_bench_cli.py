"""kmerl-bench end to end on the tiny test bundle (timings are recorded, never asserted)."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.cli import main
from kmerl_edge._bundle import seal_bundle

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

PNG = b"\x89PNG\r\n\x1a\n"


def test_latency_end_to_end(test_bundle_path, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main([
        "latency", "--bundle", str(test_bundle_path), "--leads", "1,2", "--backends",
        "torch,onnxruntime,onnxruntime-int8,tensorrt", "--iters", "5", "--warmup", "1",
        "--json", str(tmp_path / "lat.json"), "--out", str(out),
    ])
    assert rc == 0
    d = json.loads((tmp_path / "lat.json").read_text())
    assert d == json.loads((out / "latency.json").read_text())
    assert d["options"]["iters"] == 5 and d["bundle"]["model"] == "kmerl-test-micro"
    rows = {(r["backend"], r["n_leads"]): r for r in d["results"]}
    assert sorted(rows) == sorted((b, n) for b in ("torch", "onnxruntime", "onnxruntime-int8", "tensorrt") for n in (1, 2))
    base = {r["n_leads"]: r for r in d["baseline"]}
    for n in (1, 2):
        for b in ("torch", "onnxruntime"):
            r = rows[(b, n)]
            assert r["status"] == "ok", r
            assert r["model"]["iters"] == 5 and r["model"]["warmup"] == 1
            assert r["leads"] == ["I", "II"][:n]
            assert r["artifact_bytes"] > 0 and r["peak_rss_mb"] > 0 and r["gflop"] > 0
            st = r["model"]
            assert st["min_ms"] <= st["median_ms"] <= st["p95_ms"] <= st["p99_ms"] <= st["max_ms"]
            assert r["speedup_model"] == pytest.approx(base[n]["model"]["median_ms"] / st["median_ms"], rel=1e-2)
        for b in ("onnxruntime-int8", "tensorrt"):
            assert rows[(b, n)]["status"] == "skipped" and rows[(b, n)]["reason"]
            assert rows[(b, n)]["model"] is None and rows[(b, n)]["speedup_model"] is None
    assert rows[("torch", 1)]["artifact"] == "weights.safetensors"
    assert rows[("onnxruntime", 1)]["artifact"] == "model.onnx"
    assert rows[("torch", 2)]["gflop"] > rows[("torch", 1)]["gflop"]
    assert base[1]["gflop"] == base[2]["gflop"]  # zero-filled: the same work at any lead count
    md = (out / "latency.md").read_text()
    assert "| onnxruntime-int8 | 1 (I) | skipped: bundle" in md and "| merl-baseline | 2 (I,II) |" in md
    assert md in capsys.readouterr().out
    for name in ("latency_vs_leads.png", "latency_with_preprocessing_vs_leads.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_latency_skips_lead_counts_above_max_leads_and_isolates(test_bundle_path, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(test_bundle_path, b)
    m = json.loads((b / "manifest.json").read_text())
    m["max_leads"] = 1  # a device student sets this to 3
    (b / "manifest.json").write_text(json.dumps(m))
    seal_bundle(b)  # the manifest is sealed with the artifacts: re-seal it as its publisher
    rc = main(["latency", "--bundle", str(b), "--leads", "1,3", "--backends", "onnxruntime", "--iters", "3",
               "--warmup", "0", "--isolate", "--no-baseline", "--json", str(tmp_path / "l.json")])
    assert rc == 0
    d = json.loads((tmp_path / "l.json").read_text())
    r1, r3 = d["results"]
    assert r1["status"] == "ok" and r1["rss_scope"] == "isolated" and r1["speedup_model"] is None
    assert r3["status"] == "skipped" and r3["reason"] == "bundle serves at most 1 leads"
    assert d["baseline"] == []


def test_latency_at_a_device_rate_times_resampling_too(test_bundle_path, tmp_path):
    """``--device-fs 250``: the input is the record resampled to 250 Hz, so the timed preprocessing (in an
    isolated worker, options passed through JSON) includes 250 → 500 Hz resampling."""
    from benchmarks.latency import load_input_signal

    sig = load_input_signal(device_fs=250.0)
    assert sig.fs == 250.0 and sig.signal.shape == (12, 2500) and sig.source.endswith("resampled to 250 Hz")
    rc = main(["latency", "--bundle", str(test_bundle_path), "--leads", "1", "--backends", "onnxruntime",
               "--iters", "3", "--warmup", "0", "--isolate", "--no-baseline", "--device-fs", "250",
               "--json", str(tmp_path / "l.json")])
    assert rc == 0
    d = json.loads((tmp_path / "l.json").read_text())
    assert d["options"]["device_fs"] == 250.0 and d["input"].endswith("resampled to 250 Hz")
    (r,) = d["results"]
    assert r["status"] == "ok" and r["preprocess"]["median_ms"] > 0


def test_roofline_reuses_latency_json(tmp_path, capsys):
    lat = {"kind": "latency", "options": {"bundle": "/b"},
           "results": [{"backend": "torch", "n_leads": 1, "status": "ok", "gflop": 0.002, "model": {"median_ms": 0.5}}],
           "baseline": []}
    (tmp_path / "lat.json").write_text(json.dumps(lat))
    rc = main(["roofline", "--latency-json", str(tmp_path / "lat.json"), "--gemm-sizes", "32,64",
               "--json", str(tmp_path / "roof.json")])
    assert rc == 0
    d = json.loads((tmp_path / "roof.json").read_text())
    peak = d["gemm"]["peak_gflops"]
    assert peak == max(s["gflops"] for s in d["gemm"]["sizes"])
    assert d["configs"][0]["fraction"] == pytest.approx(0.002 / peak * 1e3 / 0.5, rel=1e-2)
    assert "| GEMM n×n×n | GFLOP/s (median) |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["latency", "--bundle", "/nonexistent/bundle"], "does not exist"),
        (["latency", "--bundle", "tests/fixtures/test_bundle", "--backends", "cuda-magic"], "unknown backend"),
    ],
)
def test_errors_are_one_line_and_nonzero(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kmerl-bench: error:") and needle in err and "\n" not in err


def test_stream_runs_the_gateway_benchmark(test_bundle_path, tmp_path, capsys):
    pytest.importorskip("benchmarks.stream_gateway")
    rc = main(["stream", "--bundle", str(test_bundle_path), "--backend", "onnxruntime", "--patches", "3,1",
               "--duration", "1", "--json", str(tmp_path / "s.json")])
    assert rc == 0
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["kind"] == "stream" and d["status"] == "ok" and d["backend"] == "onnxruntime"
    runs = d["result"]["runs"]
    assert runs[0]["patches"] == 1  # ascending, whatever the order given
    sustained = [r["patches"] for r in runs if r["real_time"]]
    assert d["result"]["max_sustained"] == (max(sustained) if sustained else 0)
    assert "| patches | windows/s | window p99 ms |" in capsys.readouterr().out


def test_accuracy_on_shared_data(shared_data, test_bundle_path, tmp_path):
    rc = main(["accuracy", "--bundle", str(test_bundle_path), "--data", str(shared_data),
               "--cpsc2021-records", "data_8_4,data_92_12", "--out", str(tmp_path)])
    assert rc == 0
    d = json.loads((tmp_path / "accuracy.json").read_text())
    tasks = {t["name"]: t for t in d["tasks"]}
    assert set(tasks) == {"ptbxl_fold10_superclass", "ptbxl_fold10_rhythm", "cpsc2021_af"}
    assert tasks["ptbxl_fold10_superclass"]["n"] == 66
    st = tasks["cpsc2021_af"]["auc"]["student (torch fp32)"]
    assert st["12"] == "n/a: data lacks leads" and isinstance(st["I+II"], float)
    assert tasks["cpsc2021_af"]["positives"]["atrial fibrillation"] > 0
    assert "teacher" in d["skipped_models"] and "int8 (onnxruntime-int8)" in d["skipped_models"]
    assert (tmp_path / "auc_vs_leads.png").read_bytes()[:8] == PNG
