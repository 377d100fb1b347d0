"""Model bundles: a directory with ``manifest.json``, safetensors weights and queries, optional
backend artifacts (``model.onnx``, ``model.int8.onnx``, ``model.pte``, ``model.engine`` …), a generated
``MODEL_CARD.md`` and ``SEAL.json``.

A bundle is trusted only as a whole. ``SEAL.json`` lists the SHA-256 and size of *every* file of the
directory (the manifest and the model card included) and a digest over that list; it may carry an
Ed25519 signature of the digest (``pip install 'kmerl-edge[sign]'``). Loading

- refuses a directory entry the seal does not list (:class:`UnlistedFileError`), a symbolic link, FIFO,
  device or anything else that is not a plain file inside the bundle (:class:`UnsafeArtifactError`);
- checks the manifest's bytes, then every artifact, against the seal (:class:`TamperedArtifactError`);
- with a pinned public key (``load(..., public_key=...)``), requires a valid signature
  (:class:`SignatureError`); with a pinned ``digest``, requires that digest;
- reads each file once, with a size bound, and never follows a link: backends get the *bytes that were
  verified* (:meth:`Bundle.read`), never a path to re-open, so a concurrent writer cannot slip an
  unverified file in between check and use;
- never unpickles anything and refuses weights that do not match the model config.

Without a signature the seal detects corruption and careless edits, not an attacker who can write the
directory (they can re-seal it): pin a digest or a public key for that. ``kmerl-edge info`` says which.

Manifest (schema version 2)::

    {
      "schema_version": 2,
      "format": "kmerl-edge-bundle",
      "model": {ModelConfig fields},
      "preprocess": {PreprocessConfig fields},
      "supported_lead_sets": [["I"], ["II"], ["I", "II"], ...] or "any",
      "max_leads": 3,
      "label_sets": {"ptbxl_superclass": ["normal ECG", ...], ...},
      "artifacts": {"weights.safetensors": {"sha256": ..., "kind": "weights", "backend": "torch",
                                           "precision": "fp32", "bytes": ...}, ...},
      "trained": true | false,
      "provenance": {...}, "metrics": {...}, "created": ISO time, "description": "..."
    }

An ONNX model whose tensors live in external-data files lists them in its artifact entry
(``"external_data": ["model.onnx.data"]``); each of those files is an artifact of kind ``external-data``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._config import ModelConfig, check_weights
from ._errors import (
    BundleError,
    ConfigMismatchError,
    ManifestError,
    MissingArtifactError,
    SignatureError,
    TamperedArtifactError,
    UnlistedFileError,
    UnsafeArtifactError,
    UnsupportedSchemaError,
    require,
)
from ._leads import canonical_leads
from ._preprocess import PreprocessConfig, QualityConfig

__all__ = [
    "SCHEMA_VERSION",
    "Artifact",
    "Bundle",
    "Manifest",
    "Seal",
    "load_bundle",
    "write_bundle",
    "seal_bundle",
    "add_artifacts",
    "update_label_sets",
    "sha256_file",
    "public_key_id",
]

SCHEMA_VERSION = 2
FORMAT = "kmerl-edge-bundle"
WEIGHTS = "weights.safetensors"
QUERIES = "queries.safetensors"
MANIFEST = "manifest.json"
CARD = "MODEL_CARD.md"
SEAL = "SEAL.json"
SEAL_FORMAT = "kmerl-edge-seal"
SEAL_VERSION = 1
_SIGNED_PREFIX = b"kmerl-edge bundle seal v1\n"
PUBLIC_KEY_ENV = "KMERL_EDGE_PUBLIC_KEY"
MAX_MANIFEST_BYTES = 16 << 20
MAX_SEAL_BYTES = 4 << 20
#: Bundle files have flat, plain names: no directories, no leading dot, no separators.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,200}")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------- safe file reads


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise UnsafeArtifactError(
            f"bundle file name {name!r} is not a plain file name inside the bundle (no paths, no leading dot)"
        )


def _read_regular(root: Path, name: str, max_bytes: int) -> bytes:
    """Read ``root/name`` once: never through a symbolic link, only a regular file, at most ``max_bytes``.

    Opening is non-blocking (a FIFO cannot hang it) and checked with ``fstat`` on the open descriptor, so
    what is checked is what is read."""
    _check_name(name)
    path = root / name
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not hasattr(os, "O_NOFOLLOW") and path.is_symlink():  # pragma: no cover - Windows
        raise UnsafeArtifactError(f"{name} in bundle {root.name} is a symbolic link; bundles hold plain files")
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MissingArtifactError(f"bundle {root.name} lists {name} but the file is missing") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise UnsafeArtifactError(
                f"{name} in bundle {root.name} is a symbolic link; bundles hold plain files only"
            ) from None
        raise UnsafeArtifactError(f"cannot open {name} in bundle {root.name}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeArtifactError(
                f"{name} in bundle {root.name} is not a regular file (FIFO, device or directory); refused"
            )
        if st.st_size > max_bytes:
            raise TamperedArtifactError(
                f"{name} in bundle {root.name} has {st.st_size} bytes, more than the {max_bytes} it may have"
            )
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 22))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise TamperedArtifactError(f"{name} in bundle {root.name} grew beyond {max_bytes} bytes while read")
    return data


def artifact_json_object(data: bytes, name: str) -> dict[str, Any]:
    """The verified bytes of the bundle artifact ``name`` (:meth:`Bundle.read`) as a JSON object, or
    :class:`BundleError` naming the file."""
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise BundleError(f"{name} must hold a JSON object")
    return d


def _loads_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TamperedArtifactError(f"{what} is not valid JSON: {str(exc)[:200]}") from None


# ------------------------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifact:
    """One file of a bundle and what it is for."""

    file: str
    sha256: str
    kind: str  # weights | queries | model | external-data | onnx-qdq
    backend: str  # torch | onnxruntime | executorch | tensorrt | any
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

    @property
    def external_data(self) -> tuple[str, ...]:
        """Files this model reads besides itself (ONNX external data), each also an artifact."""
        return tuple(str(x) for x in self.extra.get("external_data", ()) or ())

    @classmethod
    def from_dict(cls, name: str, d: Any) -> Artifact:
        core = {"sha256", "kind", "backend", "precision", "bytes"}
        if not isinstance(d, Mapping):
            raise ManifestError(f"artifact {name!r} in manifest is not an object")
        missing = sorted(core - set(d))
        if missing:
            raise ManifestError(f"artifact {name!r} in manifest lacks {', '.join(missing)}")
        sha, nbytes = d["sha256"], d["bytes"]
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ManifestError(f"artifact {name!r}: sha256 is not 64 hex digits")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ManifestError(f"artifact {name!r}: bytes is not a non-negative integer")
        for k in ("kind", "backend", "precision"):
            if not isinstance(d[k], str):
                raise ManifestError(f"artifact {name!r}: {k} is not a string")
        ext = d.get("external_data", [])
        if not isinstance(ext, list) or not all(isinstance(x, str) for x in ext):
            raise ManifestError(f"artifact {name!r}: external_data is not a list of file names")
        return cls(name, sha, d["kind"], d["backend"], d["precision"], nbytes,
                   {k: v for k, v in d.items() if k not in core})


# -------------------------------------------------------------------------------------- typed manifest


def _dataclass_from(cls: Any, d: Any, what: str, defaulted: list[str], prefix: str = "") -> dict[str, Any]:
    """Keyword arguments for dataclass ``cls`` from mapping ``d``: unknown keys are an error; missing keys
    take the dataclass default and are recorded in ``defaulted`` (``kmerl-edge info`` lists them)."""
    if not isinstance(d, Mapping):
        raise ManifestError(f"manifest field {what!r} is not an object")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigMismatchError(f"manifest {what}: unknown keys {unknown}")
    optional = set(getattr(cls, "optional_fields", ()))  # absent by design (e.g. no superclass head)
    defaulted.extend(prefix + f.name for f in fields(cls) if f.name not in d and f.name not in optional)
    return dict(d)


@dataclass(frozen=True)
class Manifest:
    """The manifest of a bundle, read once, with every field typed and checked.

    ``supported_lead_sets`` is ``None`` when the bundle serves any subset of up to ``max_leads`` leads.
    ``defaulted`` names config fields the manifest does not state (the runtime's default is used).
    """

    schema_version: int
    model: ModelConfig
    preprocess: PreprocessConfig
    max_leads: int
    supported_lead_sets: tuple[tuple[str, ...], ...] | None
    label_sets: dict[str, tuple[str, ...]]
    artifacts: dict[str, Artifact]
    trained: bool
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    defaulted: tuple[str, ...] = ()

    @property
    def export_parity(self) -> dict[str, Any]:
        """The parity bounds the bundle was exported with (``provenance.export_config.parity``)."""
        ec = self.provenance.get("export_config")
        par = ec.get("parity") if isinstance(ec, Mapping) else None
        return dict(par) if isinstance(par, Mapping) else {}

    @property
    def text_encoder_spec(self) -> str | None:
        spec = self.provenance.get("text_encoder_spec")
        return str(spec) if spec else None

    @classmethod
    def from_dict(cls, m: Any) -> Manifest:
        if not isinstance(m, Mapping) or m.get("format") != FORMAT:
            raise BundleError(f"not a {FORMAT} manifest")
        version = m.get("schema_version")
        if version != SCHEMA_VERSION:
            hint = " (re-seal it with `kmerl-export seal BUNDLE`)" if version == 1 else ""
            raise UnsupportedSchemaError(
                f"bundle schema version {version!r} is not supported by this runtime (reads {SCHEMA_VERSION})"
                + hint
            )
        for key in ("model", "preprocess", "max_leads", "label_sets", "artifacts", "trained",
                    "supported_lead_sets"):
            if key not in m:
                raise ManifestError(f"manifest lacks the required field {key!r}")
        defaulted: list[str] = []
        try:
            cfg = ModelConfig.from_dict(_dataclass_from(ModelConfig, m["model"], "model", defaulted, "model."))
            pd = _dataclass_from(PreprocessConfig, m["preprocess"], "preprocess", defaulted, "preprocess.")
            qd = _dataclass_from(QualityConfig, pd.get("quality", {}), "preprocess.quality", defaulted,
                                 "preprocess.quality.")
            pcfg = PreprocessConfig(**{**pd, "quality": QualityConfig(**qd)})
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise ConfigMismatchError(f"bad model/preprocess config: {exc}") from None
        max_leads = m["max_leads"]
        if not isinstance(max_leads, int) or isinstance(max_leads, bool) or not 1 <= max_leads <= cfg.n_leads:
            raise ManifestError(f"max_leads {max_leads!r} is not an integer in 1..{cfg.n_leads}")
        sls = m["supported_lead_sets"]
        lead_sets: tuple[tuple[str, ...], ...] | None
        if sls == "any":
            lead_sets = None
        elif isinstance(sls, list) and sls and all(isinstance(s, list) for s in sls):
            lead_sets = tuple(canonical_leads(s) for s in sls)
        else:
            raise ManifestError("supported_lead_sets is neither \"any\" nor a list of lead lists")
        ls = m["label_sets"]
        if not isinstance(ls, Mapping) or not ls or not all(
            isinstance(v, list) and v and all(isinstance(c, str) for c in v) for v in ls.values()
        ):
            raise ManifestError("label_sets is not a non-empty object of non-empty class-name lists")
        label_sets = {str(k): tuple(v) for k, v in ls.items()}
        for name, classes in label_sets.items():
            if len(set(classes)) != len(classes):
                raise ManifestError(f"label set {name!r} names a class twice")
        arts = m["artifacts"]
        if not isinstance(arts, Mapping):
            raise ManifestError("artifacts is not an object")
        artifacts = {str(k): Artifact.from_dict(str(k), v) for k, v in arts.items()}
        for a in artifacts.values():
            for x in a.external_data:
                if x not in artifacts:
                    raise ManifestError(f"{a.file} reads external data {x!r}, which is not a listed artifact")
        if not isinstance(m["trained"], bool):
            raise ManifestError("trained is not true/false")
        prov, met = m.get("provenance", {}), m.get("metrics", {})
        if not isinstance(prov, Mapping) or not isinstance(met, Mapping):
            raise ManifestError("provenance and metrics must be objects")
        return cls(
            schema_version=int(version), model=cfg, preprocess=pcfg, max_leads=max_leads,
            supported_lead_sets=lead_sets, label_sets=label_sets, artifacts=artifacts, trained=m["trained"],
            description=str(m.get("description", "")), provenance=dict(prov), metrics=dict(met),
            created=str(m.get("created", "")), defaulted=tuple(defaulted),
        )


# ------------------------------------------------------------------------------------------------ seal


def _canonical(files: Mapping[str, Mapping[str, Any]]) -> bytes:
    body = {k: {"sha256": str(v["sha256"]), "bytes": int(v["bytes"])} for k, v in sorted(files.items())}
    return json.dumps({"format": SEAL_FORMAT, "version": SEAL_VERSION, "files": body}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def _signed_message(digest: str) -> bytes:
    return _SIGNED_PREFIX + digest.encode("ascii")


@dataclass(frozen=True)
class Seal:
    """What ``SEAL.json`` says and what loading established about it."""

    files: dict[str, tuple[str, int]]  # name -> (sha256, bytes)
    digest: str
    key_id: str | None = None  # of the signing key, when signed
    signature_verified: bool = False  # True only against a key the caller pinned
    digest_pinned: bool = False

    @property
    def signed(self) -> bool:
        return self.key_id is not None

    def describe(self) -> list[str]:
        """Truthful lines for ``kmerl-edge info``."""
        lines = [f"integrity: all {len(self.files)} files match SEAL.json (bundle digest sha256:{self.digest})"]
        if self.signature_verified:
            lines.append(f"signature: Ed25519 by key {self.key_id}, verified against the pinned public key")
        elif self.signed:
            lines.append(
                f"signature: Ed25519 by key {self.key_id} present but NOT verified (no public key pinned; "
                "pass --public-key to check it)"
            )
        else:
            lines.append(
                "signature: none; the seal detects corruption, not someone who can write this directory "
                "(they can re-seal it): pin the digest or sign the bundle"
            )
        if self.digest_pinned:
            lines.append("digest: equal to the pinned digest")
        return lines


def public_key_id(raw: bytes) -> str:
    """Short id of a raw 32-byte Ed25519 public key (first 16 hex digits of its SHA-256)."""
    return _sha256(raw)[:16]


def _public_key(key: Any) -> Any:
    """An ``Ed25519PublicKey`` from a key object, PEM bytes/text, raw 32 bytes or a path to a PEM file."""
    require("cryptography", "sign")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    data: bytes
    if isinstance(key, (bytes, bytearray)):
        data = bytes(key)
    elif isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        data = key.encode()
    elif isinstance(key, (str, Path)):
        try:
            data = Path(key).read_bytes()
        except OSError as exc:
            raise SignatureError(f"cannot read public key {key}: {exc.strerror}") from None
    else:
        raise SignatureError(f"public key of type {type(key).__name__} is not supported")
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        pk = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}") from None
    if not isinstance(pk, Ed25519PublicKey):
        raise SignatureError("the pinned public key is not an Ed25519 key")
    return pk


def _private_key(key: Any) -> Any:
    require("cryptography", "sign")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(key, Ed25519PrivateKey):
        return key
    try:
        data = bytes(key) if isinstance(key, (bytes, bytearray)) else Path(key).read_bytes()
        sk = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot load the Ed25519 signing key: {exc}") from None
    if not isinstance(sk, Ed25519PrivateKey):
        raise SignatureError("the signing key is not an Ed25519 private key")
    return sk


def _raw_public(pk: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = pk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def _list_dir(root: Path) -> set[str]:
    try:
        return set(os.listdir(root))
    except OSError as exc:
        raise MissingArtifactError(f"cannot list bundle directory {root}: {exc.strerror}") from None


def _write_seal(root: Path, signing_key: Any = None) -> str:
    """Hash every file of ``root`` (all must be plain files with plain names) and write ``SEAL.json``."""
    files: dict[str, dict[str, Any]] = {}
    for name in sorted(_list_dir(root) - {SEAL}):
        data = _read_regular(root, name, 1 << 40)
        files[name] = {"sha256": _sha256(data), "bytes": len(data)}
    digest = _sha256(_canonical(files))
    doc: dict[str, Any] = {"format": SEAL_FORMAT, "version": SEAL_VERSION, "algorithm": "sha256",
                           "digest": digest, "files": files}
    if signing_key is not None:
        sk = _private_key(signing_key)
        doc["signature"] = {
            "algorithm": "ed25519",
            "key_id": public_key_id(_raw_public(sk.public_key())),
            "value": base64.b64encode(sk.sign(_signed_message(digest))).decode("ascii"),
        }
    atomic_write_bytes(root / SEAL, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    return digest


def _read_seal(root: Path, public_key: Any, digest: str | None) -> Seal:
    try:
        raw = _read_regular(root, SEAL, MAX_SEAL_BYTES)
    except MissingArtifactError:
        raise MissingArtifactError(
            f"bundle {root.name} has no {SEAL}: it is not sealed (an older bundle? re-seal it with "
            "`kmerl-export seal BUNDLE`)"
        ) from None
    doc = _loads_json(raw, f"{SEAL} of bundle {root.name}")
    if not isinstance(doc, dict) or doc.get("format") != SEAL_FORMAT or doc.get("version") != SEAL_VERSION:
        raise TamperedArtifactError(f"{SEAL} of bundle {root.name} is not a {SEAL_FORMAT} v{SEAL_VERSION} file")
    if doc.get("algorithm") != "sha256":  # the only one this runtime verifies with
        raise TamperedArtifactError(
            f"{SEAL} of bundle {root.name} names hash algorithm {doc.get('algorithm')!r}; expected 'sha256'"
        )
    files_doc = doc.get("files")
    if not isinstance(files_doc, dict) or not files_doc:
        raise TamperedArtifactError(f"{SEAL} of bundle {root.name} lists no files")
    files: dict[str, tuple[str, int]] = {}
    for name, v in files_doc.items():
        _check_name(name)
        if (not isinstance(v, dict) or not isinstance(v.get("sha256"), str) or not isinstance(v.get("bytes"), int)
                or isinstance(v.get("bytes"), bool) or v["bytes"] < 0):
            raise TamperedArtifactError(f"{SEAL} entry of {name!r} is malformed")
        files[name] = (v["sha256"], v["bytes"])
    computed = _sha256(_canonical(files_doc))
    if doc.get("digest") != computed:
        raise TamperedArtifactError(f"{SEAL} of bundle {root.name}: its digest does not match its file list")
    if digest is not None and digest.removeprefix("sha256:") != computed:
        raise TamperedArtifactError(
            f"bundle {root.name} has digest sha256:{computed}, not the pinned sha256:{digest.removeprefix('sha256:')}"
        )
    sig = doc.get("signature")
    key_id = None
    verified = False
    if sig is not None:
        if not isinstance(sig, dict) or sig.get("algorithm") != "ed25519" or not isinstance(sig.get("value"), str):
            raise SignatureError(f"{SEAL} of bundle {root.name} has a malformed signature entry")
        key_id = str(sig.get("key_id", "?"))
    if public_key is not None:
        pk = _public_key(public_key)
        pinned_id = public_key_id(_raw_public(pk))
        if sig is None:
            raise SignatureError(f"bundle {root.name} is not signed, but a public key ({pinned_id}) is pinned")
        from cryptography.exceptions import InvalidSignature

        try:
            pk.verify(base64.b64decode(sig["value"], validate=True), _signed_message(computed))
        except (InvalidSignature, ValueError):
            raise SignatureError(
                f"bundle {root.name}: the signature does not verify against the pinned public key {pinned_id} "
                f"(signed by {key_id})"
            ) from None
        verified = True
        key_id = pinned_id
    return Seal(files, computed, key_id, verified, digest is not None)


# ---------------------------------------------------------------------------------------------- bundle


@dataclass
class Bundle:
    """A verified bundle. Weights and queries are numpy arrays (no torch needed).

    ``manifest`` is the manifest as stored (a dict); ``spec`` the typed :class:`Manifest`; ``seal`` what
    was verified. Backends read artifact bytes through :meth:`read`, which checks them against the seal.
    """

    path: Path
    manifest: dict[str, Any]
    model_config: ModelConfig
    preprocess_config: PreprocessConfig
    label_sets: dict[str, tuple[str, ...]]
    queries: dict[str, np.ndarray]
    artifacts: dict[str, Artifact]
    spec: Manifest | None = None
    seal: Seal | None = None

    @property
    def quality_gate_failed(self) -> str | None:
        """The reason when the export's quality gate failed (held-out AUC not clearly above chance)."""
        gate = self.manifest.get("metrics", {}).get("quality_gate", {})
        return str(gate.get("reason", "failed")) if gate.get("passed") is False else None

    @property
    def trained(self) -> bool:
        return self.spec.trained if self.spec is not None else bool(self.manifest.get("trained", False))

    @property
    def max_leads(self) -> int:
        """The most leads the bundle serves at once (required in the manifest)."""
        if self.spec is None:  # pragma: no cover - bundles are built by load_bundle
            raise ManifestError("bundle has no typed manifest")
        return self.spec.max_leads

    def read(self, name: str) -> bytes:
        """The bytes of bundle file ``name``, read once and checked against the seal (hand these to a
        backend; never re-open the path)."""
        if self.seal is None or name not in self.seal.files:
            raise MissingArtifactError(f"{name} is not a sealed file of bundle {self.path.name}")
        sha, n = self.seal.files[name]
        data = _read_regular(self.path, name, n)
        if len(data) != n or _sha256(data) != sha:
            raise TamperedArtifactError(
                f"{name} in bundle {self.path.name} has SHA-256 {_sha256(data)[:12]}…, the seal says "
                f"{sha[:12]}…; the file was modified or corrupted"
            )
        return data

    def weights(self) -> dict[str, np.ndarray]:
        from safetensors.numpy import load

        return load(self.read(WEIGHTS))

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


def load_bundle(
    path: str | Path, *, verify: bool = True, public_key: Any = None, digest: str | None = None
) -> Bundle:
    """Open and verify a bundle directory as a whole.

    ``public_key`` (an Ed25519 public key: PEM file path, PEM bytes, raw 32 bytes or a ``cryptography``
    key object; default: the PEM file named by ``$KMERL_EDGE_PUBLIC_KEY``, so every command of a device
    can be pinned at once) requires a valid signature by that key; ``digest`` requires that bundle digest.
    ``verify=False`` skips hashing the artifacts at load time (backends still verify what they read).

    Raises :class:`MissingArtifactError`, :class:`TamperedArtifactError` (and its subclasses
    :class:`UnlistedFileError`, :class:`UnsafeArtifactError`, :class:`SignatureError`),
    :class:`UnsupportedSchemaError`, :class:`ManifestError` or :class:`ConfigMismatchError`.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if public_key is None and os.environ.get(PUBLIC_KEY_ENV):
        public_key = os.environ[PUBLIC_KEY_ENV]
    root = Path(path).resolve()
    if not root.is_dir():
        raise MissingArtifactError(f"bundle directory {root} does not exist")
    if not (root / MANIFEST).exists() and not (root / MANIFEST).is_symlink():
        raise MissingArtifactError(f"{root} has no {MANIFEST}; not a K-MERL Edge bundle")
    seal = _read_seal(root, public_key, digest)
    present = _list_dir(root) - {SEAL}
    unlisted = sorted(present - set(seal.files))
    if unlisted:
        raise UnlistedFileError(
            f"bundle {root.name} holds file(s) its seal does not list: {', '.join(unlisted)}; every file a "
            "backend reads must be listed and verified (remove them, or re-seal the bundle)"
        )
    missing = sorted(set(seal.files) - present)
    if missing:
        raise MissingArtifactError(f"bundle {root.name} lists {', '.join(missing)} but the file is missing")
    b = Bundle(root, {}, ModelConfig(name="?"), PreprocessConfig(), {}, {}, {}, None, seal)
    mraw = b.read(MANIFEST)
    manifest = _loads_json(mraw, f"{root / MANIFEST}")
    spec = Manifest.from_dict(manifest)
    for required in (WEIGHTS, QUERIES):
        if required not in spec.artifacts:
            raise MissingArtifactError(f"manifest of {root} does not list {required}")
    for art in spec.artifacts.values():
        if art.file not in seal.files:
            raise MissingArtifactError(f"manifest lists {art.file} but the seal of bundle {root.name} does not")
        if seal.files[art.file] != (art.sha256, art.bytes):
            raise TamperedArtifactError(f"manifest and seal of bundle {root.name} disagree about {art.file}")
    extra = set(seal.files) - set(spec.artifacts) - {MANIFEST, CARD}
    if extra:
        raise UnlistedFileError(f"bundle {root.name}: the manifest does not describe {', '.join(sorted(extra))}")
    if verify:
        for name in sorted(set(seal.files) - {MANIFEST}):
            b.read(name)
    try:
        wshapes = {k: v.shape for k, v in load(b.read(WEIGHTS)).items()}
        queries = load(b.read(QUERIES))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TamperedArtifactError(f"bundle {root.name}: unreadable safetensors file: {exc}") from None
    cfg = spec.model
    check_weights(cfg, wshapes, strict=False)
    for name, classes in spec.label_sets.items():
        q = queries.get(name)
        if q is None:
            raise MissingArtifactError(f"bundle {root.name}: no query vectors for label set {name!r}")
        if q.shape != (len(classes), cfg.width):
            raise ConfigMismatchError(
                f"bundle {root.name}: queries of {name!r} have shape {q.shape}, expected "
                f"({len(classes)}, {cfg.width})"
            )
        if not np.all(np.isfinite(q)):
            raise ConfigMismatchError(f"bundle {root.name}: queries of {name!r} are not all finite")
    b.manifest = manifest
    b.model_config = cfg
    b.preprocess_config = spec.preprocess
    b.label_sets = dict(spec.label_sets)
    b.queries = queries
    b.artifacts = dict(spec.artifacts)
    b.spec = spec
    return b


def _artifact(root: Path, name: str, kind: str, backend: str, precision: str, **extra: Any) -> Artifact:
    _check_name(name)
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
    signing_key: Any = None,
) -> Path:
    """Write a complete, sealed bundle atomically (built in a temp dir beside ``out_dir``, then renamed).

    ``max_leads`` (default: the model config's ``n_leads``) is the most leads the bundle serves at once;
    a device student exported for 1–3-lead patches sets it to 3. ``signing_key`` (an Ed25519 private key:
    PEM path, PEM bytes or key object) signs the seal.

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
        if supported_lead_sets != "any":
            raise ManifestError(f"supported_lead_sets must be \"any\" or lead lists, not {supported_lead_sets!r}")
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
            _check_name(name)
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
        Manifest.from_dict(manifest)  # the writer never writes what the reader refuses
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        (tmp / CARD).write_text(render_model_card(manifest))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a shipped bundle is world-readable
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        _write_seal(tmp, signing_key)
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def seal_bundle(bundle_dir: str | Path, signing_key: Any = None, *, upgrade: bool = False) -> str:
    """(Re-)seal a bundle directory as its publisher: check that every artifact the manifest lists matches
    its recorded SHA-256 and that no other file is there, then write ``SEAL.json`` (signed with
    ``signing_key`` if given). ``upgrade`` rewrites a schema-1 manifest as schema 2 (same content; the
    model card is regenerated). Returns the bundle digest."""
    root = Path(bundle_dir).resolve()
    manifest = _loads_json(_read_regular(root, MANIFEST, MAX_MANIFEST_BYTES), f"{root / MANIFEST}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root / MANIFEST} is not a {FORMAT} manifest")
    arts = manifest.get("artifacts")
    if not isinstance(arts, dict):
        raise ManifestError("manifest has no artifacts object")
    for name, a in arts.items():
        data = _read_regular(root, name, 1 << 40)
        if not isinstance(a, dict) or _sha256(data) != a.get("sha256") or len(data) != a.get("bytes"):
            raise TamperedArtifactError(f"{name} does not match the manifest; refusing to seal it")
    unexpected = sorted(_list_dir(root) - set(arts) - {MANIFEST, CARD, SEAL})
    if unexpected:
        raise UnlistedFileError(f"{root.name} holds files the manifest does not list: {', '.join(unexpected)}")
    if upgrade and manifest.get("schema_version") == 1:
        manifest["schema_version"] = SCHEMA_VERSION
        if "max_leads" not in manifest:
            manifest["max_leads"] = int(manifest.get("model", {}).get("n_leads", 12))
        manifest.setdefault("supported_lead_sets", "any")
        _atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _atomic_write_text(root / CARD, render_model_card(manifest))
    return _write_seal(root, signing_key)


def _rewrite_manifest(root: Path, manifest: dict[str, Any], signing_key: Any = None) -> None:
    """Replace manifest and model card of a bundle the caller has just verified, and re-seal it."""
    Manifest.from_dict(manifest)
    _atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    _atomic_write_text(root / CARD, render_model_card(manifest))
    _write_seal(root, signing_key)


def add_artifacts(
    bundle_dir: str | Path,
    files: Mapping[str, tuple[str | Path, dict[str, Any]]],
    *,
    metrics: Mapping[str, Any] | None = None,
    signing_key: Any = None,
) -> Bundle:
    """Copy artifact files into a verified bundle, record them (and optional metrics) in its manifest and
    re-seal it (signed with ``signing_key`` if given; a previous signature does not survive a change)."""
    b = load_bundle(bundle_dir)
    manifest = dict(b.manifest)
    arts = dict(manifest["artifacts"])
    for name, (src, info) in files.items():
        _check_name(name)
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
    _rewrite_manifest(b.path, manifest, signing_key)
    return load_bundle(b.path)


def drop_artifacts(bundle_dir: str | Path, names: Sequence[str], *, signing_key: Any = None) -> None:
    """Remove artifacts from a bundle's manifest and directory, and re-seal it."""
    root = Path(bundle_dir).resolve()
    manifest = _loads_json(_read_regular(root, MANIFEST, MAX_MANIFEST_BYTES), f"{root / MANIFEST}")
    for n in names:
        _check_name(n)
        manifest["artifacts"].pop(n, None)
        (root / n).unlink(missing_ok=True)
    _rewrite_manifest(root, manifest, signing_key)


def update_label_sets(
    bundle_dir: str | Path, label_sets: Mapping[str, tuple[Sequence[str], Any]], *, signing_key: Any = None
) -> Bundle:
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
    _rewrite_manifest(b.path, manifest, signing_key)
    return load_bundle(b.path)


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(np.asarray(v))


def _probe_card_lines(manifest: Mapping[str, Any]) -> list[str]:
    """The card's line on a supervised linear head (none without one)."""
    m = manifest["model"]
    if not m.get("probe_classes"):
        return []
    info = manifest.get("metrics", {}).get("superclass_probe", {})
    classes = info.get("classes") or [f"{m['probe_classes']} classes"]
    how = ("the head's logit" if m.get("probe_mode", "replace") == "replace"
           else "the mean of the head's and the query network's probabilities")
    return [
        f"- supervised linear head: the scores of {', '.join(map(str, classes))}"
        f"{' (label set `' + str(info['label_set']) + '`)' if info.get('label_set') else ''} are {how}, from a "
        "logistic regression on the mean-pooled encoder tokens fitted on the training split's labels (the "
        "linear-probe protocol; these are seen, supervised classes); every other class is scored by the "
        "cardiac query network",
    ] + ([
        "- superclass stack (`superclass_stack.json`): those scores are then a logistic regression per class over "
        "the head's logits and classical ECG measurements of the window on its beats (QRS duration and shape, "
        "ST level, T wave, axis, heart rate; `kmerl_edge._measure`), fitted on the training split with "
        "cross-fitted head logits; a window without three beats falls back on the logits",
    ] if manifest.get("metrics", {}).get("superclass_stack") else [])


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
        f"{m['patch_len']} samples; any subset of up to {manifest['max_leads']} leads, by name",
        f"- supported lead sets: {manifest.get('supported_lead_sets')}",
        *_probe_card_lines(manifest),
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
    lines += ["", "Every file of the bundle, this card included, is listed with its SHA-256 in `SEAL.json`."]
    if manifest.get("metrics"):
        lines += ["", "## Measured metrics", "", "```json", json.dumps(manifest["metrics"], indent=2), "```"]
    if manifest.get("provenance"):
        lines += ["", "## Provenance", "", "```json", json.dumps(manifest["provenance"], indent=2), "```"]
    lines.append("")
    return "\n".join(lines)
