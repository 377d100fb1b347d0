"""The training corpus: every source of ../shared/data, deduplicated by recording, split by patient."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from export._augment import AugmentConfig, augment_windows
from export._corpus import SOURCES, CorpusConfig, build_corpus, read_corpus_csv, write_corpus_csv

FIXTURE = Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz"


@pytest.fixture(scope="module")
def shared() -> Path:
    for cand in (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")):
        if (cand / "ptbxl_folds1_8").is_dir():
            return cand
    pytest.skip("../shared/data (with ptbxl_folds1_8) is not present on this machine")


@pytest.fixture(scope="module")
def corpus(shared):
    return build_corpus(shared)


def test_every_record_once_with_its_source_and_no_patient_on_both_sides(corpus):
    ids = [r.record_id for r in corpus.records]
    assert len(ids) == len(set(ids))
    assert {r.source for r in corpus.records} <= set(SOURCES)
    sides: dict[str, set[str]] = {}
    for r in corpus.records:
        sides.setdefault(r.patient, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())
    # PTB-XL recordings also shipped as CinC HR* copies or in ptbxl_folds1_8 appear once
    ptb = [r for r in corpus.records if r.source == "ptbxl"]
    assert len({r.record_id for r in ptb}) == len(ptb) and sum(corpus.duplicates.values()) > 0
    # fold 10 is the test fold, and it is all of PTB-XL's test split
    assert sum(r.split == "test" for r in ptb) == 66


def _ptbxl_folds(shared: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in ("ptbxl/ptbxl_500_index.csv", "ptbxl_folds1_8/index.csv"):
        with open(shared / name, newline="") as f:
            out.update({f"ptbxl:{int(float(r['ecg_id']))}": int(r["strat_fold"]) for r in csv.DictReader(f)})
    return out


def test_ptbxl_fold9_is_the_validation_split_and_never_trained_on(shared, corpus):
    folds = _ptbxl_folds(shared)
    split = {r.record_id: r.split for r in corpus.records if r.source == "ptbxl"}
    assert {k for k, s in split.items() if s == "val"} == {k for k, f in folds.items() if f == 9}
    assert {k for k, s in split.items() if s == "test"} == {k for k, f in folds.items() if f == 10}
    assert len([s for s in split.values() if s == "val"]) == 81
    assert not any(folds.get(k) in (9, 10) for k, s in split.items() if s == "train")
    assert {r.split for r in corpus.records} == {"train", "val", "test"}
    assert corpus.summary()["ptbxl"]["val"] == 81
    # no patient of fold 9 has a record in the training split
    val_patients = {r.patient for r in corpus.records if r.split == "val"}
    assert val_patients and not val_patients & {r.patient for r in corpus.records if r.split == "train"}


def test_val_and_test_folds_must_differ():
    with pytest.raises(ValueError, match="both validation and test"):
        CorpusConfig(ptbxl_val_folds=(9, 10))
    assert [CorpusConfig().ptbxl_split(f) for f in (1, 8, 9, 10)] == ["train", "train", "val", "test"]


def test_default_model_trains_on_train_only_and_validates_on_fold9(shared, corpus, tmp_path):
    from export.default_model import _write_heldout, default_datasets

    ds = default_datasets(shared)
    folds = _ptbxl_folds(shared)
    assert not any(folds.get(it.record_id) in (9, 10) for it in ds["train"].items)
    assert {folds[it.record_id] for it in ds["ptbxl_fold9_val"].items} == {9} and len(ds["ptbxl_fold9_val"]) == 81
    assert {folds[it.record_id] for it in ds["ptbxl_fold10"].items} == {10}
    # the bundle's held-out list names the validation records, and no val patient is a training patient
    import kmerl_edge

    bundle = tmp_path / "b"
    import shutil

    shutil.copytree(Path(kmerl_edge.__file__).parent / "default_bundle", bundle)
    _write_heldout(bundle, corpus)
    held = json.loads((bundle / "heldout.json").read_text())
    assert len(held["val_records"]) == 81 and len(held["test_records"]) > 66
    assert not {r.patient for r in corpus.records if r.split == "val"} & set(held["train_patients"])


def test_all_sources_present_with_af_and_holter_split_by_patient(corpus):
    s = corpus.summary()
    assert set(s) == set(SOURCES)
    assert sum(d.get("train_af", 0) + d.get("test_af", 0) for k, d in s.items() if k != "cpsc2021") >= 140
    holter = {r.patient: r.split for r in corpus.records if r.source == "cpsc2021"}
    assert holter["cpsc2021:35"] == "test" and holter["cpsc2021:21"] == "train"
    # atrial flutter windows are not atrial fibrillation
    assert any("atrial flutter" in r.labels and not r.af for r in corpus.records if r.source == "cpsc2021")


def test_split_is_seeded_and_round_trips_through_csv(shared, corpus, tmp_path):
    again = build_corpus(shared, CorpusConfig())
    assert [r.split for r in again.records] == [r.split for r in corpus.records]
    other = build_corpus(shared, CorpusConfig(seed=1))
    assert [r.split for r in other.records] != [r.split for r in corpus.records]
    back = read_corpus_csv(write_corpus_csv(corpus, tmp_path / "corpus.csv"))
    assert back.records == corpus.records


def test_augmentation_returns_preprocessed_windows_and_keeps_absent_leads_zero():
    with np.load(FIXTURE) as z:
        w = z["windows"][:4].astype(np.float32)
    w[:, 5:] = 0.0  # leads the recording lacks
    out = augment_windows(w, np.random.default_rng(0), fs=500.0)
    assert out.shape == w.shape and out.dtype == np.float32
    assert np.all(out[:, 5:] == 0.0)
    np.testing.assert_allclose(out[:, :5].std(axis=-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(out[:, :5].mean(axis=-1), 0.0, atol=1e-3)
    # it changes the signal, reproducibly for a seed
    assert np.abs(out[:, :5] - w[:, :5]).mean() > 0.05
    np.testing.assert_array_equal(out, augment_windows(w, np.random.default_rng(0), fs=500.0))


def test_polarity_inversion_inverts():
    with np.load(FIXTURE) as z:
        w = z["windows"][:2, :1].astype(np.float32)
    only_invert = AugmentConfig(p_invert=1.0, p_wander=0, p_motion=0, p_mains=0, p_muscle=0, p_resample=0,
                                gain_range=(1.0, 1.0))
    out = augment_windows(w, np.random.default_rng(0), fs=500.0, config=only_invert)
    assert np.corrcoef(out[0, 0], w[0, 0])[0, 1] < -0.99


def test_shipped_bundles_recipe_trains_on_fold9_exactly_as_their_heldout_list_says(shared):
    """`--ptbxl-val-folds none` (the README's build commands for the shipped bundles) trains on fold 9 too:
    its training patients are exactly those the shipped bundles list, so the commands reproduce them."""
    import kmerl_edge
    from export.default_model import default_datasets

    ds = default_datasets(shared, CorpusConfig(ptbxl_val_folds=()))
    folds = _ptbxl_folds(shared)
    assert len(ds["ptbxl_fold9_val"]) == 0
    assert sum(folds.get(it.record_id) == 9 for it in ds["train"].items) == 81
    assert not any(folds.get(it.record_id) == 10 for it in ds["train"].items)
    trained = {r.patient for r in ds["corpus"].records if r.split == "train"}
    for name in ("default_bundle", "default_bundle_12"):
        held = json.loads((Path(kmerl_edge.__file__).parent / name / "heldout.json").read_text())
        assert set(held["train_patients"]) == trained


def test_af_fusion_is_fitted_on_the_patients_the_network_trained_on(corpus):
    from export._fusion import fusion_records

    val = {r.patient for r in corpus.records if r.split == "val"}
    train = {r.patient for r in corpus.records if r.split == "train"}
    # a bundle built before the validation split trained on fold 9: its fusion is fitted there too
    old = fusion_records(corpus, train | val)
    assert {r.patient for r in old if r.split == "val"} == val
    # one built with the split: never on fold 9; neither ever on a test record
    new = fusion_records(corpus, train)
    assert not any(r.split == "val" for r in new) and {r.patient for r in new} == train
    assert not any(r.split == "test" for r in old + new)
    assert fusion_records(corpus, None) == [r for r in corpus.records if r.split == "train"]


def test_default_model_refuses_a_validation_fold_that_is_the_test_fold(tmp_path, capsys):
    from export.default_model import main

    assert main(["--shared", str(tmp_path), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                 "--ptbxl-val-folds", "10"]) == 2
    assert "both validation and test" in capsys.readouterr().err
    assert main(["--shared", str(tmp_path), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                 "--ptbxl-val-folds", "nine"]) == 2
    assert "--ptbxl-val-folds must be comma-separated integers" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()
