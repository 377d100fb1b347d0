"""A real 2-process gloo DDP run (torchrun) over real PTB-XL records: the loss falls, and a run killed
mid-way and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer._config import get_preset
from trainer.checkpoint import load_teacher
from trainer.data import read_ptbxl
from trainer.shards import prepare_shards
from trainer.text import load_text_encoder
from trainer.train import train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not available")
STEPS = 12


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = read_ptbxl(SHARED / "ptbxl", rate=100)
    ds.items = ds.items[:16]
    return prepare_shards(ds, tmp_path_factory.mktemp("shards") / "ptbxl", shard_size=8, workers=1, progress=False)


def _torchrun(shards: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "trainer.cli", "train", "--preset", "test", "--data", str(shards), "--out", str(out),
           "--no-progress", "--device", "cpu", "--max-steps", str(STEPS),
           "--set", "batch_size=4", "--set", "epochs=100", "--set", "lr=0.003", "--set", "ckpt_every=4", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _params(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def test_ddp_loss_falls_and_killed_run_resumes_exactly(shards: Path, tmp_path: Path) -> None:
    full = _torchrun(shards, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "full" / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == STEPS
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses

    # killed right after step 7 (last checkpoint: step 4), then resumed
    killed = _torchrun(shards, tmp_path / "cut", "--stop-at-step", "7")
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step-00000004"]
    resumed = _torchrun(shards, tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a = _params(tmp_path / "full" / "checkpoints" / f"step-{STEPS:08d}")
    b = _params(tmp_path / "cut" / "checkpoints" / f"step-{STEPS:08d}")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical on CPU
    rows_b = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").open()))
    assert [r["step"] for r in rows_b] == [str(i) for i in range(1, STEPS + 1)]
    assert [r["loss"] for r in rows_b] == [r["loss"] for r in rows]
    teacher = load_teacher(tmp_path / "cut")
    assert teacher.meta["step"] == STEPS and teacher.config.name == "kmerl-test-micro"


def test_only_the_configured_text_layers_train(shards: Path, tmp_path: Path) -> None:
    cfg = get_preset("test", text_trainable_layers=1, max_steps=2, batch_size=4, ckpt_every=2)
    res = train(cfg, data=shards, out_dir=tmp_path / "run", device="cpu", progress=False)
    teacher = load_teacher(res.final_checkpoint)  # type: ignore[arg-type]
    assert Path(teacher.text_encoder).name == "text_encoder"
    trained = load_text_encoder(teacher.text_encoder).model.state_dict()
    base = load_text_encoder(teacher.meta["text_encoder_base"]).model.state_dict()
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all(k.startswith("encoder.layer.5.") for k in changed)


def test_loader_workers_make_the_batches_the_main_process_would(shards: Path, tmp_path: Path) -> None:
    """The token masks and label rows are made in the loader workers (beside the GPU step), seeded by the
    global step: a run with workers ends bit-identical to one without, across an epoch boundary and a resume."""
    base = get_preset("test", max_steps=6, batch_size=4, epochs=100, ckpt_every=3)
    runs = {}
    for workers in (0, 2):
        res = train(base.override(num_workers=workers), data=shards, out_dir=tmp_path / f"w{workers}",
                    device="cpu", progress=False)
        runs[workers] = _params(res.final_checkpoint)  # type: ignore[arg-type]
    assert runs[0].keys() == runs[2].keys()
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[2][k]), k


def test_a_checkpoint_from_before_a_config_field_existed_resumes(shards: Path, tmp_path: Path) -> None:
    """Config fields added later take their default (the old behaviour) when a checkpoint written before them
    is resumed; a real difference is still refused."""
    import json

    from trainer._errors import CheckpointError

    cfg = get_preset("test", max_steps=2, batch_size=4, epochs=100, ckpt_every=2)
    train(cfg, data=shards, out_dir=tmp_path / "run", device="cpu", progress=False)
    cj = tmp_path / "run" / "checkpoints" / "step-00000002" / "config.json"
    conf = json.loads(cj.read_text())
    del conf["train_config"]["masking"]["lead_count_per"]  # as written before the field existed
    cj.write_text(json.dumps(conf))
    res = train(cfg.override(max_steps=4), data=shards, out_dir=tmp_path / "run", device="cpu", progress=False,
                resume=True)
    assert res.steps == 4
    with pytest.raises(CheckpointError, match="lr"):
        train(cfg.override(max_steps=6, lr=1e-2), data=shards, out_dir=tmp_path / "run", device="cpu",
              progress=False, resume=True)
