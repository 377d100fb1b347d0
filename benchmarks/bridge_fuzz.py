"""Fuzz benchmark of the firmware bridge's frame decoder.

Streams real PTB-XL ECG (leads I, II, V2 at 500 Hz, 1 µV/LSB, 10 samples per frame, a status frame every
50 frames and a device-info frame every 500) through the Python encoder, injects random faults per frame,
feeds the bytes to :class:`firmware_bridge.FrameDecoder` in random chunks, and checks every delivered
sample against the recording and every lost sample against the reported gaps::

    python -m benchmarks.bridge_fuzz --frames 1000000 --json bridge_fuzz.json

Faults (per frame, at most one): ``drop`` (frame never sent), ``duplicate`` (sent twice), ``bitflip`` (1-3
random bits), ``drop_byte`` / ``dup_byte`` (one byte lost / repeated), ``truncate`` (cut at a random
point), ``garbage_inside`` (random bytes spliced into the frame), ``garbage_between`` (random bytes after it,
the only fault that loses nothing). Throughput is patch-seconds of 3-lead 500 Hz data decoded per
CPU-second (``time.process_time``), median of ``--reps`` runs over a clean stream.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge import DeviceConfig, FrameDecoder, FrameEncoder, GapEvent, SampleBlock, quantise

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl" / "records500" / "00000"
_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "records"
# the 500 shared PTB-XL records when present (../shared/data), else the 3 committed real fixtures
DATA = _SHARED if _SHARED.is_dir() else _FIXTURES
LEADS = ("I", "II", "V2")
FS = 500.0
LSB_PV = 1_000_000
SPF = 10
STATUS_EVERY = 50
INFO_EVERY = 500
FAULTS = ("drop", "duplicate", "bitflip", "drop_byte", "dup_byte", "truncate", "garbage_inside", "garbage_between")
#: faults after which the frame does not arrive intact
LOSSY = {"drop", "bitflip", "drop_byte", "dup_byte", "truncate", "garbage_inside"}
#: faults CRC-16 detects only with probability 1 - 2**-16 (the others it always detects: <= 3 bit flips)
CRC_PROBABILISTIC = {"drop_byte", "dup_byte", "truncate", "garbage_inside"}


@dataclass(frozen=True)
class FaultRates:
    """Per-frame probability of each fault (at most one fault per frame)."""

    drop: float = 0.01
    duplicate: float = 0.005
    bitflip: float = 0.01
    drop_byte: float = 0.003
    dup_byte: float = 0.003
    truncate: float = 0.003
    garbage_inside: float = 0.002
    garbage_between: float = 0.01


def load_truth(n_records: int = 20, data_dir: Path = DATA) -> np.ndarray:
    """Quantised (3, n) int64 ADC counts of the first ``n_records`` PTB-XL records, concatenated."""
    from kmerl_edge import read_record

    recs = sorted(p.with_suffix("") for p in data_dir.glob("*_hr.hea"))[:n_records]
    if not recs:
        raise SystemExit(f"no PTB-XL records under {data_dir}")
    sig = np.concatenate([read_record(r, leads=LEADS).signal for r in recs], axis=1)
    return quantise(sig, LSB_PV)


def device() -> DeviceConfig:
    return DeviceConfig(LEADS, FS, LSB_PV, "int16", SPF, 0xF022, (1, 0, 0), "fuzz")


@dataclass
class Stream:
    data: bytes
    n_sample_frames: int
    injected: dict[str, int] = field(default_factory=dict)
    lost_sample_frames: int = 0
    lost_frames_all: int = 0  #: lost frames of any type (what the decoder's lost_frames should count)
    crc_probabilistic: int = 0


def build_stream(truth: np.ndarray, n_frames: int, rates: FaultRates, seed: int) -> Stream:
    """``n_frames`` samples frames (plus status/info frames) of ``truth`` with faults; the last 2 intact."""
    rng = np.random.default_rng(seed)
    enc = FrameEncoder(device())
    names = list(FAULTS)
    p = np.array([getattr(rates, f) for f in names])
    kinds = rng.choice(len(names) + 1, size=n_frames + n_frames // STATUS_EVERY + n_frames // INFO_EVERY + 4, p=[*p, 1 - p.sum()])
    kinds[:1] = len(names)  # the first frame arrives, so the decoder has a start
    injected = dict.fromkeys(names, 0)
    parts: list[bytes] = []
    lost_samples_frames = lost_all = crc_prob = 0
    n_truth = truth.shape[1]
    k = 0  # frame counter (all types)
    last_intact = n_frames - 2

    def emit(frame: bytes, is_samples: bool, tail: bool) -> None:
        nonlocal k, lost_samples_frames, lost_all, crc_prob
        kind = len(names) if tail else int(kinds[k])
        k += 1
        if kind == len(names):
            parts.append(frame)
            return
        name = names[kind]
        injected[name] += 1
        if name in LOSSY:
            lost_all += 1
            lost_samples_frames += is_samples
            crc_prob += name in CRC_PROBABILISTIC
        b = bytearray(frame)
        if name == "drop":
            return
        if name == "duplicate":
            parts.append(frame)
        elif name == "bitflip":
            for bit in rng.choice(len(b) * 8, size=int(rng.integers(1, 4)), replace=False):
                b[int(bit) // 8] ^= 1 << (int(bit) % 8)
        elif name == "drop_byte":
            del b[int(rng.integers(len(b)))]
        elif name == "dup_byte":  # not the first or last byte: those would only add garbage around it
            i = int(rng.integers(1, len(b) - 1))
            b.insert(i, b[i])
        elif name == "truncate":
            del b[int(rng.integers(1, len(b))):]
        elif name == "garbage_inside":
            i = int(rng.integers(1, len(b)))
            b[i:i] = rng.integers(0, 256, int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
        elif name == "garbage_between":
            b += rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        parts.append(bytes(b))

    for f in range(n_frames):
        tick = f * SPF
        tail = f >= last_intact
        if f % INFO_EVERY == 0:
            emit(enc.device_info(tick), False, tail or f == 0)
        if f % STATUS_EVERY == 0:
            emit(enc.status(tick, ("V2",) if (f // STATUS_EVERY) % 7 == 3 else (), battery_pct=80), False, tail)
        i = tick % n_truth
        emit(enc.samples(tick, truth[:, i:i + SPF].T if i + SPF <= n_truth else
                         np.take(truth, np.arange(i, i + SPF) % n_truth, axis=1).T), True, tail or f == 0)
    return Stream(b"".join(parts), n_frames, injected, lost_samples_frames, lost_all, crc_prob)


def decode_and_check(stream: Stream, truth: np.ndarray, seed: int, chunk: tuple[int, int] = (1, 4096)) -> dict:
    """Feed ``stream`` in random chunks; check delivered samples and gap coverage against the truth."""
    rng = np.random.default_rng(seed + 1)
    dec = FrameDecoder()
    data = stream.data
    sizes = rng.integers(chunk[0], chunk[1] + 1, size=len(data) // max(1, (chunk[0] + chunk[1]) // 2) + 16)
    crashes = 0
    events = []
    pos = 0
    j = 0
    cpu0 = time.process_time()
    while pos < len(data):
        size = int(sizes[j % len(sizes)])
        j += 1
        try:
            events += dec.feed(data[pos:pos + size])
        except Exception:  # noqa: BLE001 - counting crashes is the point
            crashes += 1
        pos += size
    cpu = time.process_time() - cpu0
    n_ticks = stream.n_sample_frames * SPF
    cover = np.zeros(n_ticks, dtype=np.int16)
    scale = np.float32(LSB_PV * 1e-9)
    n_truth = truth.shape[1]
    corrupted = 0
    delivered = 0
    gap_events = 0
    for ev in events:
        if isinstance(ev, SampleBlock):
            t, n = ev.tick, ev.n_samples
            delivered += n
            if not 0 <= t <= n_ticks - n:
                corrupted += n
                continue
            cover[t:t + n] += 1
            expect = np.take(truth, np.arange(t, t + n) % n_truth, axis=1).astype(np.float32) * scale
            if ev.leads != LEADS or not np.array_equal(ev.data, expect):
                corrupted += int(np.count_nonzero((ev.data != expect).any(axis=0))) if ev.data.shape == expect.shape \
                    else n
        elif isinstance(ev, GapEvent) and ev.n_samples > 0:
            gap_events += 1
            t0, t1 = max(ev.tick, 0), min(ev.tick + ev.n_samples, n_ticks)
            cover[t0:t1] += 1
    lost_true = stream.lost_sample_frames * SPF
    return {
        "crashes": crashes,
        "corrupted_samples_delivered": corrupted,
        "samples_delivered": delivered,
        "samples_lost_true": lost_true,
        "samples_reported_in_gaps": dec.stats.lost_samples,
        "samples_lost_unreported": int(np.count_nonzero(cover == 0)),
        "samples_doubly_reported": int(np.count_nonzero(cover > 1)),
        "sample_frames_lost_true": stream.lost_sample_frames,
        "sample_frames_lost_unreported": int(np.count_nonzero(cover[::SPF] == 0)),
        "gap_events": gap_events,
        "frames_lost_true_all_types": stream.lost_frames_all,
        "decoder": dec.stats.as_dict(),
        "decode_cpu_s": cpu,
    }


def throughput(truth: np.ndarray, n_frames: int, reps: int, chunk: int = 1024) -> dict:
    """Patch-seconds of clean 3-lead 500 Hz data decoded per CPU-second (median of ``reps``)."""
    stream = build_stream(truth, n_frames, FaultRates(*([0.0] * len(FAULTS))), seed=0)
    data = stream.data
    rates = []
    for _ in range(reps):
        dec = FrameDecoder()
        t0 = time.process_time()
        n = 0
        for i in range(0, len(data), chunk):
            for ev in dec.feed(data[i:i + chunk]):
                if isinstance(ev, SampleBlock):
                    n += ev.n_samples
        cpu = time.process_time() - t0
        assert n == n_frames * SPF, (n, n_frames * SPF)
        rates.append(n / FS / cpu)
    return {"frames": n_frames, "chunk_bytes": chunk, "reps": reps, "bytes": len(data),
            "patch_s_per_cpu_s": statistics.median(rates), "all_reps": rates,
            "frames_per_cpu_s": statistics.median(rates) * FS / SPF}


def run(n_frames: int, seed: int = 0, reps: int = 3, tp_frames: int = 100_000, n_records: int = 20) -> dict:
    truth = load_truth(n_records)
    rates = FaultRates()
    t0 = time.perf_counter()
    stream = build_stream(truth, n_frames, rates, seed)
    build_s = time.perf_counter() - t0
    result = decode_and_check(stream, truth, seed)
    injected_lossy = sum(v for k, v in stream.injected.items() if k in LOSSY)
    out = {
        "frames_samples": n_frames,
        "frames_total_sent": n_frames + n_frames // STATUS_EVERY + n_frames // INFO_EVERY,
        "bytes": len(stream.data),
        "seed": seed,
        "fault_rates": asdict(rates),
        "faults_injected": stream.injected,
        "faults_injected_total": sum(stream.injected.values()),
        "frames_made_lossy": injected_lossy,
        "crc16_probabilistic_faults": stream.crc_probabilistic,
        "expected_crc16_false_accepts": stream.crc_probabilistic / 65536,
        "build_s": build_s,
        **result,
        "patch_s_per_cpu_s_under_faults": n_frames * SPF / FS / result["decode_cpu_s"],
        "throughput_clean": throughput(truth, tp_frames, reps) if reps > 0 else None,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bridge_fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000, help="samples frames in the fuzz run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the clean throughput run")
    ap.add_argument("--throughput-frames", type=int, default=100_000)
    ap.add_argument("--records", type=int, default=20, help="PTB-XL records cycled as the signal")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    out = run(args.frames, args.seed, args.reps, args.throughput_frames, args.records)
    text = json.dumps(out, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    ok = (out["crashes"] == 0 and out["corrupted_samples_delivered"] == 0
          and out["samples_lost_unreported"] == 0 and out["samples_doubly_reported"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
