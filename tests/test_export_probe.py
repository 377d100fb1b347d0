"""The optional supervised linear superclass head (:class:`kmerl_edge._model.LinearProbe`,
:mod:`export._probe`): it scores exactly the rows of its classes, found by query vector; a bundle without it
loads and scores as before; the ONNX graph carries it; it is fitted on training records only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export._probe import ProbeConfig, ProbeHead, attach_probe, fit_probe, probe_training_windows  # noqa: E402
from kmerl_edge._config import ModelConfig, get_config  # noqa: E402
from kmerl_edge._errors import ConfigError, ExportError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECORDS = Path(__file__).parent / "fixtures" / "records"
FIXTURE = Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz"


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _micro() -> object:
    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    return create_model("kmerl-test-micro").eval()


def _head(width: int, c: int = 3, seed: int = 1) -> ProbeHead:
    rng = np.random.default_rng(seed)
    return ProbeHead(tuple(f"class {i}" for i in range(c)), rng.normal(size=(c, width)), rng.normal(size=c), {})


def _run(model: object, x: torch.Tensor, lid: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    from kmerl_edge._model import DeviceGraph

    with torch.no_grad():
        return DeviceGraph(model).eval()(x, lid, q)  # type: ignore[arg-type]


def test_the_head_scores_exactly_its_classes_rows_found_by_query_vector() -> None:
    m = _micro()
    g = torch.Generator().manual_seed(2)
    q = torch.randn(11, m.cfg.width, generator=g)  # type: ignore[attr-defined]
    x, lid = torch.randn(4, 3, 5000, generator=g), torch.tensor([0, 1, 7])
    rows = [6, 2, 9]  # the head's classes sit at these rows, not first and not in order
    head = _head(m.cfg.width)  # type: ignore[attr-defined]
    with_head = attach_probe(m, head, q[rows])  # type: ignore[arg-type]
    plain, out = _run(m, x, lid, q), _run(with_head, x, lid, q)
    other = [i for i in range(len(q)) if i not in rows]
    assert torch.equal(out[:, other], plain[:, other])  # bit for bit
    pooled = m.encoder(x, lid)[1].detach().numpy()  # type: ignore[attr-defined]
    np.testing.assert_allclose(out[:, rows].numpy(), head.logits(pooled), atol=1e-5)
    assert not np.allclose(out[:, rows].numpy(), plain[:, rows].numpy())
    # the same classes asked in another order (or alone) get the same scores: matched by vector, not position
    perm = torch.tensor([9, 0, 6, 3])
    np.testing.assert_array_equal(_run(with_head, x, lid, q[perm]).numpy(), out[:, perm].numpy())
    # "mean": the logit of the mean of both probabilities, other rows still bit-identical
    mean = _run(attach_probe(m, head, q[rows], "mean"), x, lid, q)  # type: ignore[arg-type]
    assert torch.equal(mean[:, other], plain[:, other])
    p = 0.5 * (torch.sigmoid(plain[:, rows]) + torch.sigmoid(out[:, rows]))
    np.testing.assert_allclose(mean[:, rows].numpy(), torch.logit(p).numpy(), atol=1e-4)


def test_a_config_without_head_reads_and_writes_as_before() -> None:
    cfg = get_config("kmerl-student-s")
    assert "probe_classes" not in cfg.to_dict() and "probe_mode" not in cfg.to_dict()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with_head = ModelConfig.from_dict({**cfg.to_dict(), "probe_classes": 5, "probe_mode": "mean"})
    assert with_head.to_dict()["probe_classes"] == 5
    with pytest.raises(ConfigError, match="probe_mode"):
        ModelConfig.from_dict({**cfg.to_dict(), "probe_classes": 5, "probe_mode": "max"})
    with pytest.raises(ConfigError, match="probe_classes"):
        ModelConfig.from_dict({**cfg.to_dict(), "probe_classes": -1})


def test_a_bundle_without_head_loads_and_scores_as_before() -> None:
    """The test bundle (written before heads existed): no head, nothing listed as defaulted for it, and
    the torch backend's logits are the query network's, matching the bundle's own ONNX fp32 artifact."""
    pytest.importorskip("onnxruntime")
    import kmerl_edge
    from kmerl_edge._bundle import load_bundle

    b = load_bundle(Path(__file__).parent / "fixtures" / "test_bundle")
    assert b.model_config.probe_classes == 0
    assert "probe_classes" not in (b.path / "manifest.json").read_text()
    assert not [d for d in (b.spec.defaulted if b.spec else ()) if "probe" in d]
    n = min(3, b.max_leads)
    with np.load(FIXTURE) as z:
        x = np.ascontiguousarray(z["windows"][:4, :n], dtype=np.float32)
    lid = np.arange(n)
    t = kmerl_edge.load(b.path, backend="torch", companion=False)
    o = kmerl_edge.load(b.path, backend="onnxruntime", companion=False)
    assert t.backend.graph.probe is None  # type: ignore[attr-defined]
    lt, lo = t.backend.run(x, lid), o.backend.run(x, lid)
    np.testing.assert_allclose(lt, lo, atol=1e-4)
    with torch.no_grad():
        m = t.backend.graph  # type: ignore[attr-defined]
        tokens = m.encoder(torch.from_numpy(x), torch.from_numpy(lid))[0]
        ref = m.query_head(t.backend.queries, tokens, None).numpy()  # type: ignore[attr-defined]
    assert np.array_equal(lt, ref)


def test_onnx_parity_with_the_head(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    from export._onnx import export_onnx, ort_session

    m = _micro()
    g = torch.Generator().manual_seed(3)
    q = torch.randn(11, m.cfg.width, generator=g)  # type: ignore[attr-defined]
    rows = [6, 2, 9]
    with_head = attach_probe(m, _head(m.cfg.width), q[rows])  # type: ignore[arg-type, attr-defined]
    path = export_onnx(with_head, tmp_path / "m.onnx", max_leads=12)
    sess = ort_session(path)
    for leads in ([0], [0, 1, 7], list(range(12))):
        x = torch.randn(2, len(leads), 5000, generator=g)
        lid = torch.tensor(leads)
        ref = _run(with_head, x, lid, q).numpy()
        got = sess.run(None, {"signal": x.numpy(), "lead_ids": lid.numpy(), "queries": q.numpy()})[0]  # type: ignore[attr-defined]
        np.testing.assert_allclose(got, ref, atol=1e-4)
        other = [i for i in range(len(q)) if i not in rows]
        np.testing.assert_allclose(got[:, other], _run(m, x, lid, q).numpy()[:, other], atol=1e-4)


def test_a_bundle_with_the_head_round_trips(tmp_path: Path) -> None:
    import kmerl_edge
    from kmerl_edge import PreprocessConfig
    from kmerl_edge._bundle import load_bundle, write_bundle

    m = _micro()
    g = torch.Generator().manual_seed(4)
    q = {"ptbxl_superclass": torch.randn(5, m.cfg.width, generator=g),  # type: ignore[attr-defined]
         "rhythm": torch.randn(6, m.cfg.width, generator=g)}  # type: ignore[attr-defined]
    with_head = attach_probe(m, _head(m.cfg.width, 5), q["ptbxl_superclass"])  # type: ignore[arg-type, attr-defined]
    state = {k: v for k, v in with_head.state_dict().items() if not k.startswith(("ecg_proj.", "text_proj."))}
    path = write_bundle(tmp_path / "b", weights=state, model_config=with_head.cfg, preprocess_config=PreprocessConfig(),
                        label_sets={"ptbxl_superclass": [f"s{i}" for i in range(5)],
                                    "rhythm": [f"r{i}" for i in range(6)]},
                        queries=q, trained=False, max_leads=3,
                        metrics={"superclass_probe": {"label_set": "ptbxl_superclass", "classes": ["s0"]}})
    b = load_bundle(path)
    assert b.model_config.probe_classes == 5
    assert "supervised linear head" in (path / "MODEL_CARD.md").read_text()
    clf = kmerl_edge.load(path, backend="torch", companion=False)
    x = torch.randn(2, 1, 5000, generator=g)
    got = clf.backend.run(x.numpy(), np.array([0]))
    np.testing.assert_array_equal(got, _run(with_head, x, torch.tensor([0]), torch.cat(list(q.values()))).numpy())


def test_the_fit_learns_from_pooled_embeddings_and_refuses_bad_input() -> None:
    with np.load(FIXTURE) as z:
        x, y = z["windows"].astype(np.float16), z["labels"].astype(np.float32)
    m = _micro()
    cls = [f"c{j}" for j in range(y.shape[1])]
    keep = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    head = fit_probe(m, x, y[:, keep], [cls[j] for j in keep], ProbeConfig(random_subsets=1, n_cs=2, cv_folds=2))  # type: ignore[arg-type]
    assert head.weight.shape == (len(keep), m.cfg.width) and np.isfinite(head.weight).all()  # type: ignore[attr-defined]
    assert head.meta["rows"] == len(x) * 7 and set(head.meta["lead_counts"]) >= {"1", "3", "6", "12"}
    with pytest.raises(ConfigError):
        fit_probe(m, x, y[:3], cls)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mode"):
        ProbeConfig(mode="max")


def test_the_fit_takes_training_records_only(tmp_path: Path) -> None:
    from export._corpus import CorpusRecord
    from trainer.data import Dataset, EcgItem
    from trainer.shards import prepare_shards

    items = [EcgItem(record_id=r, path=str(RECORDS / p), report="x") for r, p in
             (("ptbxl:1", "00001_hr"), ("ptbxl:8", "00008_hr"), ("cpsc2018:A1980", "A1980.mat"))]
    shards = prepare_shards(Dataset("t", items), tmp_path / "s", workers=1, progress=False)
    classes = ["normal ECG", "myocardial infarction"]

    def recs(split8: str) -> list[CorpusRecord]:
        return [CorpusRecord("ptbxl:1", "ptbxl", "ptbxl", "p1", "", "", ("sinus rhythm", "normal ECG"), "train"),
                CorpusRecord("ptbxl:8", "ptbxl", "ptbxl", "p8", "", "", ("sinus rhythm",), split8),
                CorpusRecord("cpsc2018:A1980", "cpsc2018", "cpsc2018", "a", "", "", ("normal ECG",), "train")]

    x, y, ids = probe_training_windows(shards, recs("train"), classes)
    assert ids == ["ptbxl:1", "ptbxl:8"] and x.shape == (2, 12, 5000)  # PTB-XL only: the superclass table
    assert y.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    for split in ("val", "test"):  # a fold-9 (val) or fold-10 (test) record in the fitting set is refused
        with pytest.raises(ExportError, match="train split"):
            probe_training_windows(shards, recs(split), classes)
    with pytest.raises(ExportError, match="different runs"):
        probe_training_windows(shards, recs("train")[:2], classes)


@pytest.mark.parametrize("name", ["default_bundle", "default_bundle_12"])
def test_the_shipped_bundles_score_the_superclasses_with_the_head_and_nothing_else(name: str) -> None:
    import kmerl_edge

    clf = kmerl_edge.load(REPO / "kmerl_edge" / name, backend="torch", companion=False)
    assert clf.bundle.model_config.probe_classes == 5
    with np.load(FIXTURE) as z:
        x = np.ascontiguousarray(z["windows"][:4, [0, 1]], dtype=np.float32)
    lid = np.array([0, 1])
    g = clf.backend.graph  # type: ignore[attr-defined]
    q = clf.backend.queries  # type: ignore[attr-defined]
    with torch.no_grad():
        tokens, pooled, _ = g.encoder(torch.from_numpy(x), torch.from_numpy(lid))
        query_net = g.query_head(q, tokens, None).numpy()
        head = (pooled @ g.probe.weight.t() + g.probe.bias).numpy()
    got = clf.backend.run(x, lid)
    _, index = clf.bundle.all_queries()
    sc = [i for i, (ls, _) in enumerate(index) if ls == "ptbxl_superclass"]
    other = [i for i in range(len(index)) if i not in sc]
    assert np.array_equal(got[:, other], query_net[:, other])  # AF and the rhythm classes: the query network
    np.testing.assert_allclose(got[:, sc], head, atol=1e-5)


def test_kmerl_export_refuses_a_probe_run_without_shards_before_exporting(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from export.cli import main

    rc = main(["bundle", "--teacher", "random:kmerl-test-micro", "--out", str(tmp_path / "b"),
               "--superclass-probe-run", str(tmp_path)])
    assert rc == 2 and "corpus.csv and shards/" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
