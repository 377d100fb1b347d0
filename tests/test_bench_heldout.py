"""kmerl-bench accuracy scores held-out patients only, and gives bootstrap intervals."""

from pathlib import Path

import numpy as np
import pytest

import kmerl_edge
from benchmarks.accuracy import TrainingPatientError, _heldout_cpsc2021, bootstrap_macro_auc_ci, heldout_spec

TEST_BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"


def test_default_bundle_training_patients_are_refused_and_defaults_are_held_out():
    spec = heldout_spec(kmerl_edge.load_bundle(kmerl_edge.default_bundle_path()))
    assert spec is not None  # the bundle's heldout.json (older bundles: by weights digest in benchmarks/heldout/)
    with pytest.raises(TrainingPatientError, match="training patients"):
        _heldout_cpsc2021(spec, ["data_8_2", "data_21_7"])  # patient 21 trained the default model
    names = _heldout_cpsc2021(spec, None)
    assert names and {n.split("_")[1] for n in names} <= {"8", "35", "66", "101"}


def test_a_bundle_without_a_heldout_list_needs_one():
    spec = heldout_spec(kmerl_edge.load_bundle(TEST_BUNDLE))
    assert spec is None
    with pytest.raises(TrainingPatientError, match="no held-out list"):
        _heldout_cpsc2021(spec, None)
    assert _heldout_cpsc2021(spec, ["data_8_2"]) == ["data_8_2"]


def test_bootstrap_interval_brackets_the_auc_and_is_seeded():
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.3).astype(float)
    s = y + rng.normal(0, 1.0, 200)
    lo, hi = bootstrap_macro_auc_ci(y, s)
    from sklearn.metrics import roc_auc_score

    assert lo < roc_auc_score(y, s) < hi and hi - lo < 0.2
    assert bootstrap_macro_auc_ci(y, s) == (lo, hi)
    assert bootstrap_macro_auc_ci(y, y) == (1.0, 1.0)


def test_validation_records_of_the_heldout_list_may_be_scored_and_others_are_refused(tmp_path):
    import csv
    import json

    from benchmarks.accuracy import run_accuracy

    shared = Path("/work/shared/data")
    for cand in (Path(__file__).resolve().parents[2] / "shared" / "data", shared):
        if (cand / "ptbxl").is_dir():
            shared = cand
            break
    else:
        pytest.skip("../shared/data is not present on this machine")
    with open(shared / "ptbxl" / "ptbxl_500_index.csv", newline="") as f:
        fold9 = [f"ptbxl:{int(float(r['ecg_id']))}" for r in csv.DictReader(f) if r["strat_fold"] == "9"]
    held = tmp_path / "heldout.json"
    held.write_text(json.dumps({"test_records": [], "val_records": fold9, "train_patients": []}))
    spec = heldout_spec(kmerl_edge.load_bundle(TEST_BUNDLE), held)
    assert spec is not None and spec["val_records"] == set(fold9)
    held.write_text(json.dumps({"test_records": [], "val_records": fold9[1:], "train_patients": []}))
    with pytest.raises(TrainingPatientError, match=fold9[0].split(":")[1]):
        run_accuracy(bundle=TEST_BUNDLE, data_root=shared, fold=9, heldout=held, cpsc2021_records=[])
