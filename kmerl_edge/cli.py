"""The ``kmerl-edge`` command line: ``classify``, ``info``, ``stream``, ``demo``.

User mistakes end in one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._errors import KmerlError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_ERROR = 1


def _cmd_classify(a: argparse.Namespace) -> int:
    from ._classifier import load
    from ._io import read_record
    from ._leads import parse_leads

    leads = parse_leads(a.leads) if a.leads else None
    rec = read_record(a.record, fs=a.fs, leads=leads)
    clf = load(a.bundle, backend=a.backend, threads=a.threads, public_key=a.public_key, digest=a.digest)
    if a.verbose:
        for line in clf.backend_choice.lines():
            print(line, file=sys.stderr)
    use = rec.leads
    if len(use) > clf.max_leads:
        raise KmerlError(
            f"{rec.name} has {len(use)} leads but the bundle serves at most {clf.max_leads}; pick some with --leads"
        )
    pred = clf.predict(rec.signal, fs=rec.fs, leads=use, label_set=a.label_set)
    if a.json:
        out = {"record": str(a.record), "fs": rec.fs, "bundle": str(clf.bundle_path), **pred.to_dict()}
        print(json.dumps(out, indent=2))
        return 0
    print(f"record   {rec.name}: {len(rec.leads)} lead(s) {','.join(rec.leads)}, {rec.fs:g} Hz, {rec.duration_s:.1f} s")
    print(f"bundle   {clf.bundle_path}  (backend {pred.backend}, {pred.latency_ms:.1f} ms)")
    q = pred.quality
    flagged = [f"{lq.lead}:{'/'.join(lq.flags)}" for lq in q.leads if lq.flags]
    print(f"quality  {q.overall}" + (f"  [{', '.join(flagged + list(q.flags))}]" if flagged or q.flags else ""))
    for note in pred.notes:
        print(f"note     {note}")
    for ls, scores in pred.by_label_set.items():
        print(f"\n{ls}:")
        for cls, p in sorted(scores.items(), key=lambda kv: -kv[1]):
            print(f"  {p:6.3f}  {cls}")
    return 0


def _cmd_info(a: argparse.Namespace) -> int:
    from ._backends import AUTO_HORIZON_WINDOWS, auto_plan
    from ._bundle import CARD, load_bundle
    from ._classifier import default_bundle_path

    b = load_bundle(a.bundle or default_bundle_path(), public_key=a.public_key, digest=a.digest)
    assert b.seal is not None and b.spec is not None
    plan = auto_plan(b)
    if a.json:
        print(json.dumps({
            "manifest": b.manifest,
            "integrity": {"digest": f"sha256:{b.seal.digest}", "files": len(b.seal.files), "signed": b.seal.signed,
                          "key_id": b.seal.key_id, "signature_verified": b.seal.signature_verified,
                          "digest_pinned": b.seal.digest_pinned},
            "defaulted_fields": list(b.spec.defaulted),
            "auto_backend_plan": [c.name for c in plan if c.installed and c.parity_ok],
        }, indent=2))
        return 0
    print(json.dumps(b.manifest, indent=2))
    print()
    print(b.read(CARD).decode("utf-8", errors="replace"))
    for line in b.seal.describe():
        print(line)
    print("verified: manifest, model card and every artifact match the seal; weights match the config")
    if b.spec.defaulted:
        print(f"not stated in the manifest (runtime defaults used): {', '.join(b.spec.defaulted)}")
    print(f"backend auto (load time + {AUTO_HORIZON_WINDOWS} windows × latency, cheapest first):")
    for c in plan:
        print(f"  {c.describe()}")
    if a.verbose:
        from ._backends import choose_backend

        _, choice = choose_backend(b, "auto")
        for line in choice.lines():
            print(line)
    return 0


def _cmd_stream(a: argparse.Namespace) -> int:
    from .stream import run_stream_cli

    return run_stream_cli(a)


def _cmd_demo(a: argparse.Namespace) -> int:
    from .stream import run_demo_cli

    return run_demo_cli(a)


def _trust_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", default=None, metavar="PEM",
                   help="require a valid Ed25519 signature by this public key (PEM file)")
    p.add_argument("--digest", default=None, metavar="SHA256",
                   help="require this bundle digest (as `kmerl-edge info` prints it)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kmerl-edge", description="K-MERL Edge on-device ECG runtime")
    sub = ap.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("classify", help="score a recording (WFDB, .mat+.hea, .npy, .csv)")
    c.add_argument("record", help="record path (WFDB base name or .hea/.mat/.npy/.csv file)")
    c.add_argument("--fs", type=float, default=None, help="sampling rate in Hz (required for .npy/.csv)")
    c.add_argument("--leads", default=None, help="comma-separated lead names, e.g. I,II (required for .npy/.csv)")
    c.add_argument("--bundle", default=None, help="bundle directory (default: the bundle shipped in the package)")
    c.add_argument("--backend", default="auto", help="auto, torch, onnxruntime, onnxruntime-int8, executorch, …")
    c.add_argument("--label-set", default=None, help="only this label set")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--json", action="store_true", help="machine-readable output")
    _trust_args(c)
    c.add_argument("--verbose", action="store_true", help="say which backend was chosen and why (stderr)")
    c.set_defaults(func=_cmd_classify)

    i = sub.add_parser("info", help="verify a bundle; print its manifest, model card, seal and backend plan")
    i.add_argument("bundle", nargs="?", default=None, help="bundle directory (default: the shipped bundle)")
    i.add_argument("--json", action="store_true")
    _trust_args(i)
    i.add_argument("--verbose", action="store_true", help="also load the bundle with backend auto")
    i.set_defaults(func=_cmd_info)

    s = sub.add_parser("stream", help="live diagnoses from a serial patch or a recording played in real time")
    s.add_argument("--source", required=True, help="serial port, pyserial URL, or a recording file")
    s.add_argument("--protocol", choices=["kmerl", "ascii"], default="kmerl")
    s.add_argument("--leads", default=None, help="comma-separated leads (required for ascii)")
    s.add_argument("--fs", type=float, default=None, help="device rate in Hz (required for ascii)")
    s.add_argument("--hop", type=float, default=2.0, help="seconds between results")
    s.add_argument("--speed", type=float, default=1.0, help="playback speed for recording files")
    s.add_argument("--bundle", default=None)
    s.add_argument("--backend", default="auto")
    s.add_argument("--json-lines", action="store_true")
    s.add_argument("--max-seconds", type=float, default=None, help="stop after this much signal time")
    s.set_defaults(func=_cmd_stream)

    d = sub.add_parser("demo", help="virtual patch on a pty → serial bridge → default bundle, with AF events")
    d.add_argument("--bundle", default=None)
    d.add_argument("--backend", default="auto")
    d.add_argument("--speed", type=float, default=3.0, help="replay speed (× real time; 121 s of signal)")
    d.add_argument("--hop", type=float, default=2.0, help="seconds between results")
    d.add_argument("--json-lines", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = a.func
    try:
        return func(a)
    except KmerlError as exc:
        print(f"kmerl-edge: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except FileNotFoundError as exc:
        print(f"kmerl-edge: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _repo_root() -> Path:  # used by tests to locate fixtures
    return Path(__file__).resolve().parents[1]
