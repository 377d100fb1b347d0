"""The plain ASCII line format hobby boards print (AD8232 + Arduino ``Serial.println``).

One sample per line, one comma-separated value per lead, terminated by ``\\n``, ``\\r\\n`` or a lone ``\\r``;
lines starting with ``#`` are comments. Nothing in the stream states the rate, the leads or the units, so the user
declares them: ``fs`` and ``leads`` are required, and ``mV = (value - offset) * mv_per_unit``.

The format has no checksum and no sequence numbers: a line that does not parse (wrong field count, not a
number, not finite, too long, or a value beyond ``max_abs_mv`` once converted, e.g. ``1e39``) is dropped and
reported as a one-sample :class:`Gap`; a corrupted digit that still parses cannot be detected. Ticks are counted by the host, one per line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kmerl_edge._leads import canonical_leads

from ._errors import BridgeConfigError, SamplingRateError
from ._events import DeviceInfo, Gap, Message, SampleBlock

__all__ = ["AsciiStats", "AsciiDecoder", "format_ascii_lines", "MAX_ABS_MV"]

#: Largest magnitude (mV) a line may convert to: far beyond any surface ECG (and any float32 overflow),
#: so only nonsense is refused; the quality check judges the plausible range.
MAX_ABS_MV = 1.0e4
_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass
class AsciiStats:
    """Counters of the ASCII decoder."""

    bytes_in: int = 0
    lines: int = 0  #: complete lines seen (including bad and comment lines)
    samples: int = 0  #: samples per lead delivered
    comment_lines: int = 0
    blank_lines: int = 0
    garbage_bytes: int = 0  #: the partial first line (the port opened mid-line) and discarded partial lines
    malformed_lines: int = 0  #: wrong number of fields, not a number, or not finite
    out_of_range_lines: int = 0  #: values beyond MAX_ABS_MV mV once converted (``1e39``)
    overlong_lines: int = 0
    gaps: int = 0
    lost_samples: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class AsciiDecoder:
    """Incremental decoder of comma-separated sample lines; never raises on bad bytes.

    The first (possibly partial) line is discarded unless ``at_line_start=True``, because a port opened
    mid-stream starts mid-line and a cut number would otherwise pass as a valid sample.
    """

    def __init__(
        self,
        leads: Sequence[str],
        fs: float,
        *,
        mv_per_unit: float = 1.0,
        offset: float = 0.0,
        max_line: int = 256,
        at_line_start: bool = False,
    ) -> None:
        if fs is None or not fs > 0 or not math.isfinite(fs):
            raise SamplingRateError(f"the ASCII protocol needs an explicit positive sampling rate, got {fs}")
        if not (mv_per_unit > 0 and math.isfinite(mv_per_unit)):
            raise BridgeConfigError(f"mv_per_unit must be positive, got {mv_per_unit}")
        if not math.isfinite(offset):
            raise BridgeConfigError(f"offset must be a finite number, got {offset}")
        self.leads = canonical_leads(leads)
        self.fs = float(fs)
        self.mv_per_unit = float(mv_per_unit)
        self.offset = float(offset)
        self.max_line = max_line
        self.stats = AsciiStats()
        self._rest = b""
        self._synced = at_line_start
        self._tick = 0
        self._seq = 0
        self._announced = False
        self._pending_overlong = False
        self._cr_pending = False

    def device_info(self) -> DeviceInfo:
        """The user's declaration, as the :class:`DeviceInfo` the stream expects first."""
        return DeviceInfo(self.leads, self.fs, self.mv_per_unit, "ascii", protocol="ascii", inferred=True)

    def _gap(self, out: list[Message], rows: list[list[float]], n: int, reason: str) -> None:
        self._emit(out, rows)
        last = out[-1] if out else None
        if isinstance(last, Gap) and last.reason == reason and last.tick + last.n_samples == self._tick:
            out[-1] = Gap(last.n_samples + n, last.t0, reason, last.tick)
        else:
            out.append(Gap(n, self._tick / self.fs, reason, self._tick))
        self._tick += n
        self.stats.gaps += 1
        self.stats.lost_samples += n

    def _emit(self, out: list[Message], rows: list[list[float]]) -> None:
        if not rows:
            return
        arr = np.asarray(rows, dtype=np.float64)
        data = ((arr - self.offset) * self.mv_per_unit).T.astype(np.float32)
        out.append(SampleBlock(self.leads, self.fs, np.ascontiguousarray(data), self._tick / self.fs, self._seq,
                               self._tick))
        self._seq = (self._seq + 1) & 0xFFFF
        self._tick += len(rows)
        self.stats.samples += len(rows)
        rows.clear()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Message]:
        """Consume bytes; return a SampleBlock of the complete good lines, with Gaps for bad ones."""
        st = self.stats
        st.bytes_in += len(chunk)
        data = self._rest + bytes(chunk)
        out: list[Message] = []
        if not self._announced:
            self._announced = True
            out.append(self.device_info())
        if self._cr_pending and data.startswith(b"\n"):  # the second half of a \r\n cut between chunks
            data = data[1:]
        self._cr_pending = data.endswith(b"\r")
        lines = _EOL.split(data)
        self._rest = lines.pop()
        if len(self._rest) > self.max_line:
            # an endless line: drop it now, and the remainder when its newline arrives
            st.garbage_bytes += len(self._rest)
            self._rest = b""
            if self._synced:
                st.overlong_lines += 1
                self._pending_overlong = True
            self._synced = False
        rows: list[list[float]] = []
        nl = len(self.leads)
        for raw in lines:
            if not self._synced:
                st.garbage_bytes += len(raw) + 1
                self._synced = True
                if self._pending_overlong:
                    self._pending_overlong = False
                    self._gap(out, rows, 1, "malformed line")
                continue
            st.lines += 1
            line = raw.strip()
            if not line:
                st.blank_lines += 1
                continue
            if line.startswith(b"#"):
                st.comment_lines += 1
                continue
            if len(line) > self.max_line:
                st.overlong_lines += 1
                self._gap(out, rows, 1, "malformed line")
                continue
            parts = line.split(b",")
            try:
                vals = [float(p) for p in parts]
            except ValueError:
                vals = []
            if len(vals) != nl or not all(math.isfinite(v) for v in vals):
                st.malformed_lines += 1
                self._gap(out, rows, 1, "malformed line")
                continue
            if not all(abs((v - self.offset) * self.mv_per_unit) <= MAX_ABS_MV for v in vals):
                st.out_of_range_lines += 1
                self._gap(out, rows, 1, "value out of range")
                continue
            rows.append(vals)
        self._emit(out, rows)
        return out

    def flush(self) -> list[Message]:
        """The stream broke: a partial last line is discarded; the next bytes start mid-line."""
        if self._rest:
            self.stats.garbage_bytes += len(self._rest)
        self._rest = b""
        self._synced = False
        return []

    def skip(self, n_samples: int, reason: str) -> Gap:
        """Advance the host tick by ``n_samples`` lost samples (e.g. while unplugged) and report the gap."""
        ev = Gap(n_samples, self._tick / self.fs, reason, self._tick)
        self._tick += n_samples
        self.stats.gaps += 1
        self.stats.lost_samples += n_samples
        return ev


def format_ascii_lines(signal_mv: np.ndarray, decimals: int = 3) -> bytes:
    """(n_leads, n) mV → the ASCII lines a hobby board prints: one sample per line, leads comma-separated."""
    arr = np.asarray(signal_mv, dtype=np.float64)
    fmt = ",".join([f"%.{decimals}f"] * arr.shape[0])
    return "".join(fmt % tuple(col) + "\n" for col in arr.T).encode("ascii")
