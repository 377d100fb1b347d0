"""The optional supervised fine-tuning stage of the default-model recipe (:mod:`export._finetune`), on the
real PTB-XL windows of the export fixture (8 preprocessed 12-lead windows with superclass labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export._finetune import FinetuneConfig, finetune_af_labels, finetune_model, finetune_windows  # noqa: E402
from kmerl_edge._errors import ConfigError  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz"
RECORDS = Path(__file__).parent / "fixtures" / "records"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: more threads only contend
    yield
    torch.set_num_threads(n)


def _data() -> tuple[np.ndarray, np.ndarray]:
    with np.load(FIXTURE) as z:
        return z["windows"], z["labels"].astype(np.float32)


def _model() -> object:
    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    return create_model("kmerl-test-micro")


def _texts(model: object) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    dim = model.cfg.text_dim  # type: ignore[attr-defined]
    return {"ptbxl_superclass": torch.randn(5, dim, generator=g), "rhythm": torch.randn(6, dim, generator=g)}


def _logits(model: object, texts: dict[str, torch.Tensor], x: np.ndarray, leads: list[int]) -> np.ndarray:
    ids = torch.tensor(leads)
    with torch.no_grad():
        q = torch.cat([model.project_queries(t) for t in texts.values()])  # type: ignore[attr-defined]
        return model(torch.from_numpy(x[:, leads].astype(np.float32)), ids, q).numpy()  # type: ignore[operator]


def _macro_auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]))


def _shipped_network() -> object:
    """The package's trained default network (the weights both default bundles hold)."""
    from safetensors.torch import load_file

    from kmerl_edge._model import create_model

    m = create_model("kmerl-student-s")
    m.load_state_dict(load_file(str(REPO / "kmerl_edge" / "default_bundle" / "weights.safetensors")), strict=False)
    return m


def test_a_few_steps_learn_the_labels_and_keep_the_other_queries() -> None:
    x, y = _data()
    x = x.copy()
    x[:, 1:] = 0  # lead I only: every step draws the same one-lead input, so 20 steps are a clean signal
    y = y[[3, 0, 6, 1, 7, 2, 5, 4]]  # labels the network does not already give these windows
    lab = y.any(axis=1)
    cfg = FinetuneConfig(steps=20, lr=1e-3, warmup_steps=2, batch_size=8, log_every=5)
    kept, free = _shipped_network(), _shipped_network()
    texts = _texts(kept)
    before = _logits(kept, texts, x, [0])
    auc_before = _macro_auc(y[lab], before[lab][:, :5])
    res = finetune_model(kept, texts, x, y, lab, cfg)
    finetune_model(free, texts, x, y, lab, FinetuneConfig(**{**cfg.to_dict(), "consistency_weight": 0.0}))
    after_kept, after_free = _logits(kept, texts, x, [0]), _logits(free, texts, x, [0])
    assert res.labelled == int(lab.sum()) and res.windows == len(x) and len(res.history) >= 3
    # the supervised queries learn the training windows' labels
    assert _macro_auc(y[lab], after_kept[lab][:, :5]) > max(auc_before + 0.15, 0.85)
    assert res.history[-1]["label_bce"] < 0.8 * res.history[0]["label_bce"]
    # the other queries' logits (rhythm) stay near the start with the consistency term, far less without it
    drift_kept = float(np.abs(after_kept[:, 5:] - before[:, 5:]).mean())
    drift_free = float(np.abs(after_free[:, 5:] - before[:, 5:]).mean())
    assert drift_kept < 0.2 and drift_kept < 0.3 * drift_free


def test_it_is_seeded_and_off_by_default() -> None:
    x, y = _data()
    lab = y.any(axis=1)
    a, b, c = _model(), _model(), _model()
    texts = _texts(a)
    start = {k: v.clone() for k, v in c.state_dict().items()}  # type: ignore[attr-defined]
    cfg = FinetuneConfig(steps=3, lr=1e-3, batch_size=4, max_leads=3)
    finetune_model(a, texts, x, y, lab, cfg)
    finetune_model(b, texts, x, y, lab, cfg)
    finetune_model(c, texts, x, y, lab, FinetuneConfig())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], start[k]) for k in sa)
    assert all(torch.equal(sc[k], start[k]) for k in sc)  # steps=0: untouched


@pytest.mark.parametrize("bad", [{"steps": -1}, {"lr": 0.0}, {"max_leads": 13}, {"batch_size": 0},
                                 {"consistency_weight": -1.0}, {"af_label_weight": -1.0},
                                 {"af_consistency_weight": -0.5}, {"one_lead_share": 1.5}, {"af_index": -1}])
def test_bad_settings_are_named_errors(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        FinetuneConfig(**bad)  # type: ignore[arg-type]


def test_mismatched_data_and_unknown_label_sets_are_refused() -> None:
    x, y = _data()
    m = _model()
    texts = _texts(m)
    with pytest.raises(ConfigError, match="do not match"):
        finetune_model(m, texts, x, y[:, :3], y.any(axis=1), FinetuneConfig(steps=1))
    with pytest.raises(ConfigError, match="not among"):
        finetune_model(m, {"rhythm": texts["rhythm"]}, x, y, y.any(axis=1), FinetuneConfig(steps=1))
    with pytest.raises(ConfigError, match="no fine-tuning window carries labels"):
        finetune_model(m, texts, x, y, np.zeros(len(x), bool), FinetuneConfig(steps=1))


def test_labels_come_from_ptbxl_records_of_the_corpus_only(tmp_path: Path) -> None:
    from export._corpus import CorpusRecord
    from trainer.data import Dataset, EcgItem
    from trainer.shards import prepare_shards

    items = [EcgItem(record_id=r, path=str(RECORDS / p), report="x") for r, p in
             (("ptbxl:1", "00001_hr"), ("ptbxl:8", "00008_hr"), ("cpsc2018:A1980", "A1980.mat"))]
    shards = prepare_shards(Dataset("t", items), tmp_path / "s", workers=1, progress=False)
    classes = ["normal ECG", "myocardial infarction"]
    recs = [CorpusRecord("ptbxl:1", "ptbxl", "ptbxl", "p1", "", "", ("sinus rhythm", "normal ECG"), "train"),
            CorpusRecord("ptbxl:8", "ptbxl", "ptbxl", "p8", "", "", ("sinus rhythm",), "train"),
            # a CinC record whose words name a superclass is not a PTB-XL superclass label
            CorpusRecord("cpsc2018:A1980", "cpsc2018", "cpsc2018", "a", "", "", ("normal ECG",), "train")]
    x, y, lab = finetune_windows(shards, recs, classes)
    assert x.shape == (3, 12, 5000)
    assert y.tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert lab.tolist() == [True, False, False]
    with pytest.raises(ConfigError, match="different runs"):
        finetune_windows(shards, recs[:2], classes)


def test_the_default_model_cli_refuses_bad_finetune_settings_before_reading_data(tmp_path: Path) -> None:
    from export.default_model import main

    assert main(["--shared", str(tmp_path / "shared"), "--work", str(tmp_path / "work"), "--out",
                 str(tmp_path / "out"), "--teacher-model", "kmerl-student-s", "--distill-steps", "0",
                 "--finetune-steps", "10", "--finetune-lr", "-1"]) == 2
    assert main(["--shared", str(tmp_path / "shared"), "--work", str(tmp_path / "work"), "--out",
                 str(tmp_path / "out"), "--teacher-model", "kmerl-student-s", "--distill-steps", "0",
                 "--finetune-steps", "10", "--finetune-af-label-weight", "1", "--finetune-one-lead-share", "2"]) == 2
    assert not (tmp_path / "work").exists()


def test_the_paired_difference_interval_of_the_validation_benchmark() -> None:
    from benchmarks.finetune_val import paired_macro_auc_diff_ci

    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.4).astype(np.float32)
    noise = rng.normal(size=y.shape)
    weak, strong = y + 2.0 * noise, y + 0.3 * noise
    assert paired_macro_auc_diff_ci(y, weak, weak, n_boot=200) == [0.0, 0.0]
    lo, hi = paired_macro_auc_diff_ci(y, weak, strong, n_boot=200)
    assert 0.0 < lo < hi
    lo, hi = paired_macro_auc_diff_ci(y, strong, weak, n_boot=200)
    assert lo < hi < 0.0


def _af_auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def test_the_af_label_term_teaches_the_af_query_and_is_absent_at_weight_zero() -> None:
    x, y = _data()
    x = x.copy()
    x[:, 1:] = 0  # lead I only, as a one-lead wearable
    lab = y.any(axis=1)
    af = np.array([1, 0, 0, 1, 0, 1, 1, 0], np.float32)
    af_lab = np.ones(len(x), bool)
    af_lab[2] = False  # a window without a rhythm label takes no AF loss
    kw = {"steps": 20, "lr": 1e-3, "warmup_steps": 2, "batch_size": 8, "log_every": 5, "max_leads": 1,
          "label_weight": 0.0, "af_index": 0}  # the AF query is the first of "rhythm" (column 5 below)
    m = _shipped_network()
    texts = _texts(m)
    before = _logits(m, texts, x, [0])[:, 5]
    auc_before = _af_auc(af[af_lab], before[af_lab])
    res = finetune_model(m, texts, x, y, lab, FinetuneConfig(**kw, af_label_weight=1.0), af, af_lab)
    after = _logits(m, texts, x, [0])[:, 5]
    assert _af_auc(af[af_lab], after[af_lab]) > max(auc_before + 0.2, 0.9)
    assert res.history[-1]["af_bce"] < 0.8 * res.history[0]["af_bce"]
    # weight 0: the AF labels change nothing (the same weights as a run given none), no AF loss is logged
    a, b = _shipped_network(), _shipped_network()
    finetune_model(a, texts, x, y, lab, FinetuneConfig(**kw), af, af_lab)
    rb = finetune_model(b, texts, x, y, lab, FinetuneConfig(**kw))
    sa, sb = a.state_dict(), b.state_dict()  # type: ignore[attr-defined]
    trained = [k for k in sa if not k.startswith(("ecg_proj.", "text_proj."))]  # the heads are random here
    assert all(torch.equal(sa[k], sb[k]) for k in trained)
    assert all(h["af_bce"] == 0.0 for h in rb.history)
    with pytest.raises(ConfigError, match="needs af_labels"):
        finetune_model(a, texts, x, y, lab, FinetuneConfig(**kw, af_label_weight=1.0))
    with pytest.raises(ConfigError, match="do not match"):
        finetune_model(a, texts, x, y, lab, FinetuneConfig(**kw, af_label_weight=1.0), af[:3], af_lab[:3])
    with pytest.raises(ConfigError, match="outside"):
        finetune_model(a, texts, x, y, lab, FinetuneConfig(**{**kw, "af_index": 6}, af_label_weight=1.0),
                       af, af_lab)


def test_one_lead_share_forces_one_lead_steps() -> None:
    x, y = _data()
    lab = y.any(axis=1)
    m = _model()
    texts = _texts(m)
    res = finetune_model(m, texts, x, y, lab, FinetuneConfig(steps=8, lr=1e-4, batch_size=2, log_every=1,
                                                             one_lead_share=1.0))
    assert [h["leads"] for h in res.history] == [1.0] * 8


def test_af_labels_come_from_training_records_with_rhythm_labels_only(tmp_path: Path) -> None:
    from export._corpus import CorpusRecord
    from trainer.data import Dataset, EcgItem
    from trainer.shards import prepare_shards

    items = [EcgItem(record_id=r, path=str(RECORDS / p), report="x") for r, p in
             (("ptbxl:1", "00001_hr"), ("ptbxl:8", "00008_hr"), ("ptbxl:17", "00017_hr"),
              ("cpsc2018:A1980", "A1980.mat"))]
    shards = prepare_shards(Dataset("t", items), tmp_path / "s", workers=1, progress=False)
    rhythm = ["atrial fibrillation", "sinus rhythm"]
    recs = [CorpusRecord("ptbxl:1", "ptbxl", "ptbxl", "p1", "", "", ("sinus rhythm", "normal ECG"), "train"),
            CorpusRecord("ptbxl:8", "ptbxl", "ptbxl", "p8", "", "", ("normal ECG",), "train"),  # no rhythm
            # a validation record's AF is never a training label
            CorpusRecord("ptbxl:17", "ptbxl", "ptbxl", "p17", "", "", ("atrial fibrillation",), "val"),
            CorpusRecord("cpsc2018:A1980", "cpsc2018", "cpsc2018", "a", "", "", ("atrial fibrillation",), "train")]
    af, lab = finetune_af_labels(shards, recs, rhythm)
    assert af.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert lab.tolist() == [True, False, False, True]
    with pytest.raises(ConfigError, match="different runs"):
        finetune_af_labels(shards, recs[:2], rhythm)
