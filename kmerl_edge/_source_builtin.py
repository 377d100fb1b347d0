"""The sources shipped in the runtime: recording playback and a synthetic patch (see :mod:`._source`)."""

from __future__ import annotations

import abc
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from ._leads import canonical_leads, parse_leads
from ._preprocess import _check_fs
from ._source import BaseSource, DeviceInfo, Gap, Message, SampleBlock
from ._stream_errors import SourceError

__all__ = ["PlaybackSource", "SyntheticSource", "is_recording", "is_synthetic", "open_recording", "open_synthetic"]

_CHUNK_S = 0.1


def _check_speed(speed: Any) -> float:
    try:
        s = float(speed)
    except (TypeError, ValueError):
        raise SourceError(f"speed must be a number (x real time), got {speed!r}") from None
    if not s > 0:  # also rejects NaN
        raise SourceError(f"speed must be positive (x real time; inf: as fast as possible), got {speed!r}")
    return s


class _Paced(BaseSource):
    """Chunks of ``chunk_s`` handed out when their last sample is due at ``speed`` x real time."""

    def __init__(self, name: str, fs: float, leads: tuple[str, ...], speed: float, n_total: int | None,
                 info: DeviceInfo) -> None:
        self.name = name
        self.fs = fs
        self.leads = leads
        self.speed = _check_speed(speed)
        self.n_total = n_total
        self._info: DeviceInfo | None = info
        self._step = max(1, int(round(_CHUNK_S * fs)))
        self._k = 0
        self._seq = 0
        self._t_wall0: float | None = None
        self._closed = False
        self._pending: list[Message] = []
        self._held: list[int] | None = None  # [start, length] of a gap still running at the last chunk's end
        self._stats = {"samples": 0, "gaps": 0, "lost_samples": 0}

    @abc.abstractmethod
    def _chunk(self, k: int, n: int) -> np.ndarray:
        """Samples ``k:k+n`` (n_leads, n) in mV."""

    def start(self) -> _Paced:
        if self._t_wall0 is None:
            self._t_wall0 = time.monotonic()
        return self

    @property
    def ended(self) -> bool:
        return self._closed or (
            self.n_total is not None and self._k >= self.n_total and not self._pending and self._info is None
            and self._held is None
        )

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def close(self) -> None:
        self._closed = True

    def get(self, timeout: float | None = None) -> Message | None:
        if self._closed:
            return None
        self.start()
        if self._info is not None:
            info, self._info = self._info, None
            return info
        if self._pending:
            return self._pending.pop(0)
        if self.n_total is not None and self._k >= self.n_total:
            return self._flush_gap()
        stop = self._k + self._step if self.n_total is None else min(self.n_total, self._k + self._step)
        assert self._t_wall0 is not None
        if math.isfinite(self.speed):
            delay = self._t_wall0 + stop / self.fs / self.speed - time.monotonic()
            if delay > 0:
                if timeout is not None and delay > timeout:
                    time.sleep(max(0.0, timeout))
                    return None
                time.sleep(delay)
        k = self._k
        x = np.asarray(self._chunk(k, stop - k), dtype=np.float32)
        self._k = stop
        self._pending = self._split(x, k)
        if self.n_total is not None and stop >= self.n_total and self._held is not None:
            gap = self._flush_gap()
            assert gap is not None
            self._pending.append(gap)
        return self._pending.pop(0) if self._pending else None

    def _flush_gap(self) -> Gap | None:
        """The gap held open across chunks, as one message (a gap is reported once, however long)."""
        if self._held is None:
            return None
        a, n = self._held
        self._held = None
        self._stats["gaps"] += 1
        self._stats["lost_samples"] += n
        return Gap(n, a / self.fs, "missing samples", a)

    def _split(self, x: np.ndarray, k: int) -> list[Message]:
        """Columns with no finite sample in any lead are a gap (never filled); the rest are samples."""
        missing = ~np.isfinite(x).any(axis=0)
        out: list[Message] = []
        if not missing.any():
            gap = self._flush_gap()
            return [gap, self._block(x, k)] if gap is not None else [self._block(x, k)]
        change = np.flatnonzero(np.diff(missing.astype(np.int8))) + 1
        bounds = [0, *change.tolist(), int(x.shape[1])]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b <= a:
                continue
            if missing[a]:
                if self._held is not None and self._held[0] + self._held[1] == k + a:
                    self._held[1] += b - a
                else:
                    self._held = [k + a, b - a]
            else:
                gap = self._flush_gap()
                if gap is not None:
                    out.append(gap)
                out.append(self._block(x[:, a:b], k + a))
        return out

    def _block(self, x: np.ndarray, k: int) -> SampleBlock:
        self._stats["samples"] += x.shape[1]
        blk = SampleBlock(self.leads, self.fs, np.ascontiguousarray(x), k / self.fs, self._seq, k)
        self._seq = (self._seq + 1) & 0xFFFF
        return blk


class PlaybackSource(_Paced):
    """A recording file played at ``speed`` x real time (``inf``: as fast as the reader takes it), in
    0.1-s blocks, from device time 0, read in pieces (memory does not grow with the recording's length).
    Missing samples in the file (NaN in every lead) are gaps. ``lead_map`` names ECG channels of unknown
    position (see :func:`kmerl_edge.read_record`); what the reader left out is in :attr:`notes`."""

    def __init__(self, path: str, *, fs: float | None = None, leads: Any = None, speed: float = 1.0,
                 max_seconds: float | None = None, lead_map: Any = None) -> None:
        from ._channels import parse_lead_map
        from ._io import open_record

        if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
            raise SourceError(f"max_seconds must be positive, got {max_seconds!r}")
        lm = parse_lead_map(lead_map) if lead_map else None
        self._reader = rec = open_record(path, fs=fs, leads=canonical_leads(leads) if leads else None, lead_map=lm)
        n = int(rec.n_samples)
        if max_seconds is not None:
            n = min(n, int(round(max_seconds * rec.fs)))
        self.notes: tuple[str, ...] = tuple(rec.notes)
        info = DeviceInfo(tuple(rec.leads), float(rec.fs), 0.0, "float", protocol="recording", inferred=True,
                          model=str(rec.name or Path(path).name))
        super().__init__(str(path), float(rec.fs), tuple(rec.leads), speed, n, info)

    def _chunk(self, k: int, n: int) -> np.ndarray:
        return np.asarray(self._reader.read(k, k + n), dtype=np.float32)

    def close(self) -> None:
        super().close()
        self._reader.close()


# Typical amplitude (mV) of the synthetic beat per lead: a plausible 12-lead pattern, not a real patient.
_LEAD_GAIN = {"I": 0.9, "II": 1.3, "III": 0.4, "aVR": -1.1, "aVL": 0.25, "aVF": 0.85,
              "V1": -0.7, "V2": 0.6, "V3": 1.0, "V4": 1.4, "V5": 1.3, "V6": 1.0}


class SyntheticSource(_Paced):
    """A synthetic patch for bring-up and tests (as BrainFlow's synthetic board): a beat of Gaussian P, QRS
    and T waves at ``hr_bpm`` with 10 µV of seeded noise, per-lead amplitudes from a typical 12-lead
    pattern. It is not an ECG recording and says nothing about any rhythm: scores on it mean nothing."""

    def __init__(self, *, fs: float, leads: Any, seconds: float | None = None, hr_bpm: float = 72.0,
                 speed: float = 1.0, seed: int = 0, noise_mv: float = 0.01) -> None:
        fs = _check_fs(fs)
        names = canonical_leads(parse_leads(leads) if isinstance(leads, str) else leads)
        if not (isinstance(hr_bpm, (int, float)) and 20 <= hr_bpm <= 300):
            raise SourceError(f"hr_bpm must be in 20..300, got {hr_bpm!r}")
        n = None
        if seconds is not None:
            if not (isinstance(seconds, (int, float)) and seconds > 0 and math.isfinite(seconds)):
                raise SourceError(f"seconds must be positive, got {seconds!r}")
            n = int(round(seconds * fs))
        self._gain = np.array([_LEAD_GAIN[lead] for lead in names])[:, None]
        self._rr = 60.0 / float(hr_bpm)
        self._rng = np.random.default_rng(seed)
        self._noise = float(noise_mv)
        info = DeviceInfo(names, fs, 0.0, "float", protocol="synthetic", inferred=True, model="synthetic")
        super().__init__("synthetic", fs, names, speed, n, info)

    def _chunk(self, k: int, n: int) -> np.ndarray:
        t = (k + np.arange(n)) / self.fs
        ph = np.mod(t, self._rr)
        beat = (0.12 * np.exp(-(((ph - 0.10) / 0.025) ** 2)) - 0.10 * np.exp(-(((ph - 0.185) / 0.008) ** 2))
                + 1.0 * np.exp(-(((ph - 0.20) / 0.010) ** 2)) - 0.18 * np.exp(-(((ph - 0.215) / 0.009) ** 2))
                + 0.28 * np.exp(-(((ph - 0.45) / 0.05) ** 2)))
        return self._gain * beat[None, :] + self._noise * self._rng.standard_normal((len(self.leads), n))


# --------------------------------------------------------------------------------------- registration
def is_synthetic(spec: str) -> bool:
    return spec.startswith("synthetic:")


def is_recording(spec: str) -> bool:
    if "://" in spec:
        return False
    p = Path(spec)
    try:
        if p.is_file():
            return True
        return Path(spec + ".hea").is_file() or (p.suffix == "" and p.with_suffix(".hea").is_file())
    except OSError:
        return False


def open_recording(spec: str, **options: Any) -> PlaybackSource:
    allowed = {"fs", "leads", "speed", "max_seconds", "lead_map"}
    extra = set(options) - allowed
    if extra:
        raise SourceError(f"a recording source takes {', '.join(sorted(allowed))}; not {', '.join(sorted(extra))}")
    src = PlaybackSource(spec, **options)
    src.start()
    return src


def open_synthetic(spec: str, **options: Any) -> SyntheticSource:
    """``synthetic://?fs=250&leads=I,II&seconds=60&hr=72&seed=0`` (query values are overridden by options)."""
    q = {k: v[-1] for k, v in parse_qs(urlparse(spec).query).items()}
    opts: dict[str, Any] = {}
    conv = {"fs": float, "seconds": float, "hr": float, "hr_bpm": float, "speed": float, "seed": int, "leads": str}
    for k, v in q.items():
        if k not in conv:
            raise SourceError(f"unknown synthetic source parameter {k!r} (fs, leads, seconds, hr, speed, seed)")
        try:
            opts["hr_bpm" if k == "hr" else k] = conv[k](v)
        except ValueError:
            raise SourceError(f"synthetic source parameter {k}={v!r} is not a {conv[k].__name__}") from None
    opts.update({k: v for k, v in options.items() if v is not None})
    extra = set(opts) - {"fs", "leads", "seconds", "hr_bpm", "speed", "seed", "noise_mv"}
    if extra:
        raise SourceError(f"a synthetic source does not take {', '.join(sorted(extra))}")
    if "fs" not in opts or "leads" not in opts:
        raise SourceError("a synthetic source needs fs and leads (synthetic://?fs=250&leads=I,II)")
    src = SyntheticSource(**opts)
    src.start()
    return src
