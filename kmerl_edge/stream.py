"""Streaming runtime: diagnoses from a live 1–3-lead patch.

>>> clf = kmerl_edge.load()
>>> session = clf.stream(fs=130.0, leads=["I"], hop_s=2.0)     # window: the bundle's 10 s
>>> for chunk, t0 in device:                                    # chunk: (n_leads, n) in mV, any n
...     for result in session.push(chunk, t0):                  # the results that are ready (never waits)
...         result.t_start, result.t_end, result.scores, result.quality, result.latency_ms
>>> for result in session.results(timeout=5.0):                 # wait for the rest of what was pushed
...     ...
>>> for result in session.close():                              # the end: every pending window
...     ...
>>> for event in session.events():                              # "atrial fibrillation started at …"
...     print(event)

Getting results. Windows are scored on a worker thread, so :meth:`StreamSession.push` returns the results
*completed* since the last call: while the reader keeps pushing, each result comes out of a later push.
A reader that pushes faster than inference (a file, a busy machine) gets few or none from ``push``: the
rest come from ``results(timeout=T)`` (waits up to ``T`` s for every window pushed so far, yielding each
as it is ready), ``flush(timeout)`` (waits, then returns them as a list), ``poll()`` (what is ready now,
never waits), ``results(block=True)`` (a consumer thread's loop, until the session is closed) or
``close()``. Each result is handed out once, in window order, by whichever call comes first.
``synchronous=True`` scores inside ``push`` (offline use, tests).

Sources. A :class:`Source` produces stream messages (:class:`SampleBlock`, :class:`Gap`,
:class:`LeadStatus`, :class:`DeviceInfo`, :class:`LinkStatus`) and follows one lifecycle: ``start()`` →
``get(timeout)`` / iterate → ``ended`` → ``close()``. :meth:`StreamSession.feed` takes any message.
:func:`open_source` opens a recording (played at ``speed`` x real time), ``synthetic://?fs=250&leads=I``
or, through plugins registered with :func:`register_source` or the ``kmerl_edge.sources`` entry point,
a serial port or pyserial URL (the firmware bridge, extra ``serial``). "Event" means a rhythm event.

Device time (the clock model). ``t_start``/``t_end`` are the device's own clock: the ``t0`` of the first
chunk (0 if none) plus the samples counted since. Each later ``t0`` is compared with that clock:

- within ``clock_tolerance_s`` (20 ms) it is jitter: the samples go where the count puts them, nothing
  is shifted, skipped or reported (±3 ms at 250 Hz skips nothing);
- further ahead, the samples in between were lost: a gap of that length (any length: a window that would
  hold no sample at all gets no result and costs nothing, counted in ``StreamStats.empty_windows``, so a
  2³¹-tick jump or ``t0=time.time()`` after a stream without ``t0`` is O(1) and cannot push unread
  results out of the buffer);
- behind it, the chunk is late (old samples, a replay, a glitch): dropped and counted (``late_chunks``),
  never delivered as new, and the clock does not move. Only ``reset_confirm`` (3) consecutive late chunks
  that agree with each other mean that the device's clock restarted (``clock_resets``): the ring is
  cleared and nothing is stitched across. A source that knows of a restart says so (``push(...,
  reset=True)``, ``Gap(reset=True)``; the bridge does).

No input makes ``push``/``feed`` block or do work proportional to a timestamp jump. A ``t0`` that is not
a finite number within ±10¹⁰ s (``MAX_T0_S``) is a :class:`StreamInputError`.

How it works:

- **Ring buffers at the device rate.** Each lead keeps its last 10 s as received; a window is cut every
  ``hop_s`` and only then resampled, filtered and normalised, with the same functions and parameters as
  :func:`kmerl_edge.preprocess` (those of the bundle).
- **Gaps are never filled.** A window with more than ``max_gap_fraction`` missing is skipped (reason
  ``gap``); otherwise its gap-free stretches are scored in place (each resampled and filtered on its
  own, zeros where samples are missing, flag ``gap``) if they add up to 5 s (else ``fragmented``).
- **Bad leads are left out, not the window.** A lead reported off (:meth:`StreamSession.set_lead_off`
  with a lead name or a list of names, a :class:`LeadStatus`), holding non-finite samples, or flat /
  saturated / out of range in the window is excluded and named in ``excluded_leads``; the model scores
  the remaining subset.
- **Never blocks the reader.** ``push`` queues windows; a worker thread scores them. When the bounded
  queue is full the oldest pending window is dropped, reported as a skipped result
  (``dropped_backlog``) and counted.
- **A device that changes.** A :class:`SampleBlock` or :class:`DeviceInfo` at another rate or with
  other leads raises :class:`DeviceChangedError`: close the session and open one for the new set-up
  (``kmerl-edge stream`` does, printing each session's results and summary).
- **Smoothing and events.** ``smoothing_windows`` averages probabilities across windows; rhythm events
  (atrial fibrillation by default) start and end with hysteresis (:class:`EventRule`).
- **Gateway.** :class:`Gateway` runs many sessions on one worker that batches windows across devices;
  its statistics count closed sessions too.
- **Latency** (``WindowResult.latency_ms``, ``StreamStats.latency_ms_*``): from the moment a window's
  last sample was pushed to the moment its result existed (queueing + preprocessing + inference); the
  statistics leave out each session's first scored window (one-off warm-up).
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
    UnknownDeviceError,
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
    SKIP_UNSERVED_LEADS,
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
    "UnknownDeviceError",
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
    "SKIP_UNSERVED_LEADS",
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
