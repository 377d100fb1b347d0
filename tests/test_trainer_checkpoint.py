"""Checkpoints (atomic, pickle-free, teacher loader) and text encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kmerl_edge import PreprocessConfig, create_model
from kmerl_edge._errors import ConfigMismatchError
from trainer._errors import CheckpointError, TextEncoderUnavailableError
from trainer.checkpoint import latest_checkpoint, load_teacher, save_checkpoint
from trainer.text import MEDCPT_QUERY_ENCODER, default_text_encoder_spec, load_text_encoder


@pytest.fixture(scope="module")
def text_encoder():
    return load_text_encoder()


def test_save_and_load_teacher(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("kmerl-test-micro")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 12, 5000), torch.arange(12), torch.randn(3, 32)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000001", model=model, text_encoder="x/minilm",
                           entities=["atrial fibrillation", "normal ecg"], preprocess=PreprocessConfig(),
                           step=1, optimizer=opt, position={"global_step": 1})
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", "model.safetensors", "train_state.json", "train_state.safetensors"]
    assert not list(path.parent.glob("*.tmp-*"))
    with pytest.raises(CheckpointError):
        save_checkpoint(path, model=model, text_encoder="x", entities=[], preprocess=PreprocessConfig())
    for t in (load_teacher(path), load_teacher(tmp_path / "run")):
        assert t.config == model.cfg and t.text_encoder == "x/minilm" and not t.model.training
        assert t.entities == ["atrial fibrillation", "normal ecg"] and t.preprocess == PreprocessConfig()
        for k, v in model.state_dict().items():
            assert torch.equal(t.model.state_dict()[k], v)
    assert latest_checkpoint(tmp_path / "run") == path
    state = load_file(str(path / "train_state.safetensors"))
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in state)
    # a checkpoint whose weights do not match its config is refused
    w = load_file(str(path / "model.safetensors"))
    w["encoder.lead_embed"] = torch.zeros(11, 32)
    save_file(w, str(path / "model.safetensors"))
    with pytest.raises(ConfigMismatchError):
        load_teacher(path)
    with pytest.raises(CheckpointError):
        load_teacher(tmp_path / "empty")


def test_default_text_encoder(text_encoder) -> None:
    assert text_encoder.spec == default_text_encoder_spec() and text_encoder.dim == 384
    assert text_encoder.pooling == "mean"
    a = text_encoder.encode(["atrial fibrillation", "sinus rhythm"])
    b = text_encoder.encode(["atrial fibrillation"])
    assert a.shape == (2, 384) and not a.requires_grad
    torch.testing.assert_close(a[:1], b, atol=1e-5, rtol=0)  # deterministic, batch-independent (padding masked)
    sim = torch.nn.functional.cosine_similarity(a[0], text_encoder.encode(["atrial fibrilation episode"])[0], dim=0)
    assert sim > torch.nn.functional.cosine_similarity(a[0], a[1], dim=0)


def test_medcpt_is_a_real_path_that_fails_clearly_offline() -> None:
    with pytest.raises(TextEncoderUnavailableError, match="ncbi/MedCPT-Query-Encoder.*not available"):
        load_text_encoder(MEDCPT_QUERY_ENCODER)


def test_trainable_text_layers_are_explicit(text_encoder) -> None:
    names = text_encoder.set_trainable_layers(1)
    assert names and all(n.startswith("encoder.layer.5.") for n in names)
    assert text_encoder.set_trainable_layers(0) == []
    with pytest.raises(TextEncoderUnavailableError):
        text_encoder.set_trainable_layers(7)


def test_checkpoint_config_is_plain_json(tmp_path: Path) -> None:
    model = create_model("kmerl-test-micro")
    p = save_checkpoint(tmp_path / "c", model=model, text_encoder="spec", entities=["a"], preprocess=PreprocessConfig())
    cfg = json.loads((p / "config.json").read_text())
    assert cfg["model"]["name"] == "kmerl-test-micro" and cfg["entities"] == ["a"]
    assert sorted(x.name for x in p.iterdir()) == ["config.json", "model.safetensors"]
