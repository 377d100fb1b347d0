"""What every K-MERL Edge command shares: ``--version``, ``-v/--verbose``, ``-q/--quiet`` and progress bars.

- ``--version`` prints the package version.
- ``-q`` hides progress bars and informational log lines; ``-v`` shows debug logging and the warnings that
  third-party libraries print on import (torchao's missing CUDA kernels, "no triton", torch's pytree
  notices), which are otherwise silenced because they say nothing about the user's job.
- Native libraries print from C, where Python's logging and warnings cannot reach: cpuinfo's "Error in
  cpuinfo: …" lines at the import of torch or ONNX Runtime on some CPUs. Unless ``-v``, those imports run
  with file descriptor 2 captured; the cpuinfo lines are dropped and every other line is written on.
- :func:`progress` wraps an iterable in a ``tqdm`` bar (on stderr) when tqdm is installed and the command
  is not quiet; otherwise it returns the iterable unchanged. Bars never change what a job computes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any, TypeVar

__all__ = ["add_common_args", "configure", "progress", "verbosity", "THIRD_PARTY_LOGGERS"]

T = TypeVar("T")

#: Loggers of libraries whose import-time notices are hidden unless ``-v``.
THIRD_PARTY_LOGGERS = (
    "torchao",
    "torch.utils._pytree",
    "torch._export",
    "torch.export",
    "torch._dynamo",
    "torch.onnx",
    "executorch",
    "triton",
    "onnxscript",
    "onnx_ir",
    "urllib3",
    "matplotlib",
    "PIL",
    "fsspec",
)
_WARNING_MODULES = r"(torchao|triton|executorch|torch|onnxscript|onnx_ir|onnxruntime|cpuinfo|pyedflib|wfdb)(\.|$)"

_state = {"verbosity": 0}

#: Top-level modules whose import may print native (C) noise, and what that noise looks like.
NATIVE_NOISY = ("torch", "onnxruntime")
_NATIVE_NOISE = re.compile(r"cpuinfo", re.IGNORECASE)


@contextlib.contextmanager
def _filtered_fd2(pattern: re.Pattern[str] = _NATIVE_NOISE) -> Iterator[None]:
    """Capture what is written to file descriptor 2 meanwhile; on exit write back the lines that do not
    match ``pattern``. Synchronous (no thread): nothing is lost or reordered within stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().splitlines(keepends=True)
                    if not pattern.search(ln.decode("utf-8", errors="replace"))]
            if kept:
                os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _filtered_fd2():
            self._inner.exec_module(module)


class _QuietNativeImports(importlib.abc.MetaPathFinder):
    """Runs the first import of each module in :data:`NATIVE_NOISY` under :func:`_filtered_fd2`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in NATIVE_NOISY or _state["verbosity"] >= 1:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)  # type: ignore[arg-type]
                return spec
        return None


_HOOK = _QuietNativeImports()


def _version() -> str:
    from . import __version__

    return __version__


def add_common_args(parser: argparse.ArgumentParser, *, prog: str, subparsers: Sequence[Any] = ()) -> None:
    """Add ``--version`` to ``parser`` and ``-v``/``-q`` to it and to each parser in ``subparsers``.

    On sub-commands the options default to "not given", so ``prog -v cmd`` and ``prog cmd -v`` both work.
    """
    parser.add_argument("--version", action="version", version=f"{prog} {_version()}")
    for p, default in [(parser, 0)] + [(s, argparse.SUPPRESS) for s in subparsers]:
        have = set(p._option_string_actions)  # a command's own --quiet (same meaning) is kept as it is
        if not have & {"-v", "--verbose"}:
            p.add_argument(
                "-v", "--verbose", action="count", default=default,
                help="more output: debug logging and third-party warnings (repeat for more)",
            )
        if not have & {"-q", "--quiet"}:
            p.add_argument(
                "-q", "--quiet", action="store_true", default=default if default is argparse.SUPPRESS else False,
                help="no progress bars or informational messages; errors and results only",
            )


def verbosity() -> int:
    """-1 quiet, 0 normal, ≥ 1 verbose (as set by :func:`configure`)."""
    return _state["verbosity"]


def configure(args: argparse.Namespace | None = None, *, verbose: int = 0, quiet: bool = False) -> int:
    """Apply ``-v``/``-q``: logging level, third-party loggers and warnings. Returns the verbosity."""
    if args is not None:
        verbose = int(getattr(args, "verbose", 0) or 0)
        quiet = bool(getattr(args, "quiet", False))
    level = -1 if quiet else verbose
    _state["verbosity"] = level
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    root.setLevel(logging.DEBUG if level >= 2 else logging.INFO if level >= 1 else logging.WARNING)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level >= 1 else logging.ERROR)
    if level >= 1:
        warnings.filterwarnings("default", module=_WARNING_MODULES)
    else:
        warnings.filterwarnings("ignore", module=_WARNING_MODULES)
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
    return level


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it", leave: bool = False
) -> Iterator[T] | Iterable[T]:
    """``iterable`` with a tqdm progress bar on stderr, unless quiet or tqdm is not installed."""
    if _state["verbosity"] < 0 or os.environ.get("KMERL_NO_PROGRESS"):
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)  # type: ignore[no-any-return]
