"""Zero-shot evaluation, metrics, linear probe and the kmerl-train CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kmerl_edge import PAPER_LEAD_ORDER, create_model
from trainer.cli import main
from trainer.data import read_merl_split
from trainer.evaluate import (
    eval_data_from_dataset,
    evaluate_zero_shot,
    linear_probe,
    macro_auc,
    max_f1,
    plot_auc_vs_leads,
    results_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIX = Path(__file__).resolve().parent / "fixtures" / "trainer"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not available")


def test_metrics_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.4).astype(np.float32)
    s = rng.random((60, 3))
    s[:, 0] = y[:, 0] + 0.1 * rng.random(60)  # separable
    y[:, 2] = 0  # no positives: left out of the macro average
    auc, per = macro_auc(y, s)
    pos, neg = s[y[:, 1] > 0, 1], s[y[:, 1] == 0, 1]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert per[0] == 1.0 and per[1] == pytest.approx(brute) and np.isnan(per[2])
    assert auc == pytest.approx((1.0 + brute) / 2)
    f1, per_f1 = max_f1(y, s)
    assert per_f1[0] == 1.0 and np.isnan(per_f1[2])
    best = max(2 * ((s[:, 1] >= t) & (y[:, 1] > 0)).sum() / ((s[:, 1] >= t).sum() + (y[:, 1] > 0).sum())
               for t in s[:, 1])
    assert per_f1[1] == pytest.approx(best)


@needs_shared
def test_zero_shot_every_lead_count_and_named_subsets(tmp_path: Path) -> None:
    ds = read_merl_split(SHARED / "merl_splits", "ptbxl_super", "test", data_root=SHARED / "ptbxl", rate=100)
    ds.items = ds.items[:12]
    data = eval_data_from_dataset(ds)
    assert data.signals.shape == (12, 12, 5000) and data.failed == {}
    torch.manual_seed(0)
    model = create_model("kmerl-test-micro")
    emb = torch.randn(5, 384)  # precomputed class-name embeddings are accepted as well as a TextEncoder
    res = evaluate_zero_shot(model, emb, data, lead_subsets=[["II", "V2"], ["avr"]])
    assert sorted(res["by_lead_count"], key=int) == [str(k) for k in range(1, 13)]
    assert res["by_lead_count"]["3"]["leads"] == list(PAPER_LEAD_ORDER[:3])
    assert set(res["by_subset"]) == {"II,V2", "aVR"}
    for r in list(res["by_lead_count"].values()) + list(res["by_subset"].values()):
        assert 0.0 <= r["macro_auc"] <= 1.0 and r["n_without_leads"] == 0
    # one lead's score depends on that lead only (no token of another lead reaches the encoder)
    data.signals[:, 1:] = 0.0
    again = evaluate_zero_shot(model, emb, data, lead_subsets=[["I"]], lead_counts=False)
    assert again["by_subset"]["I"]["per_class_auc"] == res["by_lead_count"]["1"]["per_class_auc"]
    png = plot_auc_vs_leads({"micro": res}, tmp_path / "auc.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "| AUC |" in results_markdown({"task": "ptbxl_super", "zero_shot": res})


def test_linear_probe_selects_on_validation_never_on_test() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + 0.5 * rng.normal(size=300) > 0)], 1).astype(np.float32)
    tr, va, te = (x[:200], y[:200]), (x[200:250], y[200:250]), (x[250:], y[250:])
    r1 = linear_probe(tr, va, te, fractions=(0.1, 1.0), epochs=20, batch_size=32, seed=0)
    r2 = linear_probe(tr, va, (te[0], 1 - te[1]), fractions=(0.1, 1.0), epochs=20, batch_size=32, seed=0)
    assert list(r1) == ["10%", "100%"] and r1["10%"]["n_train"] == 20 and r1["100%"]["n_train"] == 200
    for k in r1:  # flipping the test labels changes nothing about the selection
        assert r1[k]["best_epoch"] == r2[k]["best_epoch"] and r1[k]["val_macro_auc"] == r2[k]["val_macro_auc"]
    assert r1["100%"]["test_macro_auc"] > 0.85


@needs_shared
def test_cli_prepare_train_eval(tmp_path: Path) -> None:
    shards, run, res = tmp_path / "shards", tmp_path / "run", tmp_path / "res"
    assert main(["prepare", "--source", "ptbxl", "--root", str(SHARED / "ptbxl"), "--split", "train", "--rate", "100", "--limit", "8",
                 "--out", str(shards), "--workers", "1", "--no-progress"]) == 0
    assert main(["train", "--preset", "test", "--data", str(shards), "--out", str(run), "--max-steps", "2",
                 "--set", "batch_size=2", "--set", "epochs=5", "--no-progress", "--device", "cpu"]) == 0
    # a second run into the same directory without --resume is refused with a named error
    assert main(["train", "--preset", "test", "--data", str(shards), "--out", str(run), "--no-progress"]) == 1
    assert main(["eval", "--checkpoint", str(run), "--task", "ptbxl_super", "--splits", str(SHARED / "merl_splits"),
                 "--data-root", str(SHARED / "ptbxl"), "--out", str(res), "--limit", "12", "--leads", "I,II",
                 "--no-probe"]) == 0
    out = json.loads((res / "results.json").read_text())
    assert out["zero_shot"]["by_subset"]["I,II"]["leads"] == ["I", "II"] and out["n"] == {"test": 12}
    assert (res / "auc_vs_leads.png").is_file() and "| AUC |" in (res / "results.md").read_text()


def test_cli_mimic_without_knowledge_is_a_named_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "--source", "mimic", "--root", str(FIX / "mimic_iv_ecg"), "--split", "train", "--out", str(tmp_path / "s"),
                 "--workers", "1", "--no-progress"]) == 0
    assert main(["train", "--preset", "test", "--data", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                 "--set", "batch_size=1", "--no-progress", "--device", "cpu"]) == 1
    assert "no entities" in capsys.readouterr().err


def test_knowledge_output_feeds_the_label_matrix(tmp_path) -> None:
    """The knowledge pipeline's files load as the trainer's label matrix, rows aligned by record id."""
    from trainer.knowledge import extract_knowledge
    from trainer.labels import LabelMatrix

    reports = ["sinus rhythm. left bundle branch block.", "atrial fibrillation", "sinusrhythmus normales ekg"]
    out = extract_knowledge(reports, ["a", "b", "c"], out_dir=tmp_path / "k")
    lm = LabelMatrix.from_knowledge(out)
    assert lm.record_ids == ("a", "b", "c")
    dense = lm.matrix.toarray()
    col = {name: i for i, name in enumerate(lm.entities)}
    assert dense[1, col["atrial fibrillation"]] == 1 and dense[0, col["atrial fibrillation"]] == 0
    assert dense[0, col["sinus rhythm"]] == 1 and dense[2, col["sinus rhythm"]] == 1  # German report too
    assert dense[2, col["normal ECG"]] == 1
    assert main(["knowledge", "stats", str(out)]) == 0
