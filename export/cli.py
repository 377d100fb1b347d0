"""``kmerl-export``: teacher checkpoint → device bundle.

    kmerl-export bundle --teacher CKPT_DIR --out BUNDLE [--student kmerl-student-s] [--max-leads 3]
                        [--steps 2000] [--backends onnxruntime,onnxruntime-int8,executorch,executorch-int8]
                        [--data PTBXL_ROOT|windows.npz] [--overwrite] [--superclass-probe-run RUN]
    kmerl-export queries --bundle BUNDLE --label-set NAME --classes "a,b,c"
    kmerl-export tensorrt --bundle BUNDLE [--precision fp16,int8] [--batch 1,1,8]   (TensorRT machines)
    kmerl-export seal BUNDLE [--key PRIVATE.pem]      (re-)seal a bundle as its publisher (signs with --key)
    kmerl-export keygen PREFIX                        Ed25519 key pair PREFIX.pem (private) + PREFIX.pub.pem

``bundle``, ``queries`` and ``tensorrt`` take ``--sign-key PRIVATE.pem`` to sign the bundle they write;
devices pin the public key (``kmerl_edge.load(..., public_key=PUB.pem)``, ``--public-key``).

``--teacher random:MODEL`` distils a randomly initialised teacher (software checks only; the bundle and
its model card say it is not trained).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._errors import KmerlError

from ._config import DEFAULT_BACKENDS, DEFAULT_STUDENT, DistillConfig, ExportConfig, ParityConfig

__all__ = ["main", "build_tensorrt_engines"]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _teacher(arg: str) -> Any:
    if arg.startswith("random:"):
        import torch

        from kmerl_edge._model import create_model

        torch.manual_seed(0)
        return create_model(arg.split(":", 1)[1]).eval()
    return Path(arg)


def build_tensorrt_engines(
    bundle_dir: str | Path,
    *,
    precisions: Sequence[str] = ("fp16", "int8"),
    batch: tuple[int, int, int] = (1, 1, 8),
    data: Any = None,
    latency_iters: int = 200,
    signing_key: Any = None,
) -> Path:
    """Build TensorRT engines from a bundle's ``model.onnx`` (fp16) and ``model.qdq.onnx`` (int8), check
    them against the torch fp32 student on real windows, time them and add them to the bundle."""
    from kmerl_edge._backend_tensorrt import TensorRTBackend
    from kmerl_edge._backends import TorchBackend
    from kmerl_edge._bundle import add_artifacts, load_bundle

    from ._parity import ParityError, check_parity, median_latency_ms
    from ._pipeline import _bind, _groups, resolve_data
    from ._tensorrt import EngineConfig, build_engine, engine_file_name, profile_shapes

    b = load_bundle(bundle_dir)
    max_leads = b.max_leads
    q, _ = b.all_queries()
    windows = resolve_data(data)
    ev = windows.fold(10) if windows.folds is not None and len(windows.fold(10)) else windows
    # the same bounds the bundle was exported with (recorded in its provenance)
    recorded = b.spec.export_parity if b.spec is not None else {}
    pc = ParityConfig(top1_tie_tolerance=float(recorded.get("top1_tie_tolerance", 0.0)))
    lead_sets = [ls for ls in pc.lead_sets if len(ls) <= max_leads]
    ref_backend = TorchBackend(b)
    groups = _groups(b.label_sets)
    files: dict[str, tuple[str | Path, dict[str, Any]]] = {}
    failures = []
    with tempfile.TemporaryDirectory() as td:
        for prec in precisions:
            src = b.path / ("model.onnx" if prec == "fp16" else "model.qdq.onnx")
            if not src.exists():
                raise KmerlError(f"bundle has no {src.name} to build a {prec} engine from")
            cfg = EngineConfig(prec, max_leads, b.model_config.n_samples, b.model_config.width, q.shape[0],
                               max(64, q.shape[0]), batch)
            name = engine_file_name(prec)
            eng = build_engine(src, Path(td) / name, cfg)
            info: dict[str, Any] = {
                "backend": "tensorrt", "precision": prec, "backend_name": f"tensorrt-{prec}",
                "profiles_leads": [[min(s["lead_ids"][0]), max(s["lead_ids"][2])] for s in profile_shapes(cfg)],
                "max_leads": max_leads, "source_onnx": src.name, "batch_profile": list(batch),
            }
            files[name] = (eng, info)
            # parity and latency through the runtime backend, on a bundle copy holding the engine
            staged = add_artifacts(b.path, {name: (eng, info)}, signing_key=signing_key)
            be = TensorRTBackend(staged, None, prec)
            lat, par = {}, {}
            for ls in lead_sets:
                x, lid = ev.select(ls)
                res = check_parity(ref_backend.run(x, lid), be.run(x, lid), precision="int8", leads=ls,
                                   groups=groups, config=pc)
                par[str(len(ls))] = res.to_dict()
                if not res.ok:
                    failures.append(f"{name} {len(ls)} lead(s): SQNR {res.sqnr_db:.1f} dB, top-1 {res.top1_agreement:.1%}")
                lat[str(len(ls))] = round(
                    median_latency_ms(_bind(be.run, np.ascontiguousarray(x[:1]), lid), iters=latency_iters), 4
                )
            info.update({"latency_ms": lat, "parity": par, "parity_ok": all(p["ok"] for p in par.values())})
        if failures:
            # leave the bundle as it was: drop the engines we staged
            _drop_artifacts(b.path, list(files), signing_key)
            raise ParityError("TensorRT engines failed parity:\n  " + "\n  ".join(failures))
        add_artifacts(b.path, files, metrics={"tensorrt": {n: i for n, (_, i) in files.items()}},
                      signing_key=signing_key)
    return b.path


def _drop_artifacts(bundle_dir: Path, names: list[str], signing_key: Any = None) -> None:
    from kmerl_edge._bundle import drop_artifacts

    drop_artifacts(bundle_dir, names, signing_key=signing_key)


def _keygen(prefix: str) -> tuple[Path, Path]:
    """Write an Ed25519 key pair: ``PREFIX.pem`` (private, mode 0600) and ``PREFIX.pub.pem``."""
    from kmerl_edge._errors import require

    require("cryptography", "sign")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv, pub = Path(f"{prefix}.pem"), Path(f"{prefix}.pub.pem")
    if priv.exists() or pub.exists():
        raise KmerlError(f"{priv} or {pub} exists; not overwriting a key")
    sk = Ed25519PrivateKey.generate()
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    pub.write_bytes(sk.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _probe_data(run: str, mode: str) -> Any:
    """The superclass head's training data from a default-model work directory (shards + corpus.csv)."""
    from kmerl_edge._errors import ConfigError
    from kmerl_edge._labels import DEFAULT_LABEL_SETS

    from ._corpus import read_corpus_csv
    from ._probe import ProbeConfig, ProbeData, probe_training_windows

    root = Path(run)
    if not (root / "corpus.csv").is_file() or not (root / "shards").is_dir():
        raise ConfigError(f"--superclass-probe-run {run}: needs corpus.csv and shards/ (an export.default_model work dir)")
    cfg = ProbeConfig(mode=mode)
    classes = tuple(DEFAULT_LABEL_SETS[cfg.label_set])
    x, y, ids = probe_training_windows(root / "shards", read_corpus_csv(root / "corpus.csv").records, classes)
    return ProbeData(x, y, classes, tuple(ids), cfg)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kmerl-export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="teacher checkpoint → device bundle (distil → lower → save)")
    b.add_argument("--teacher", required=True, help="checkpoint dir, or random:MODEL for a software check")
    b.add_argument("--out", required=True)
    b.add_argument("--student", default=DEFAULT_STUDENT)
    b.add_argument("--max-leads", type=int, default=3)
    b.add_argument("--steps", type=int, default=DistillConfig.steps)
    b.add_argument("--batch-size", type=int, default=DistillConfig.batch_size)
    b.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    b.add_argument("--onnx-int8", default="auto", choices=["auto", "dynamic", "static"])
    b.add_argument("--executorch-int8", default="auto", choices=["auto", "static", "dynamic"])
    b.add_argument("--no-qdq", action="store_true", help="skip the int8 QDQ ONNX for TensorRT")
    b.add_argument("--entities", default="", help="comma-separated entity names to distil as extra queries")
    b.add_argument("--data", default=None, help="PTB-XL root or windows .npz (default ../shared/data/ptbxl)")
    b.add_argument("--latency-iters", type=int, default=200)
    b.add_argument("--top1-tie-tolerance", type=float, default=0.0,
                   help="logit margin under which the reference's top classes count as tied (0: strict)")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--superclass-probe-run", default=None, metavar="RUN",
                   help="fit the linear superclass head (export._probe) on the training split of RUN, an "
                        "`export.default_model` work directory (its shards/ and corpus.csv)")
    b.add_argument("--superclass-probe-mode", choices=("replace", "mean"), default="replace")
    q = sub.add_parser("queries", help="add a label set (precomputed query vectors) to a bundle")
    q.add_argument("--bundle", required=True)
    q.add_argument("--label-set", required=True)
    q.add_argument("--classes", required=True, help='comma-separated class names, e.g. "a,b,c"')
    q.add_argument("--text-encoder", default=None, help="encoder dir (default: the one the bundle records)")
    t = sub.add_parser("tensorrt", help="build TensorRT engines from a bundle's ONNX files (TensorRT machines)")
    t.add_argument("--bundle", required=True)
    t.add_argument("--precision", default="fp16,int8")
    t.add_argument("--batch", default="1,1,8", help="min,opt,max batch of the optimisation profiles")
    t.add_argument("--data", default=None)
    s = sub.add_parser("seal", help="(re-)seal a bundle as its publisher; --key signs it (Ed25519)")
    s.add_argument("bundle")
    s.add_argument("--key", default=None, help="Ed25519 private key (PEM) to sign with")
    s.add_argument("--upgrade", action="store_true", help="rewrite a schema-1 manifest as schema 2 first")
    f = sub.add_parser("af-fusion", help="fit the AF fusion (model AF logit + rhythm evidence) on the training "
                       "split of the corpus in --data and add it to a bundle as af_fusion.json")
    f.add_argument("--bundle", required=True)
    f.add_argument("--data", required=True, help="the shared data root (../shared/data)")
    f.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic fit")
    f.add_argument("--no-event-rule", action="store_true",
                   help="do not tune an AF event rule on the training Holter patients (sessions keep the default)")
    st = sub.add_parser("superclass-stack", help="fit the superclass stack (the superclass head's logits + classical "
                        "ECG measurements) on the bundle's training patients' PTB-XL records in --data and add it "
                        "to a bundle as superclass_stack.json")
    st.add_argument("--bundle", required=True)
    st.add_argument("--data", required=True, help="the shared data root (../shared/data)")
    g = sub.add_parser("keygen", help="write an Ed25519 key pair PREFIX.pem / PREFIX.pub.pem")
    g.add_argument("prefix")
    for p in (b, q, t, f, st):
        p.add_argument("--sign-key", default=None, help="Ed25519 private key (PEM) to sign the bundle with")
    from kmerl_edge._cli_common import add_common_args

    add_common_args(ap, prog="kmerl-export", subparsers=[b, q, t, f, st])
    return ap


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    from kmerl_edge._cli_common import configure

    configure(a)
    try:
        if a.cmd == "bundle":
            from ._pipeline import export_bundle

            cfg = ExportConfig(
                student=a.student, max_leads=a.max_leads,
                distill=replace(DistillConfig(), steps=a.steps, batch_size=a.batch_size),
                backends=tuple(_csv(a.backends)), onnx_int8=a.onnx_int8, executorch_int8=a.executorch_int8,
                qdq_for_tensorrt=not a.no_qdq, entities=tuple(_csv(a.entities)), latency_iters=a.latency_iters,
                parity=ParityConfig(top1_tie_tolerance=a.top1_tie_tolerance),
            )
            probe = _probe_data(a.superclass_probe_run, a.superclass_probe_mode) if a.superclass_probe_run else None
            print(export_bundle(_teacher(a.teacher), a.out, cfg, data=a.data, overwrite=a.overwrite,
                                signing_key=a.sign_key, superclass_probe=probe))
        elif a.cmd == "queries":
            from ._pipeline import add_label_set

            print(add_label_set(a.bundle, a.label_set, _csv(a.classes), text_encoder=a.text_encoder,
                                signing_key=a.sign_key))
        elif a.cmd == "af-fusion":
            import json

            from ._fusion import add_af_fusion

            print(json.dumps(add_af_fusion(a.bundle, Path(a.data), C=a.C, signing_key=a.sign_key,
                                           tune_events=not a.no_event_rule), indent=1))
        elif a.cmd == "superclass-stack":
            import json

            from ._stack import add_superclass_stack

            print(json.dumps(add_superclass_stack(a.bundle, Path(a.data), signing_key=a.sign_key), indent=1))
        elif a.cmd == "seal":
            from kmerl_edge._bundle import seal_bundle

            print(f"sha256:{seal_bundle(a.bundle, a.key, upgrade=a.upgrade)}")
        elif a.cmd == "keygen":
            priv, pub = _keygen(a.prefix)
            print(f"private key {priv} (keep it secret), public key {pub} (pin it on devices)")
        else:
            bt = tuple(int(v) for v in _csv(a.batch))
            if len(bt) != 3:
                raise SystemExit("--batch needs min,opt,max")
            print(build_tensorrt_engines(a.bundle, precisions=_csv(a.precision), batch=(bt[0], bt[1], bt[2]),
                                         data=a.data, signing_key=a.sign_key))
    except (KmerlError, FileNotFoundError, ValueError) as exc:
        print(f"kmerl-export: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
