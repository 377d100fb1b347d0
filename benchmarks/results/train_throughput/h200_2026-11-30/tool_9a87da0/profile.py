"""torch.profiler over 5 bare training steps of the paper preset's model (bf16, GPU-resident batch):
``python profile.py BATCH`` prints the ops by host time and by GPU time."""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from kmerl_edge._model import create_model
from trainer._config import PRESETS
from trainer._masking import sample_token_keep
from trainer.train import KMERLTrainModule

dev = torch.device("cuda")
B = int(sys.argv[1])
cfg = PRESETS["paper"].override(batch_size=B)
torch.manual_seed(0)
model = create_model(cfg.model, text_dim=384, temperature=cfg.loss.temperature).to(dev)
mod = KMERLTrainModule(model, None, cfg).to(dev)
opt = torch.optim.AdamW([p for p in mod.parameters() if p.requires_grad], lr=cfg.lr)
sig = torch.randn(B, 12, 5000, device=dev)
rep = torch.randn(B, 384, device=dev)
ent = torch.randn(40, 384, device=dev)
y = (torch.rand(B, 40, device=dev) > 0.9).float()
present = torch.ones(B, 12, dtype=torch.bool)
g = torch.Generator().manual_seed(0)
keep, kmask, _kept = sample_token_keep(present, tokens_per_lead=model.cfg.tokens_per_lead, cfg=cfg.masking, generator=g)
keep, kmask = keep.to(dev), kmask.to(dev)
groups = torch.arange(B, device=dev)


def step() -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _, _ = mod(sig, keep, kmask, rep, ent, y, "mean", groups)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(mod.parameters(), 1.0)
    opt.step()


for _ in range(5):
    step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
    for _ in range(5):
        step()
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))
