"""Streaming runtime: diagnoses from a live 1–3-lead patch.

>>> clf = kmerl_edge.load()
>>> session = clf.stream(fs=130.0, leads=["I"], hop_s=2.0)     # window: the bundle's 10 s
>>> for result in session.push(chunk, t0):                      # chunk: (n_leads, n) in mV, any n
...     result.t_start, result.t_end, result.scores, result.quality, result.latency_ms
>>> session.push_gap(n_samples)                                 # a gap the source reported
>>> for event in session.events():                              # "atrial fibrillation started at …"
...     print(event)
>>> session.close()

How it works:

- **Ring buffers at the device rate.** Each lead keeps its last 10 s as received; a window is cut every
  ``hop_s`` and only then resampled, filtered and normalised, with the same functions and parameters as
  :func:`kmerl_edge.preprocess` (those of the bundle).
- **Device time.** ``t_start``/``t_end`` are the device's own clock: the ``t0`` of the first chunk (0 if
  none) plus samples received; a later ``t0`` that jumps ahead is a gap, one that jumps back a clock
  reset (no stitching across it).
- **Gaps are never filled.** A window with more than ``max_gap_fraction`` missing is skipped (reason
  ``gap``); otherwise its gap-free stretches are scored in place (each resampled and filtered on its
  own, zeros where samples are missing, flag ``gap``) if they add up to 5 s (else ``fragmented``).
- **Bad leads are left out, not the window.** A lead reported off (:meth:`StreamSession.set_lead_off`,
  a bridge status event), holding non-finite samples, or flat / saturated / out of range in the window
  is excluded and named in ``excluded_leads``; the model scores the remaining subset.
- **Never blocks the reader.** ``push`` queues windows; a worker thread scores them. When the bounded
  queue is full the oldest pending window is dropped, reported as a skipped result
  (``dropped_backlog``) and counted.
- **Smoothing and events.** ``smoothing_windows`` averages probabilities across windows; rhythm events
  (atrial fibrillation by default) start and end with hysteresis (:class:`EventRule`).
- **Gateway.** :class:`Gateway` runs many sessions on one worker that batches windows across devices.
"""

from __future__ import annotations

from typing import Any

from ._gateway import Gateway, GatewayStats
from ._source import (
    BaseSource,
    DeviceInfo,
    Gap,
    LeadStatus,
    LinkStatus,
    Message,
    SampleBlock,
    Source,
    open_source,
    register_source,
    source_kind,
    source_kinds,
)
from ._source_builtin import PlaybackSource, SyntheticSource
from ._stream_errors import (
    DeviceChangedError,
    SourceError,
    StreamClosedError,
    StreamConfigError,
    StreamError,
    StreamInputError,
    UnknownSourceError,
)
from ._stream_session import StreamSession
from ._stream_types import (
    SKIP_BACKLOG,
    SKIP_ERROR,
    SKIP_FRAGMENTED,
    SKIP_GAP,
    SKIP_NO_USABLE_LEADS,
    SKIP_REASONS,
    EventRule,
    RhythmEvent,
    StreamConfig,
    StreamStats,
    WindowResult,
)
from ._stream_worker import InferenceWorker

__all__ = [
    "StreamSession",
    "StreamConfig",
    "EventRule",
    "WindowResult",
    "RhythmEvent",
    "StreamStats",
    "StreamError",
    "StreamClosedError",
    "StreamConfigError",
    "StreamInputError",
    "DeviceChangedError",
    "SourceError",
    "UnknownSourceError",
    # sources and their messages
    "Source",
    "BaseSource",
    "Message",
    "SampleBlock",
    "Gap",
    "LeadStatus",
    "DeviceInfo",
    "LinkStatus",
    "PlaybackSource",
    "SyntheticSource",
    "open_source",
    "register_source",
    "source_kind",
    "source_kinds",
    "Gateway",
    "GatewayStats",
    "InferenceWorker",
    "SKIP_GAP",
    "SKIP_FRAGMENTED",
    "SKIP_NO_USABLE_LEADS",
    "SKIP_BACKLOG",
    "SKIP_ERROR",
    "SKIP_REASONS",
    "demo_record_path",
    "run_stream_cli",
    "run_demo_cli",
]


def demo_record_path() -> Any:
    """WFDB base path of the recording shipped for ``kmerl-edge demo`` (CPSC2021, see data/LICENSES)."""
    from ._stream_cli import demo_record_path as _p

    return _p()


def run_stream_cli(args: Any) -> int:
    """``kmerl-edge stream``: see :mod:`kmerl_edge._stream_cli`."""
    from ._stream_cli import run_stream_cli as _run

    return _run(args)


def run_demo_cli(args: Any) -> int:
    """``kmerl-edge demo``: see :mod:`kmerl_edge._stream_cli`."""
    from ._stream_cli import run_demo_cli as _run

    return _run(args)
