"""Issue 13, paper fidelity and honest evaluation: explicit splits, a recorded training set that
evaluation refuses to score, and non-linear projections on both sides."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from kmerl_edge import PreprocessConfig, create_model
from kmerl_edge._config import ModelConfig, get_config
from kmerl_edge._model import KMERLModel
from trainer._errors import DatasetFormatError, SplitError, TrainingDataLeakError
from trainer.checkpoint import check_held_out, load_teacher, save_checkpoint, training_record_ids
from trainer.cli import main
from trainer.data import read_cpsc2021_af, read_ptbxl, select_split

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not available")


# ------------------------------------------------------------------------------------------------ splits
@needs_shared
def test_ptbxl_splits_follow_strat_fold_in_both_layouts() -> None:
    parts = {s: read_ptbxl(SHARED / "ptbxl", split=s) for s in ("train", "val", "test")}
    assert {it.meta["strat_fold"] for it in parts["train"].items} == set(range(1, 9))
    assert {it.meta["strat_fold"] for it in parts["val"].items} == {9}
    assert {it.meta["strat_fold"] for it in parts["test"].items} == {10}
    assert sum(len(p) for p in parts.values()) == 500 and parts["test"].skipped == {"other_split": 434}
    pats = [{it.meta["patient_id"] for it in p.items} for p in parts.values()]
    assert not (pats[0] & pats[2]) and not (pats[1] & pats[2])  # PTB-XL folds never share a patient
    assert parts["test"].items[0].meta["superclasses"] == ("NORM",)
    # the ptbxl_folds1_8 layout: index.csv + records250, training folds only
    folds = read_ptbxl(SHARED / "ptbxl_folds1_8", split="train")
    assert len(folds) == 1420 and {it.meta["strat_fold"] for it in folds.items} <= set(range(1, 9))
    assert len(read_ptbxl(SHARED / "ptbxl_folds1_8", split="test")) == 0
    it = next(i for i in folds.items if i.record_id == "10036")
    assert it.report.startswith("Sinus rhythm. Anterior myocardial infarction.") and "STD" in it.labels
    assert it.meta["superclasses"] == ("CD", "HYP", "MI", "STTC")
    with pytest.raises(DatasetFormatError):
        read_ptbxl(SHARED / "ptbxl_folds1_8", rate=500)
    with pytest.raises(SplitError):
        read_ptbxl(SHARED / "ptbxl", split="dev")
    with pytest.raises(DatasetFormatError):
        read_ptbxl(SHARED / "cpsc2021")


def test_other_sources_split_by_patient(records_dir: Path, tmp_path: Path) -> None:
    import shutil

    for name in ("data_101_6", "data_101_7", "data_7_1"):
        for ext in ("hea", "dat", "atr"):
            shutil.copy(records_dir / f"data_101_6.{ext}", tmp_path / f"{name}.{ext}")
        (tmp_path / f"{name}.hea").write_text(
            (records_dir / "data_101_6.hea").read_text().replace("data_101_6", name))
    ds = read_cpsc2021_af(tmp_path)
    where: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        for it in select_split(ds, split).items:
            where.setdefault(it.meta["patient_id"], set()).add(split)
    assert set(where) == {"101", "7"} and all(len(v) == 1 for v in where.values())
    with pytest.raises(SplitError):
        select_split(ds, "all")


def test_prepare_needs_an_explicit_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--source", "ptbxl", "--root", str(tmp_path), "--out", str(tmp_path / "s")])
    assert exc.value.code == 2 and "--split" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the recorded training set
def _ckpt(path: Path, records: list[str] | None) -> Path:
    model = create_model("kmerl-test-micro")
    tr = None if records is None else {"record_ids": records, "dataset": "ptbxl_500:train"}
    return save_checkpoint(path, model=model, text_encoder="x", entities=["a"], preprocess=PreprocessConfig(),
                           training_records=tr)


def test_checkpoint_records_its_training_set_and_eval_refuses_it(tmp_path: Path) -> None:
    ck = _ckpt(tmp_path / "c1", ["ptbxl:12", "7", "3"])
    assert training_record_ids(ck) == {"ptbxl:12", "3", "7"}
    assert check_held_out(ck, ["1", "2"])["training_set"] == "recorded"
    with pytest.raises(TrainingDataLeakError, match="2 of 3"):
        check_held_out(ck, ["12", "3", "99"])
    old = _ckpt(tmp_path / "c0", None)  # a checkpoint from before training sets were recorded
    with pytest.raises(TrainingDataLeakError, match="does not record"):
        check_held_out(old, ["1"])
    assert check_held_out(old, ["1"], allow_unknown=True)["training_set"] == "unknown"


@needs_shared
def test_cli_eval_refuses_a_model_trained_on_the_test_fold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards, run = tmp_path / "shards", tmp_path / "run"
    assert main(["prepare", "--source", "ptbxl", "--root", str(SHARED / "ptbxl"), "--split", "test", "--rate", "100",
                 "--limit", "4", "--out", str(shards), "--workers", "1", "--no-progress"]) == 0
    assert json.loads((shards / "index.json").read_text())["split"]["split"] == "test"
    assert main(["train", "--preset", "test", "--data", str(shards), "--out", str(run), "--max-steps", "1",
                 "--set", "batch_size=2", "--no-progress", "--device", "cpu"]) == 0
    teacher = load_teacher(run)
    assert teacher.meta["split"]["split"] == "test" and len(training_record_ids(run) or ()) == 4
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--task", "ptbxl_super", "--splits", str(SHARED / "merl_splits"),
                 "--data-root", str(SHARED / "ptbxl"), "--out", str(tmp_path / "res"), "--no-probe"]) == 1
    assert "TrainingDataLeakError" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ projections
def test_both_projections_are_nonlinear_and_old_checkpoints_still_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("kmerl-test-micro")
    assert model.cfg.text_proj_layers == 2
    for proj, dim in ((model.text_proj, model.cfg.text_dim), (model.ecg_proj, model.cfg.width)):
        a, b = torch.randn(1, dim), torch.randn(1, dim)
        # an affine map f satisfies f(a) + f(b) == f(a + b) + f(0)
        assert not torch.allclose(proj(a) + proj(b), proj(a + b) + proj(torch.zeros(1, dim)), atol=1e-4)
    # a config written before the change (no text_proj_layers key) is the single Linear it was trained with
    legacy_dict = {k: v for k, v in get_config("kmerl-test-micro").to_dict().items() if k != "text_proj_layers"}
    legacy = ModelConfig.from_dict(legacy_dict)
    assert legacy.text_proj_layers == 1 and isinstance(KMERLModel(legacy).text_proj, torch.nn.Linear)
    old = KMERLModel(legacy)
    ck = save_checkpoint(tmp_path / "old", model=old, text_encoder="x", entities=["a"], preprocess=PreprocessConfig())
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model"].pop("text_proj_layers")
    (ck / "config.json").write_text(json.dumps(cfg))
    t = load_teacher(ck)
    assert t.config.text_proj_layers == 1
    assert Counter(k.split(".")[0] for k in t.model.state_dict()) == Counter(k.split(".")[0] for k in old.state_dict())


# ---------------------------------------------------------------------------------- superclass aggregation
def test_subtypes_produce_their_superclass_label_for_training(tmp_path: Path) -> None:
    """Lexicon path: anterior / inferior MI also label "myocardial infarction", and the trainer's label
    matrix asks both levels as queries; an aggregated label is uncertain only if all its members are."""
    from trainer.knowledge import Extraction, extract_knowledge, load_knowledge
    from trainer.knowledge._store import write_knowledge
    from trainer.labels import LabelMatrix

    reports = ["sinus rhythm. anterior myocardial infarction.", "inferior myocardial infarction.",
               "possible anterior myocardial infarction.", "sinus rhythm. normal ecg."]
    out = extract_knowledge(reports, ["a", "b", "c", "d"], out_dir=tmp_path / "k")
    k = load_knowledge(out)
    lm = LabelMatrix.from_knowledge(out)
    y = dict(zip(lm.entities, lm.matrix.toarray().T))
    assert {"anterior myocardial infarction", "inferior myocardial infarction", "myocardial infarction"} <= set(y)
    assert y["myocardial infarction"].tolist() == [1, 1, 1, 0] and y["normal ECG"].tolist() == [0, 0, 0, 1]
    unc = dict(zip(k.vocabulary, k.uncertain_matrix.toarray().T))
    assert unc["myocardial infarction"].tolist() == [0, 0, 1, 0]
    assert set(k.superclass_labels["myocardial infarction"]) == {"anterior myocardial infarction",
                                                                 "inferior myocardial infarction"}
    assert "myocardial infarction" in k.superclasses["MI"]
    off = load_knowledge(extract_knowledge(reports, ["a", "b", "c", "d"], out_dir=tmp_path / "off",
                                           superclass_labels=False))
    assert "myocardial infarction" not in off.vocabulary
    # LLM path: the superclass names the LLM gave become labels
    ex = Extraction(per_report=[{"anterior mi": False}, {"inferior mi": True}, {}],
                    synonyms={}, superclass_of={"anterior mi": "Myocardial Infarction", "inferior mi": "Myocardial Infarction"},
                    superclass_names={"Myocardial Infarction": "Myocardial Infarction"})
    llm = load_knowledge(write_knowledge(ex, ["x", "y", "z"], tmp_path / "llm"))
    assert llm.row("y")[llm.vocabulary.index("Myocardial Infarction")] == 1
    assert llm.row("z").sum() == 0


# ------------------------------------------------------------------------------------- honest evaluation
def test_bootstrap_intervals_and_the_chance_warning() -> None:
    import numpy as np

    from trainer.evaluate import _chance_warnings, bootstrap_auc, macro_auc

    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.4).astype(np.float32)
    s = rng.random((80, 3))
    s[:, 0] += 2 * y[:, 0]  # class 0 separable, the others noise
    auc, per = macro_auc(y, s)
    b = bootstrap_auc(y, s, n_boot=300, seed=1)
    assert b["macro"][0] <= auc <= b["macro"][1] and b["per_class"][0][0] > 0.95
    assert b["per_class"][1][0] < 0.5 < b["per_class"][1][1]  # noise: the interval holds chance
    assert bootstrap_auc(y, s, n_boot=300, seed=1) == b  # seeded
    chance = {"by_lead_count": {"12": {"macro_auc": 0.52, "macro_auc_ci": [0.41, 0.63]}}, "by_subset": {}}
    clear = {"by_lead_count": {"12": {"macro_auc": 0.8, "macro_auc_ci": [0.7, 0.9]}}, "by_subset": {}}
    assert len(_chance_warnings(chance)) == 1 and "within chance" in _chance_warnings(chance)[0]
    assert _chance_warnings(clear) == []


def test_plain_class_names_and_seen_classes() -> None:
    from trainer.evaluate import class_names, seen_classes
    from trainer.text import load_text_encoder

    names = class_names("ptbxl_super", ["NORM", "MI", "STTC", "CD", "HYP"])
    assert names["MI"] == "myocardial infarction" and names["HYP"] == "hypertrophy"
    assert class_names("ptbxl_rhythm", ["AFIB", "SR"]) == {"AFIB": "atrial fibrillation", "SR": "sinus rhythm"}
    assert class_names("ptbxl_form", ["STD"])["STD"] == "non-specific ST depression"
    seen = seen_classes({"MI": "myocardial infarction", "HYP": "hypertrophy"},
                        ["myocardial infarction", "sinus rhythm", "atrial fibrillation"], load_text_encoder())
    assert seen["MI"]["seen"] and seen["MI"]["exact"] and not seen["HYP"]["seen"]
    assert seen["HYP"]["similarity"] < 0.95


@needs_shared
def test_merl_benchmark_splits_where_they_exist(tmp_path: Path) -> None:
    """PTB-XL's strat_fold split is MERL's; CPSC-2018 follows MERL's icbeb split when --splits is given."""
    from trainer.data import merl_split_ids, read_cpsc2018, select_benchmark_split

    merl = merl_split_ids(SHARED / "merl_splits", "ptbxl_super")
    for split in ("train", "val", "test"):
        ours = set(read_ptbxl(SHARED / "ptbxl", split=split).record_ids)
        others = set().union(*(merl[s] for s in ("train", "val", "test") if s != split))
        assert not ours & others
    icbeb = merl_split_ids(SHARED / "merl_splits", "icbeb")
    rows = ["Recording,First_label,Second_label,Third_label"]
    rows += [f"{p.stem},1,," for p in sorted((SHARED / "cpsc2018").glob("A*.mat"))]
    (tmp_path / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    ds = read_cpsc2018(SHARED / "cpsc2018", reference=tmp_path / "REFERENCE.csv")
    parts = {s: set(select_benchmark_split(ds, s, SHARED / "merl_splits", "icbeb").record_ids)
             for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == len(ds)
    assert parts["test"] <= icbeb["test"] and not parts["train"] & (icbeb["val"] | icbeb["test"])
