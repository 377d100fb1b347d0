"""Stream sources in the runtime: one lifecycle (start → get/iterate → ended → close) for recording
playback, the synthetic patch and (through the registry) the bridge's serial source; the runtime imports
none of the other packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge.stream import (
    DeviceInfo,
    Gap,
    PlaybackSource,
    SampleBlock,
    Source,
    SourceError,
    UnknownSourceError,
    demo_record_path,
    open_source,
    register_source,
    source_kind,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
RECORD = demo_record_path()
OTHERS = ("firmware_bridge", "trainer", "export", "benchmarks", "kmerl_fleet")


def test_kmerl_edge_imports_nothing_from_the_other_packages() -> None:
    """Statically: no import statement and no import_module call in kmerl_edge names another package."""
    offenders = []
    for path in sorted((ROOT / "kmerl_edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if fname in ("import_module", "__import__", "require") and isinstance(node.args[0].value, str):
                    names = [node.args[0].value]
            for name in names:
                if name.split(".")[0] in OTHERS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders, offenders


def test_the_stream_cli_and_the_runtime_sources_load_no_other_package() -> None:
    """Dynamically: the stream CLI's modules and the runtime's own sources leave the other packages unloaded."""
    code = f"""
import sys
import kmerl_edge, kmerl_edge.cli, kmerl_edge.stream, kmerl_edge._stream_cli
from kmerl_edge.stream import open_source, source_kind
for spec, kw in (({str(RECORD)!r}, dict(speed=float("inf"), max_seconds=3.0)),
                 ("synthetic://?fs=250&leads=I&seconds=3", dict(speed=float("inf")))):
    with open_source(spec, **kw) as src:
        n = sum(getattr(m, "n_samples", 0) for m in src if type(m).__name__ == "SampleBlock")
    print(source_kind(spec), n)
bad = [m for m in sys.modules if m.split(".")[0] in {OTHERS!r}]
assert not bad, bad
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["recording", "600", "synthetic", "750"]


def test_playback_source_lifecycle() -> None:
    src = open_source(str(RECORD), leads=["II"], speed=float("inf"), max_seconds=5.0)
    assert isinstance(src, Source) and source_kind(str(RECORD)) == "recording" and not src.ended
    msgs = list(src)
    assert isinstance(msgs[0], DeviceInfo) and msgs[0].fs == 200.0 and msgs[0].leads == ("II",)
    blocks = [m for m in msgs if isinstance(m, SampleBlock)]
    assert sum(b.n_samples for b in blocks) == 1000 and blocks[0].t0 == 0.0
    assert [b.tick for b in blocks] == list(range(0, 1000, 20))
    assert src.ended and src.get(timeout=0) is None
    src.close()
    # the same samples as the file: nothing resampled or filled
    rec = kmerl_edge.read_record(RECORD, leads=["II"])
    np.testing.assert_array_equal(np.concatenate([b.data for b in blocks], axis=1), rec.signal[:, :1000])


def test_playback_reports_missing_samples_as_gaps_never_fills_them() -> None:
    src = PlaybackSource(str(RECORD), leads=["I", "II"], speed=float("inf"))
    x = kmerl_edge.read_record(RECORD).signal[:, :20].astype(np.float32)
    x[:, 5:9] = np.nan  # missing in every lead: a gap
    x[0, 12] = np.nan  # missing in one lead only: samples (the session leaves that lead out)
    msgs = src._split(x, 100)
    assert [(type(m).__name__, m.tick, m.n_samples) for m in msgs] == [
        ("SampleBlock", 100, 5), ("Gap", 105, 4), ("SampleBlock", 109, 11)
    ]
    assert isinstance(msgs[1], Gap) and msgs[1].reason == "missing samples"
    src.close()


def test_synthetic_source_into_a_session() -> None:
    clf = kmerl_edge.load(BUNDLE, backend="onnxruntime")
    with open_source("synthetic://?fs=250&leads=I,II&seconds=12&hr=60", speed=float("inf")) as src:
        session = None
        res: list[Any] = []
        for msg in src:
            if isinstance(msg, DeviceInfo):
                session = clf.stream(fs=msg.fs, leads=msg.leads, synchronous=True)
            else:
                assert session is not None
                res += session.feed(msg)
        assert src.ended
    assert session is not None
    res += session.close()
    assert [r.t_end for r in res] == [10.0, 12.0] and all(not r.skipped for r in res)
    assert session.stats().samples == 3000


def test_registry_names_errors_and_plugins() -> None:
    for spec in ("", "   ", "/no/such/recording.hea"):
        with pytest.raises(UnknownSourceError):
            source_kind(spec)
    with pytest.raises(UnknownSourceError, match="serial"):
        source_kind("/no/such/recording.hea")  # says which extra would add serial ports and URLs
    with pytest.raises(SourceError):
        open_source("synthetic://?fs=250")  # no leads
    with pytest.raises(SourceError):
        open_source(str(RECORD), protocol="kmerl")  # not an option of a recording

    class Ticks:
        name = "ticks"
        stats: dict[str, int] = {}
        ended = True

        def start(self) -> Ticks:
            return self

        def get(self, timeout: float | None = None) -> None:
            return None

        def close(self) -> None:
            pass

        def __iter__(self) -> Any:
            return iter(())

    register_source("ticks", lambda spec: spec.startswith("ticks:"), lambda spec, **kw: Ticks())
    assert source_kind("ticks:1") == "ticks" and isinstance(open_source("ticks:1"), Source)
    with pytest.raises(SourceError):
        register_source("", lambda s: True, lambda s: None)


def test_the_bridge_source_follows_the_same_lifecycle() -> None:
    pytest.importorskip("serial")
    fb = pytest.importorskip("firmware_bridge")
    assert source_kind("loop://") == "serial" and source_kind("virtual-patch:///x?fs=200&leads=I") == "virtual-patch"
    src = open_source("loop://", reconnect=False)
    assert isinstance(src, fb.BridgeSource) and isinstance(src, Source) and not src.ended
    src.close()
    for _ in range(50):
        if src.get(timeout=0.05) is None and src.ended:
            break
    assert src.ended
