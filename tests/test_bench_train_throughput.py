"""``kmerl-bench train-throughput``: a tiled shard store lists K × the rows and the real trainer (torchrun)
trains on it; the wall-clock rate comes from metrics.csv intervals that stay within one epoch."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.train_throughput import (
    MetricRow,
    ThroughputError,
    read_metrics,
    run_trainer,
    throughput_from_metrics,
    tile_shards,
)
from trainer.data import Dataset, EcgItem
from trainer.shards import open_shards, prepare_shards

RECORDS = Path(__file__).resolve().parent / "fixtures" / "records"

# steps_per_epoch = 100 // 10 = 10; logged every 5 steps, so (10, 15], (20, 25], (30, 35] start an epoch
METRICS = """step,epoch,loss,clip_loss,bce_loss,lr,samples_per_s,time_s
5,0,1.0,1.0,0.0,1e-4,9999.0,1.00
10,0,1.0,1.0,0.0,1e-4,9999.0,1.50
15,1,1.0,1.0,0.0,1e-4,9999.0,4.00
20,1,1.0,1.0,0.0,1e-4,9999.0,4.50
25,2,1.0,1.0,0.0,1e-4,9999.0,7.00
30,2,1.0,1.0,0.0,1e-4,9999.0,8.00
35,3,1.0,1.0,0.0,1e-4,9999.0,10.00
40,3,1.0,1.0,0.0,1e-4,9999.0,10.125
"""


def test_interval_rates_leave_out_epoch_starts(tmp_path: Path) -> None:
    p = tmp_path / "metrics.csv"
    p.write_text(METRICS)
    tp = throughput_from_metrics(read_metrics(p), global_batch=10, store_rows=100)
    assert tp["steps_per_epoch"] == 10
    crossing = [(iv["from_step"], iv["to_step"]) for iv in tp["intervals"] if iv["crosses_epoch"]]
    assert crossing == [(10, 15), (20, 25), (30, 35)]
    # in-epoch rates 100, 100, 50, 400 samples/s: the median, not the mean (162.5), nor the samples_per_s column
    assert tp["in_epoch"]["intervals"] == 4
    assert tp["in_epoch"]["median_samples_per_s"] == pytest.approx(100.0)
    assert tp["in_epoch"]["pooled_samples_per_s"] == pytest.approx(200 / 2.125, abs=0.1)
    assert tp["all_intervals_samples_per_s"] == pytest.approx(350 / 9.125, abs=0.1)
    # an epoch start costs its interval's time minus 5 steps × 10 samples at 100 samples/s
    assert tp["epoch_restart_extra_s"] == [2.0, 2.0, 1.5]
    hours = (771_693 * 50 / 100.0 + 50 * 2.0) / 3600
    assert tp["paper_50_epochs"]["hours"] == pytest.approx(hours, abs=0.01)


def test_a_batch_or_row_count_that_is_not_the_runs_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "metrics.csv"
    p.write_text(METRICS)
    rows = read_metrics(p)
    with pytest.raises(ThroughputError, match="epoch"):
        throughput_from_metrics(rows, global_batch=10, store_rows=200)  # 20 steps per epoch: step 15 in epoch 0
    with pytest.raises(ThroughputError, match="cannot fill"):
        throughput_from_metrics(rows, global_batch=512, store_rows=100)
    only_boundaries = [MetricRow(10, None, 1.0), MetricRow(15, None, 2.0)]
    with pytest.raises(ThroughputError, match="within one epoch"):
        throughput_from_metrics(only_boundaries, global_batch=10, store_rows=100)
    (tmp_path / "bad.csv").write_text("step,loss\n1,2.0\n")
    with pytest.raises(ThroughputError, match="time_s"):
        read_metrics(tmp_path / "bad.csv")


def test_unresolved_intervals_are_counted_not_used() -> None:
    rows = [MetricRow(1, 0, 1.0), MetricRow(2, 0, 1.0), MetricRow(3, 0, 1.5)]
    tp = throughput_from_metrics(rows, global_batch=10, store_rows=100)
    assert tp["unresolved_intervals"] == 1
    assert tp["in_epoch"]["intervals"] == 1 and tp["in_epoch"]["median_samples_per_s"] == pytest.approx(20.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real PTB-XL records (the committed fixtures), with a text cache of fixed random embeddings
    under the trainer's cache name (so no text encoder loads; were the name to change, the trainer would
    embed the reports itself and the test would only take longer)."""
    items = [EcgItem(f"ptbxl_{n}", str(RECORDS / f"{n}_hr"), report=rep, labels=lab)
             for n, rep, lab in (("00001", "sinus rhythm. normal ecg.", ("NORM",)),
                                 ("00008", "sinus rhythm. inferior infarction.", ("MI",)),
                                 ("00017", "sinus rhythm. normal ecg.", ("NORM",)))]
    root = prepare_shards(Dataset("fixtures", items, classes=("NORM", "MI")), tmp_path_factory.mktemp("s") / "src",
                          workers=1, progress=False)
    import torch
    from safetensors.torch import save_file

    from trainer.text import default_text_encoder_spec

    spec = default_text_encoder_spec()
    uniq = sorted({it.report for it in items})
    ents = ["MI", "NORM"]
    h = hashlib.sha256(json.dumps([spec, 128, uniq, ents]).encode()).hexdigest()[:20]
    g = torch.Generator().manual_seed(0)
    save_file({"reports": torch.randn(len(uniq), 384, generator=g), "entities": torch.randn(len(ents), 384, generator=g)},
              str(root / f"text-cache-{h}.safetensors"), metadata={"spec": spec, "pooling": "mean", "dim": "384"})
    return root


def test_a_tiled_store_lists_k_times_the_rows_and_the_trainer_runs_on_it(store: Path, tmp_path: Path) -> None:
    tiled = tile_shards(store, tmp_path / "tiled", 4)
    src, t = open_shards(store), open_shards(tiled)
    assert len(src) == 3 and len(t) == 12
    assert t.record_ids == src.record_ids * 4
    np.testing.assert_array_equal(t.batch(list(range(12))), np.concatenate([src.batch([0, 1, 2])] * 4))
    assert t.index["tiled"] == {"source": str(store.resolve()), "k": 4, "rows_per_copy": 3}
    assert sorted(p.name for p in tiled.glob("text-cache-*")) == sorted(p.name for p in store.glob("text-cache-*"))
    assert not list(tiled.glob(".*tmp*"))
    with pytest.raises(ThroughputError, match="tiled store"):
        tile_shards(tiled, tmp_path / "again", 2)

    # the trainer itself: 12 rows at batch 4 are 3 steps per epoch; 7 steps run into a third epoch, and the
    # epochs it logs are the ones the interval parser derives from the row count
    import torch

    from trainer._config import get_preset
    from trainer.train import train

    cfg = get_preset("test", max_steps=7, epochs=100, batch_size=4, log_every=1, ckpt_every=100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine two threads make each step 100x slower
    try:
        res = train(cfg, data=tiled, out_dir=tmp_path / "run", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert res.steps == 7 and [m.step for m in rows] == list(range(1, 8))
    assert [m.epoch for m in rows] == [0, 0, 0, 1, 1, 1, 2]
    # the trainer's steps and epochs, with one second per step: time_s (10 ms resolution) cannot time its ~10 ms steps
    tp = throughput_from_metrics([MetricRow(m.step, m.epoch, float(m.step)) for m in rows], global_batch=4,
                                 store_rows=12)
    assert tp["steps_per_epoch"] == 3
    assert [(iv["from_step"], iv["to_step"]) for iv in tp["intervals"] if iv["crosses_epoch"]] == [(3, 4), (6, 7)]


@pytest.mark.slow
def test_run_trainer_trains_under_torchrun(store: Path, tmp_path: Path) -> None:
    tiled = tile_shards(store, tmp_path / "tiled", 4)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = run_trainer(tiled, tmp_path / "run", preset="test", device="cpu", steps=7, log_every=1, timeout_s=300,
                    sets=["epochs=100"], env=env)
    assert r["command"][:4] == ["torchrun", "--standalone", "--nproc-per-node", "1"]
    assert r["trainer_summary"]["steps"] == 7
    rows = read_metrics(r["metrics"])
    assert [m.epoch for m in rows] == [0, 0, 0, 1, 1, 1, 2]
    with pytest.raises(ThroughputError, match="new folder"):
        run_trainer(tiled, tmp_path / "run", preset="test", device="cpu", steps=1)
    with pytest.raises(ThroughputError, match="failed"):
        run_trainer(tiled, tmp_path / "bad", preset="no-such-preset", device="cpu", steps=1, timeout_s=300, env=env)


def test_report_only_reads_a_runs_manifest(tmp_path: Path) -> None:
    from benchmarks.cli import main

    (tmp_path / "m.csv").write_text(METRICS)
    (tmp_path / "ceiling.txt").write_text(
        "compute ceiling B=512 host_masks=False: 59.3 ms/step, 8640 samples/s\n"
        "compute ceiling B=512 host_masks=True: 90.6 ms/step, 5653 samples/s\n"
        "host mask sampling alone: 40.4 ms/batch\npeak GPU memory GiB 8.183802604675293\n")
    (tmp_path / "smi.csv").write_text(
        "timestamp, utilization.gpu [%], memory.used [MiB]\n2026/11/30 17:34:44.524, 0 %, 0 MiB\n"
        "2026/11/30 17:34:45.528, 60 %, 9957 MiB\n2026/11/30 17:34:46.528, 50 %, 9957 MiB\n"
        "2026/11/30 17:34:47.528, 0 %, 4 MiB\n")
    manifest = {"machine": "a test", "runs": [{"name": "r", "metrics": "m.csv", "global_batch": 10,
                                               "store_rows": 100, "workers": 4, "k": 1},
                                              {"name": "small", "metrics": "m.csv", "global_batch": 10,
                                               "store_rows": 100, "preset": "cpu-small", "group": "g"}],
                "compute_ceiling": [{"report": "ceiling.txt"}], "smi": ["smi.csv"]}
    (tmp_path / "runs.json").write_text(json.dumps(manifest))
    assert main(["train-throughput", "--runs", str(tmp_path / "runs.json")]) == 0
    rep = json.loads((tmp_path / "train_throughput.json").read_text())
    assert rep["runs"][0]["throughput"]["in_epoch"]["median_samples_per_s"] == 100.0
    assert "paper_50_epochs" in rep["runs"][0]["throughput"]  # the paper preset (the default)
    assert "paper_50_epochs" not in rep["runs"][1]["throughput"]  # another model: no time for the paper's corpus
    assert rep["groups"]["g"]["runs"] == ["small"] and rep["groups"]["g"]["median_in_epoch_samples_per_s"] == 100.0
    c = rep["compute_ceiling"][0]
    assert (c["batch"], c["fixed_masks"]["samples_per_s"], c["host_masks"]["ms_per_step"]) == (512, 8640.0, 90.6)
    assert (c["host_mask_sampling_ms_per_batch"], c["peak_gpu_memory_gib"]) == (40.4, 8.18)
    assert rep["nvidia_smi"]["smi.csv"] == {"samples": 4, "peak_memory_mib": 9957.0, "busy_samples": 2,
                                            "busy_median_utilization_pct": 55.0}
    assert "| r |" in (tmp_path / "train_throughput.md").read_text()
    assert main(["train-throughput"]) == 2  # neither --data nor --runs


def test_compute_ceiling_times_the_step_with_fixed_and_host_sampled_masks() -> None:
    import torch

    from benchmarks.train_throughput import compute_ceiling

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        c = compute_ceiling("cpu", 2, preset="test", iters=2, warmup=1)
    finally:
        torch.set_num_threads(threads)
    assert (c["model"], c["batch"], c["precision"], c["peak_gpu_memory_gib"]) == ("kmerl-test-micro", 2, "fp32", None)
    for key in ("fixed_masks", "host_masks"):
        assert c[key]["ms_per_step"] > 0
        assert c[key]["samples_per_s"] == pytest.approx(2 / c[key]["ms_per_step"] * 1e3, rel=0.02)
    assert c["host_mask_sampling_ms_per_batch"] > 0


def test_the_trainer_label_says_when_the_code_differs_from_its_commit(tmp_path: Path) -> None:
    """A tree copied to a GPU machine can carry stale git metadata: the label must not name a commit whose
    trainer is not the one that ran."""
    import subprocess

    from benchmarks.train_throughput import _git_commit

    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "train.py").write_text("a = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    clean = _git_commit(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "trainer" / "train.py").write_text("a = 2\n")
    assert _git_commit(tmp_path) == clean + "+modified"
