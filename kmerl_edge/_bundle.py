"""Model bundles: a directory with ``manifest.json``, safetensors weights and queries, optional
backend artifacts (``model.onnx``, ``model.int8.onnx``, ``model.pte``, ``model.engine`` …) and a generated
``MODEL_CARD.md``.

Loading verifies the schema version and the SHA-256 of every listed file, never unpickles anything,
and refuses a bundle whose weights do not match its model config.

Manifest (schema version 1)::

    {
      "schema_version": 1,
      "format": "kmerl-edge-bundle",
      "model": {ModelConfig fields},
      "preprocess": {PreprocessConfig fields},
      "supported_lead_sets": [["I"], ["II"], ["I", "II"], ...] or "any",
      "max_leads": 12,
      "label_sets": {"ptbxl_superclass": ["normal ECG", ...], ...},
      "artifacts": {"weights.safetensors": {"sha256": ..., "kind": "weights", "backend": "torch",
                                           "precision": "fp32", "bytes": ...}, ...},
      "trained": true | false,
      "provenance": {...}, "metrics": {...}, "created": ISO time
    }
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._config import ModelConfig, check_weights
from ._errors import (
    BundleError,
    ConfigMismatchError,
    MissingArtifactError,
    TamperedArtifactError,
    UnsupportedSchemaError,
)
from ._leads import canonical_leads
from ._preprocess import PreprocessConfig

__all__ = [
    "SCHEMA_VERSION",
    "Artifact",
    "Bundle",
    "load_bundle",
    "write_bundle",
    "add_artifacts",
    "update_label_sets",
    "sha256_file",
]

SCHEMA_VERSION = 1
FORMAT = "kmerl-edge-bundle"
WEIGHTS = "weights.safetensors"
QUERIES = "queries.safetensors"
MANIFEST = "manifest.json"
CARD = "MODEL_CARD.md"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One file of a bundle and what it is for."""

    file: str
    sha256: str
    kind: str  # weights | queries | model
    backend: str  # torch | onnxruntime | executorch | tensorrt
    precision: str  # fp32 | fp16 | int8
    bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "sha256": self.sha256,
            "kind": self.kind,
            "backend": self.backend,
            "precision": self.precision,
            "bytes": self.bytes,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Artifact:
        core = {"sha256", "kind", "backend", "precision", "bytes"}
        try:
            return cls(
                file=name,
                sha256=str(d["sha256"]),
                kind=str(d["kind"]),
                backend=str(d["backend"]),
                precision=str(d.get("precision", "fp32")),
                bytes=int(d.get("bytes", 0)),
                extra={k: v for k, v in d.items() if k not in core},
            )
        except KeyError as exc:
            raise BundleError(f"artifact {name!r} in manifest lacks {exc}") from None


@dataclass
class Bundle:
    """A verified bundle. Weights and queries are numpy arrays (no torch needed)."""

    path: Path
    manifest: dict[str, Any]
    model_config: ModelConfig
    preprocess_config: PreprocessConfig
    label_sets: dict[str, tuple[str, ...]]
    queries: dict[str, np.ndarray]
    artifacts: dict[str, Artifact]

    @property
    def quality_gate_failed(self) -> str | None:
        """The reason when the export's quality gate failed (held-out AUC not clearly above chance)."""
        gate = self.manifest.get("metrics", {}).get("quality_gate", {})
        return str(gate.get("reason", "failed")) if gate.get("passed") is False else None

    @property
    def trained(self) -> bool:
        return bool(self.manifest.get("trained", False))

    def weights(self) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        return load_file(str(self.path / WEIGHTS))

    def artifacts_for(self, backend: str, precision: str | None = None) -> list[Artifact]:
        return [
            a
            for a in self.artifacts.values()
            if a.kind == "model" and a.backend == backend and (precision is None or a.precision == precision)
        ]

    def all_queries(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """All label sets' query vectors stacked (Q, width) and the (label set, class) of each row."""
        rows: list[np.ndarray] = []
        index: list[tuple[str, str]] = []
        for name, classes in self.label_sets.items():
            rows.append(self.queries[name])
            index.extend((name, c) for c in classes)
        return np.concatenate(rows, axis=0).astype(np.float32), index


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temp file and ``os.replace``: readers see the old file or the
    new one, never a partial one. The file is world-readable (mkstemp alone makes 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not path.is_dir():
        raise MissingArtifactError(f"bundle directory {path} does not exist")
    if not mpath.exists():
        raise MissingArtifactError(f"{path} has no {MANIFEST}; not a K-MERL Edge bundle")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise TamperedArtifactError(f"{mpath} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not a {FORMAT} manifest")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"bundle schema version {version!r} is not supported by this runtime (reads {SCHEMA_VERSION})"
        )
    return manifest


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Open and verify a bundle directory.

    Raises :class:`MissingArtifactError`, :class:`TamperedArtifactError`, :class:`UnsupportedSchemaError`
    or :class:`ConfigMismatchError`. ``verify=False`` skips only the hashing (never the shape checks).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(path).resolve()
    manifest = _read_manifest(root)
    arts = {name: Artifact.from_dict(name, d) for name, d in manifest.get("artifacts", {}).items()}
    for required in (WEIGHTS, QUERIES):
        if required not in arts:
            raise MissingArtifactError(f"manifest of {root} does not list {required}")
    for art in arts.values():
        fpath = root / art.file
        if Path(art.file).is_absolute() or ".." in Path(art.file).parts:
            raise TamperedArtifactError(f"artifact path {art.file!r} escapes the bundle")
        if not fpath.exists():
            raise MissingArtifactError(f"bundle {root.name} lists {art.file} but the file is missing")
        if verify:
            digest = sha256_file(fpath)
            if digest != art.sha256:
                raise TamperedArtifactError(
                    f"{art.file} in bundle {root.name} has SHA-256 {digest[:12]}…, manifest says "
                    f"{art.sha256[:12]}…; the file was modified or corrupted"
                )
    try:
        cfg = ModelConfig.from_dict(manifest["model"])
        pcfg = PreprocessConfig.from_dict(manifest["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigMismatchError(f"bundle {root.name}: bad model/preprocess config: {exc}") from None
    try:
        from safetensors import safe_open

        with safe_open(str(root / WEIGHTS), framework="numpy") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        queries = load_file(str(root / QUERIES))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TamperedArtifactError(f"bundle {root.name}: unreadable safetensors file: {exc}") from None
    check_weights(cfg, shapes, strict=False)
    label_sets = {k: tuple(v) for k, v in manifest.get("label_sets", {}).items()}
    for name, classes in label_sets.items():
        q = queries.get(name)
        if q is None:
            raise MissingArtifactError(f"bundle {root.name}: no query vectors for label set {name!r}")
        if q.shape != (len(classes), cfg.width):
            raise ConfigMismatchError(
                f"bundle {root.name}: queries of {name!r} have shape {q.shape}, expected "
                f"({len(classes)}, {cfg.width})"
            )
    return Bundle(root, manifest, cfg, pcfg, label_sets, queries, arts)


def _artifact(root: Path, name: str, kind: str, backend: str, precision: str, **extra: Any) -> Artifact:
    p = root / name
    return Artifact(name, sha256_file(p), kind, backend, precision, p.stat().st_size, dict(extra))


def _replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"{out} exists; pass overwrite=True to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_bundle(
    out_dir: str | Path,
    *,
    weights: Mapping[str, Any],
    model_config: ModelConfig,
    preprocess_config: PreprocessConfig,
    label_sets: Mapping[str, Sequence[str]],
    queries: Mapping[str, Any],
    trained: bool,
    supported_lead_sets: Sequence[Sequence[str]] | str = "any",
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, tuple[str | Path, dict[str, Any]]] | None = None,
    description: str = "",
    overwrite: bool = False,
    max_leads: int | None = None,
) -> Path:
    """Write a complete bundle atomically (built in a temp dir beside ``out_dir``, then renamed).

    ``max_leads`` (default: the model config's ``n_leads``) is the most leads the bundle serves at once;
    a device student exported for 1–3-lead patches sets it to 3.

    ``weights`` and ``queries`` are name → array (numpy or torch). ``extra_files`` maps an artifact file
    name to ``(source path, {"backend": ..., "precision": ..., ...})``; the file is copied in and hashed.
    """
    from safetensors.numpy import save_file

    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    w = {k: _to_numpy(v) for k, v in weights.items()}
    check_weights(model_config, {k: v.shape for k, v in w.items()}, strict=False)
    q = {k: _to_numpy(v).astype(np.float32) for k, v in queries.items()}
    ls = {k: [str(c) for c in v] for k, v in label_sets.items()}
    for name, classes in ls.items():
        if name not in q or q[name].shape != (len(classes), model_config.width):
            raise ConfigMismatchError(f"queries for label set {name!r} must be ({len(classes)}, width)")
    if isinstance(supported_lead_sets, str):
        lead_sets: Any = supported_lead_sets
    else:
        lead_sets = [list(canonical_leads(s)) for s in supported_lead_sets]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(w, str(tmp / WEIGHTS), metadata={"format": "pt", "model": model_config.name})
        save_file(q, str(tmp / QUERIES), metadata={"kind": "projected query vectors"})
        arts = {
            WEIGHTS: _artifact(tmp, WEIGHTS, "weights", "torch", "fp32"),
            QUERIES: _artifact(tmp, QUERIES, "queries", "any", "fp32"),
        }
        for name, (src, info) in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
            info = dict(info)
            arts[name] = _artifact(
                tmp, name, info.pop("kind", "model"), info.pop("backend"), info.pop("precision", "fp32"), **info
            )
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "format": FORMAT,
            "description": description,
            "model": model_config.to_dict(),
            "preprocess": preprocess_config.to_dict(),
            "supported_lead_sets": lead_sets,
            "max_leads": model_config.n_leads if max_leads is None else int(max_leads),
            "label_sets": ls,
            "artifacts": {a.file: a.to_dict() for a in arts.values()},
            "trained": bool(trained),
            "provenance": dict(provenance or {}),
            "metrics": dict(metrics or {}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        (tmp / CARD).write_text(render_model_card(manifest))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a shipped bundle is world-readable
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _rewrite_manifest(root: Path, manifest: dict[str, Any]) -> None:
    _atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    _atomic_write_text(root / CARD, render_model_card(manifest))


def add_artifacts(
    bundle_dir: str | Path,
    files: Mapping[str, tuple[str | Path, dict[str, Any]]],
    *,
    metrics: Mapping[str, Any] | None = None,
) -> Bundle:
    """Copy artifact files into a verified bundle and record them (and optional metrics) in its manifest."""
    b = load_bundle(bundle_dir)
    manifest = dict(b.manifest)
    arts = dict(manifest["artifacts"])
    for name, (src, info) in files.items():
        dst = b.path / name
        tmp = dst.with_name(f".{name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        info = dict(info)
        a = _artifact(b.path, name, info.pop("kind", "model"), info.pop("backend"), info.pop("precision", "fp32"), **info)
        arts[name] = a.to_dict()
    manifest["artifacts"] = arts
    if metrics:
        manifest["metrics"] = {**manifest.get("metrics", {}), **metrics}
    _rewrite_manifest(b.path, manifest)
    return load_bundle(b.path)


def update_label_sets(bundle_dir: str | Path, label_sets: Mapping[str, tuple[Sequence[str], Any]]) -> Bundle:
    """Add or replace label sets: name → (class names, projected queries (n_classes, width))."""
    from safetensors.numpy import save_file

    b = load_bundle(bundle_dir)
    queries = dict(b.queries)
    ls = {k: list(v) for k, v in b.label_sets.items()}
    for name, (classes, q) in label_sets.items():
        arr = _to_numpy(q).astype(np.float32)
        if arr.shape != (len(classes), b.model_config.width):
            raise ConfigMismatchError(f"queries for {name!r} must be ({len(classes)}, {b.model_config.width})")
        queries[name] = arr
        ls[name] = [str(c) for c in classes]
    tmp = b.path / f".{QUERIES}.tmp"
    save_file(queries, str(tmp), metadata={"kind": "projected query vectors"})
    os.replace(tmp, b.path / QUERIES)
    manifest = dict(b.manifest)
    manifest["label_sets"] = ls
    arts = dict(manifest["artifacts"])
    arts[QUERIES] = _artifact(b.path, QUERIES, "queries", "any", "fp32").to_dict()
    manifest["artifacts"] = arts
    _rewrite_manifest(b.path, manifest)
    return load_bundle(b.path)


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(np.asarray(v))


def render_model_card(manifest: Mapping[str, Any]) -> str:
    """The MODEL_CARD.md text generated from a manifest."""
    m = manifest["model"]
    lines = [f"# Model card: {m['name']}", ""]
    if not manifest.get("trained"):
        lines += [
            "> **RANDOMLY INITIALISED — NOT A TRAINED MODEL.** This bundle exists to test the software; its",
            "> scores mean nothing. Never ship it or describe it as a diagnostic model.",
            "",
        ]
    else:
        lines += [
            "> **Not a medical device.** Research software; not cleared for clinical use. Scores are not",
            "> diagnoses and must not be used to make clinical decisions.",
            "",
        ]
    gate = manifest.get("metrics", {}).get("quality_gate", {})
    if gate.get("passed") is False:
        lines += [
            "> **FAILED THE QUALITY GATE: its held-out AUC is not clearly above chance** "
            f"({gate.get('reason', '')}). Do not use its scores.",
            "",
        ]
    if manifest.get("description"):
        lines += [str(manifest["description"]), ""]
    lines += [
        "## Model",
        "",
        f"- architecture: K-MERL lead-aware encoder (width {m['width']}, depth {m['depth']}, heads {m['heads']}, "
        f"MLP {m['mlp_dim']}), cardiac query network ({m['query_layers']} layer(s), {m['query_heads']} heads)",
        f"- input: {m['n_samples']} samples per lead at {manifest['preprocess']['target_fs']:g} Hz, tokens of "
        f"{m['patch_len']} samples; any subset of up to {manifest.get('max_leads', 12)} leads, by name",
        f"- supported lead sets: {manifest.get('supported_lead_sets')}",
        "",
        "## Preprocessing",
        "",
        "```json",
        json.dumps(manifest["preprocess"], indent=2),
        "```",
        "",
        "## Label sets",
        "",
    ]
    for name, classes in manifest.get("label_sets", {}).items():
        lines.append(f"- `{name}`: {', '.join(classes)}")
    lines += ["", "## Artifacts", "", "| file | backend | precision | bytes | sha256 |", "| --- | --- | --- | --- | --- |"]
    for name, a in manifest.get("artifacts", {}).items():
        lines.append(f"| {name} | {a['backend']} | {a.get('precision', '')} | {a.get('bytes', '')} | {a['sha256'][:16]}… |")
    if manifest.get("metrics"):
        lines += ["", "## Measured metrics", "", "```json", json.dumps(manifest["metrics"], indent=2), "```"]
    if manifest.get("provenance"):
        lines += ["", "## Provenance", "", "```json", json.dumps(manifest["provenance"], indent=2), "```"]
    lines.append("")
    return "\n".join(lines)
