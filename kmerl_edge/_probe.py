"""Probe native backends in a child process before loading them here.

A corrupted ``.pte`` or TensorRT engine whose hash matches its manifest (a bad export, a bit flip before
sealing) can abort the native runtime: no Python exception, the process just dies. So the first time a
bundle is loaded on such a backend, a child process loads it and runs one window; only if the child exits
cleanly is it loaded in this process. A crash, a hang (``KMERL_EDGE_PROBE_TIMEOUT_S``, default 300 s) or
an error becomes :class:`BackendCrashedError` with the child's last stderr lines, and ``auto`` moves on to
the next backend.

Success is remembered per (bundle digest, backend, artifact, Python, library versions) as an empty marker
file in ``$KMERL_EDGE_CACHE_DIR`` (default ``~/.cache/kmerl-edge/probes``), so the probe runs once per
bundle and machine. If that directory cannot be written, the probe simply runs every time.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from ._bundle import Bundle
from ._errors import BackendCrashedError, KmerlError

__all__ = ["probe_backend", "probe_cache_dir"]

CHILD_ENV = "KMERL_EDGE_PROBE_CHILD"
_LIBS = {"executorch": "executorch", "tensorrt": "tensorrt"}


def probe_cache_dir() -> Path:
    env = os.environ.get("KMERL_EDGE_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kmerl-edge"
    return base / "probes"


def _version(lib: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return "?"


def _key(bundle: Bundle, name: str) -> str:
    fam = name.split("-", 1)[0]
    digest = bundle.seal.digest if bundle.seal is not None else "unsealed"
    parts = [digest, name, sys.executable, sys.version, _version(_LIBS.get(fam, fam)), _version("kmerl-edge")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def probe_backend(bundle: Bundle, name: str, threads: int | None = None) -> None:
    """Load ``bundle`` on backend ``name`` in a child process (once per bundle); raise
    :class:`BackendCrashedError` if the child crashes, hangs or fails."""
    if os.environ.get(CHILD_ENV):  # we are the probe
        return
    marker = probe_cache_dir() / _key(bundle, name)
    if marker.exists():
        return
    from ._backends import _family, _installed

    fam = _family(name)
    if not _installed(fam) or not any(a.kind == "model" and a.backend == fam for a in bundle.artifacts.values()):
        return  # nothing native to load: the backend itself reports what is missing
    timeout = float(os.environ.get("KMERL_EDGE_PROBE_TIMEOUT_S", "300"))
    env = {**os.environ, CHILD_ENV: "1"}
    cmd = [sys.executable, "-c", "import sys; from kmerl_edge._probe import _child; sys.exit(_child(sys.argv[1:]))",
           str(bundle.path), name]
    digest = bundle.seal.digest if bundle.seal is not None else ""
    try:
        res = subprocess.run(cmd + [digest], env=env, capture_output=True, text=True, timeout=timeout,
                             errors="replace", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendCrashedError(
            f"{name}: loading {bundle.path.name} did not finish within {timeout:g} s in a probe process"
        ) from None
    if res.returncode != 0:
        tail = " | ".join(line.strip() for line in res.stderr.strip().splitlines()[-4:] if line.strip())
        if res.returncode < 0:
            try:
                how = f"crashed with {signal.Signals(-res.returncode).name}"
            except ValueError:  # pragma: no cover
                how = f"crashed with signal {-res.returncode}"
        elif res.returncode == 3:
            how = "refused it"
        else:
            how = f"exited with status {res.returncode}"
        raise BackendCrashedError(
            f"{name}: the native runtime {how} while loading bundle {bundle.path.name} in a probe process"
            + (f": {tail[-400:]}" if tail else "")
        )
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # no writable cache: probe again next time
        pass


def _child(argv: list[str]) -> int:
    """Probe process: load the bundle (same seal digest) on the backend and run one window."""
    import numpy as np

    from ._backends import BACKENDS, _load_optional_backends
    from ._bundle import load_bundle

    path, name, digest = argv[0], argv[1], (argv[2] if len(argv) > 2 else "")
    try:
        b = load_bundle(path, digest=digest or None)
        _load_optional_backends()
        be = BACKENDS[name](b, 1)
        n = b.model_config.n_samples
        out = be.run(np.zeros((1, 1, n), np.float32), np.zeros(1, np.int64))
        if not np.all(np.isfinite(out)):
            print("the backend returned non-finite logits for a zero window", file=sys.stderr)
            return 3
    except KmerlError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    return 0
