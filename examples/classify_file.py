"""Classify one recording file with the default bundle and print the top classes, per 10-s window too.

    pip install "kmerl-edge[device]"          # + [io] for WFDB / EDF files
    python examples/classify_file.py tests/fixtures/formats/apple_watch_ecg_cpsc2021_101_9.csv
    python examples/classify_file.py my_polar_export.txt --leads I

Any format `kmerl-edge classify` reads works here (WFDB, EDF/EDF+, Apple Watch CSV, Polar Sensor
Logger, CSV with named columns, .npy with --fs and --leads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import kmerl_edge

DEFAULT = Path(__file__).resolve().parents[1] / "tests/fixtures/formats/apple_watch_ecg_cpsc2021_101_9.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("record", nargs="?", default=str(DEFAULT))
    ap.add_argument("--leads", default=None, help="comma-separated lead names (a subset, or names for a file without)")
    ap.add_argument("--fs", type=float, default=None, help="sampling rate, for files that do not state it")
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the one shipped in the package)")
    ap.add_argument("--backend", default="onnxruntime-int8")
    a = ap.parse_args()

    rec = kmerl_edge.read_record(a.record, fs=a.fs, leads=kmerl_edge.parse_leads(a.leads) if a.leads else None)
    clf = kmerl_edge.load(a.bundle, backend=a.backend)
    leads = rec.leads[: clf.max_leads]
    rows = [rec.leads.index(lead) for lead in leads]
    pred = clf.predict(rec.signal[rows], fs=rec.fs, leads=leads)

    print(f"{rec.name}: {', '.join(leads)} at {rec.fs:g} Hz, {rec.duration_s:.1f} s; quality {pred.quality.overall}")
    for label_set in clf.label_sets:
        top = ", ".join(f"{c} {p:.2f}" for c, p in pred.top(3, label_set=label_set))
        print(f"  {label_set}: {top}")
    if len(pred.window_scores) > 1:
        for start, scores in zip(pred.window_starts_s, pred.window_scores):
            best = max(clf.label_sets["rhythm"], key=lambda c: scores[c]) if "rhythm" in clf.label_sets else ""
            print(f"  window {start:5.1f} s: rhythm {best} {scores.get(best, float('nan')):.2f}")


if __name__ == "__main__":
    main()
