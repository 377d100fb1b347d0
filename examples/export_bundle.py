"""Export a trained teacher checkpoint into a device bundle (distil → int8 → ONNX → parity → save),
then load it on ONNX Runtime and score a record.

    pip install "kmerl-edge[export]"
    python examples/export_bundle.py --teacher runs/small --out my_bundle
    python examples/export_bundle.py --teacher random:kmerl-test-micro --student kmerl-test-micro \\
        --out /tmp/b --steps 5 --backends onnxruntime                       # plumbing only, ~20 s

A random teacher gives meaningless scores; it only shows the steps. `kmerl-export bundle` is the same
pipeline with every option.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import kmerl_edge

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="checkpoint directory, or random:MODEL")
    ap.add_argument("--out", required=True)
    ap.add_argument("--student", default="kmerl-student-s")
    ap.add_argument("--steps", type=int, default=1500, help="distillation steps")
    ap.add_argument("--backends", default="onnxruntime,onnxruntime-int8", help="artifacts to build and check")
    ap.add_argument("--data", default=str(REPO / "tests/fixtures/export/ptbxl_windows.npz"),
                    help="PTB-XL root or a windows .npz (distillation and parity data)")
    a = ap.parse_args()

    from export import DistillConfig, ExportConfig, export_bundle

    teacher: object = Path(a.teacher)
    if a.teacher.startswith("random:"):  # an untrained model: shows the pipeline, scores mean nothing
        import torch

        torch.manual_seed(0)
        teacher = kmerl_edge.create_model(a.teacher.split(":", 1)[1]).eval()
    cfg = ExportConfig(student=a.student, backends=tuple(a.backends.split(",")), qdq_for_tensorrt=False, latency_iters=20,
                       distill=replace(DistillConfig(), steps=a.steps, batch_size=8))
    path = export_bundle(teacher, a.out, cfg, data=a.data, overwrite=True)
    print("bundle:", path)

    clf = kmerl_edge.load(path, backend=a.backends.split(",")[-1])
    rec = kmerl_edge.read_record(REPO / "tests/fixtures/formats/apple_watch_ecg_cpsc2021_101_9.csv")
    pred = clf.predict(rec.signal, fs=rec.fs, leads=rec.leads)
    print("top:", pred.top(3))


if __name__ == "__main__":
    main()
