"""The contrastive loss: the DDP gradient over 2 real gloo processes equals the single-process gradient of
the full-batch loss, and pairs with identical reports are masked from (or joined to) the positives."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from trainer._losses import contrastive_loss

B, D_IN, D = 6, 10, 8  # per-rank batch, input and embedding sizes
WORLD = 2


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * B, D_IN, generator=g, dtype=torch.float64)
    t = torch.randn(WORLD * B, D_IN, generator=g, dtype=torch.float64)
    groups = torch.tensor([0, 1, 2, 0, 3, 4, 0, 5, 2, 6, 7, 0])  # report 0 in both ranks' halves
    return x, t, groups


class _Pair(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e = torch.nn.Linear(D_IN, D)
        self.t = torch.nn.Linear(D_IN, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor, groups: torch.Tensor | None, mode: str) -> torch.Tensor:
        e = F.normalize(self.e(x), dim=-1)
        s = F.normalize(self.t(t), dim=-1)
        return contrastive_loss(e, s, temperature=0.07, gather=True, groups=groups, same_report=mode)


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return _Pair().double()


MODES = [("negative", False), ("mask", True), ("positive", True)]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x, t, groups = _data()
        sl = slice(rank * B, (rank + 1) * B)
        grads = {}
        for mode, use_groups in MODES:
            ddp = torch.nn.parallel.DistributedDataParallel(_model())
            loss = ddp(x[sl], t[sl], groups[sl] if use_groups else None, mode)
            loss.backward()  # DDP averages the ranks' gradients here
            grads.update({f"{mode}/{n}": p.grad for n, p in ddp.module.named_parameters()})
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ddp_grads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ddp") / "grads.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize(("mode", "use_groups"), MODES)
def test_ddp_gradient_equals_full_batch_gradient(ddp_grads: dict[str, torch.Tensor], mode: str,
                                                 use_groups: bool) -> None:
    """2 gloo processes, 6 samples each, vs one process with all 12: the same gradient (float64)."""
    x, t, groups = _data()
    m = _model()
    m(x, t, groups if use_groups else None, mode).backward()
    for n, p in m.named_parameters():
        g = p.grad
        assert g is not None
        rel = float((ddp_grads[f"{mode}/{n}"] - g).norm() / g.norm())
        assert rel < 1e-6, (n, rel)


def test_identical_reports_are_not_negatives() -> None:
    g = torch.Generator().manual_seed(3)
    e = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    same_text = F.normalize(torch.randn(1, 8, generator=g), dim=-1)
    t = torch.cat([same_text, same_text, F.normalize(torch.randn(2, 8, generator=g), dim=-1)])
    groups = torch.tensor([0, 0, 1, 2])  # rows 0 and 1 have the same report
    plain = contrastive_loss(e, t, temperature=0.07, gather=False)
    masked = contrastive_loss(e, t, temperature=0.07, gather=False, groups=groups, same_report="mask")
    # by hand: drop the other identical-report column / row from each softmax
    le, lt = e @ t.t() / 0.07, t @ e.t() / 0.07
    drop = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    want = 0.5 * (F.cross_entropy(le.masked_fill(drop, -1e9), torch.arange(4))
                  + F.cross_entropy(lt.masked_fill(drop, -1e9), torch.arange(4)))
    assert torch.allclose(masked, want, atol=1e-6)
    assert not torch.allclose(plain, masked)
    # as positives: the identical text scores the same for both ECGs, so the target spreads over both
    pos = contrastive_loss(e, t, temperature=0.07, gather=False, groups=groups, same_report="positive")
    soft = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    want_pos = 0.5 * (F.cross_entropy(le, soft) + F.cross_entropy(lt, soft))
    assert torch.allclose(pos, want_pos, atol=1e-6)
    # identical texts have identical logits, so as positives they give plain CLIP's loss; masking does not
    assert torch.allclose(pos, plain, atol=1e-6)
    with pytest.raises(ValueError):
        contrastive_loss(e, t, temperature=0.07, groups=groups, same_report="ignore")


def test_training_groups_identical_reports_and_entity_sets() -> None:
    """The training loop gives rows with the same report (or the same entity set) one group id, so the
    contrastive loss masks them from each other's negatives; masking is the default."""
    import numpy as np

    from trainer._config import get_preset
    from trainer.labels import LabelMatrix
    from trainer.train import _groups

    class Store:  # the two things _groups reads of a ShardStore
        meta = [{"report": r} for r in ("Sinus rhythm. Normal ECG.", "Atrial fibrillation.",
                                        "Sinus rhythm. Normal ECG.", "Sinus rhythm. Normal ECG", "")]

        def __len__(self) -> int:
            return len(self.meta)

    y = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 0]], dtype=np.float32)
    labels = LabelMatrix(("normal ECG", "atrial fibrillation"), y, tuple("abcde"))
    g = _groups(Store(), labels, "report")  # type: ignore[arg-type]
    assert g[0] == g[2] and len({g[0], g[1], g[3], g[4]}) == 4
    e = _groups(Store(), labels, "entities")  # type: ignore[arg-type]
    assert e[0] == e[2] == e[3] and e[1] != e[0] and e[4] not in (e[0], e[1])  # no entities: its own group
    assert get_preset("paper").loss.same_report == "mask"
