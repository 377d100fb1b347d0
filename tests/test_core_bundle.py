"""Bundles are verified before use: hashes, schema version, config vs weights, missing artifacts."""

import json
import shutil

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._bundle import load_bundle, seal_bundle, update_label_sets, write_bundle


@pytest.fixture()
def bundle(tmp_path, test_bundle_path):
    dst = tmp_path / "b"
    shutil.copytree(test_bundle_path, dst)
    return dst


def test_committed_test_bundle_verifies_and_says_it_is_untrained(test_bundle_path):
    b = load_bundle(test_bundle_path)
    assert not b.trained
    assert set(b.label_sets) == {"ptbxl_superclass", "rhythm"}
    card = (test_bundle_path / "MODEL_CARD.md").read_text()
    assert "NOT A TRAINED MODEL" in card
    m = json.loads((test_bundle_path / "manifest.json").read_text())
    assert m["schema_version"] == 2 and "sha256" in m["artifacts"]["weights.safetensors"]
    assert m["preprocess"]["target_fs"] == 500.0


def test_tampered_weights_are_refused(bundle):
    p = bundle / "weights.safetensors"
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ke.TamperedArtifactError, match="weights.safetensors"):
        ke.load(bundle)


def test_tampered_onnx_is_refused(bundle):
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ke.TamperedArtifactError, match="model.onnx"):
        ke.load(bundle, backend="torch")


def test_unknown_schema_version_is_refused(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(m))
    seal_bundle(bundle)  # as its publisher: the seal is valid, the schema is not
    with pytest.raises(ke.UnsupportedSchemaError, match="99"):
        ke.load(bundle)


def test_missing_artifact_is_refused(bundle):
    (bundle / "model.onnx").unlink()
    with pytest.raises(ke.MissingArtifactError, match="model.onnx"):
        ke.load(bundle)


def test_config_that_does_not_match_weights_is_refused(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["model"]["width"] = 64  # the weights are width 32
    m["model"]["query_heads"] = 2
    (bundle / "manifest.json").write_text(json.dumps(m))
    seal_bundle(bundle)
    with pytest.raises(ke.ConfigMismatchError, match="wrong shapes"):
        ke.load(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(ke.MissingArtifactError, match="manifest.json"):
        ke.load(tmp_path)


def test_write_refuses_mismatched_weights_and_leaves_nothing(tmp_path):
    cfg = ke.get_config("kmerl-test-micro")
    with pytest.raises(ke.ConfigMismatchError):
        write_bundle(
            tmp_path / "x",
            weights={"encoder.lead_embed": np.zeros((12, 7), np.float32)},
            model_config=cfg,
            preprocess_config=ke.PreprocessConfig(),
            label_sets={},
            queries={},
            trained=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_adding_a_label_set_keeps_the_bundle_verified(bundle):
    b = update_label_sets(bundle, {"extra": (["left bundle branch block"], np.ones((1, 32), np.float32))})
    assert b.label_sets["extra"] == ("left bundle branch block",)
    clf = ke.load(bundle, backend="torch")
    assert "extra" in clf.label_sets


def test_no_pickle_anywhere_in_a_bundle(test_bundle_path):
    for f in test_bundle_path.iterdir():
        assert f.suffix in {".json", ".safetensors", ".onnx", ".md"}, f
