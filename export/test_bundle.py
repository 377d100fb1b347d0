"""Build a bundle from a *randomly initialised* model, for tests and for the quick start until a trained
default exists. Its model card says, in bold, that it is not a trained model.

    python -m export.test_bundle OUT_DIR [--model kmerl-test-micro] [--seed 0] [--no-onnx]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from kmerl_edge._labels import DEFAULT_LABEL_SETS

__all__ = ["build_random_bundle"]


def _name_vector(text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def build_random_bundle(
    out_dir: str | Path,
    *,
    model: str = "kmerl-test-micro",
    seed: int = 0,
    onnx: bool = True,
    overwrite: bool = True,
    signing_key: object = None,
) -> Path:
    """Write a random-weights bundle with the default label sets (queries: hashed pseudo-embeddings of the
    class names, projected by the random query projection) and, with ``onnx``, an fp32 ONNX artifact."""
    import tempfile

    import torch

    from kmerl_edge import PreprocessConfig
    from kmerl_edge._bundle import write_bundle
    from kmerl_edge._model import create_model

    torch.manual_seed(seed)
    m = create_model(model).eval()
    queries = {}
    with torch.no_grad():
        for name, classes in DEFAULT_LABEL_SETS.items():
            text = torch.from_numpy(np.stack([_name_vector(c, m.cfg.text_dim) for c in classes]))
            queries[name] = m.project_queries(text)
    extra = {}
    with tempfile.TemporaryDirectory() as td:
        if onnx:
            from ._onnx import export_onnx

            p = export_onnx(m, Path(td) / "model.onnx")
            extra["model.onnx"] = (p, {"backend": "onnxruntime", "precision": "fp32", "backend_name": "onnxruntime"})
        return write_bundle(
            out_dir,
            weights=m.state_dict(),
            model_config=m.cfg,
            preprocess_config=PreprocessConfig(),
            label_sets=DEFAULT_LABEL_SETS,
            queries=queries,
            trained=False,
            provenance={"source": "export.test_bundle", "seed": seed, "weights": "random initialisation"},
            extra_files=extra,
            description="Random-weights test bundle of K-MERL Edge. Not trained; for software tests only.",
            overwrite=overwrite,
            signing_key=signing_key,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.test_bundle", description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--model", default="kmerl-test-micro")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--sign-key", default=None, help="Ed25519 private key (PEM) to sign the bundle with")
    a = ap.parse_args(argv)
    p = build_random_bundle(a.out_dir, model=a.model, seed=a.seed, onnx=not a.no_onnx, signing_key=a.sign_key)
    print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
