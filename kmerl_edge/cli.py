"""The ``kmerl-edge`` command line: ``classify``, ``info``, ``models``, ``stream``, ``demo``.

User mistakes end in one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._errors import KmerlError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_ERROR = 1


def _cmd_classify(a: argparse.Namespace) -> int:
    from ._channels import parse_lead_map
    from ._classifier import load
    from ._io import open_record
    from ._jsonout import dumps
    from ._leads import parse_leads

    leads = parse_leads(a.leads) if a.leads else None
    lead_map = parse_lead_map(a.lead_map) if a.lead_map else None
    units, gain = getattr(a, "units", None), getattr(a, "gain", None)
    with open_record(a.record, fs=a.fs, leads=leads, lead_map=lead_map, units=units, gain=gain) as rec:
        name, fs, rec_leads, duration = rec.name, rec.fs, rec.leads, rec.duration_s  # header errors before loading
    clf = load(a.bundle, backend=a.backend, threads=a.threads, public_key=a.public_key, digest=a.digest)
    if a.verbose:
        for line in clf.backend_choice.lines():
            print(line, file=sys.stderr)
    if len(rec_leads) > clf.max_leads:
        raise KmerlError(
            f"{name} has {len(rec_leads)} leads but the bundle serves at most {clf.max_leads}; pick some with --leads"
        )
    # each piece is scored by the bundle that serves the leads passing its quality checks (pred.routes)
    pred = clf.predict_record(
        a.record, fs=a.fs, leads=leads, lead_map=lead_map, label_set=a.label_set, units=units, gain=gain
    )
    windows = _window_rows(clf, pred, duration)
    if getattr(a, "plot", None):
        from ._io import read_record
        from ._plot import plot_classification

        whole = read_record(a.record, fs=a.fs, leads=leads, lead_map=lead_map, units=units, gain=gain)
        plot_classification(whole, pred, windows, a.plot, label_sets=clf.label_sets)
    if a.json:
        out = {"record": str(a.record), "fs": fs, **pred.to_dict()}
        out["windows"] = windows
        if getattr(a, "plot", None):
            out["plot"] = str(a.plot)
        print(dumps(out, indent=2))
        return 0
    print(f"record   {name}: {len(rec_leads)} lead(s) {','.join(rec_leads)}, {fs:g} Hz, {duration:.1f} s")
    print(f"bundle   {pred.bundle}  (backend {pred.backend}, {pred.latency_ms:.1f} ms)")
    dropped = "; dropped: " + ", ".join(f"{k} {v}" for k, v in pred.dropped.items()) if pred.dropped else ""
    print(f"scored   {', '.join(pred.leads)} ({len(pred.leads)} of {len(pred.leads_given)} given){dropped}")
    if len(pred.routes) > 1:
        for r in pred.routes:
            print(f"route    from {r.start_s:.1f} s: {Path(r.bundle).name} on {'+'.join(r.leads)} ({r.n_windows} windows)")
    q = pred.quality
    flagged = [f"{lq.lead}:{'/'.join(lq.flags)}" for lq in q.leads if lq.flags]
    print(f"quality  {q.overall}" + (f"  [{', '.join(flagged + list(q.flags))}]" if flagged or q.flags else ""))
    if pred.rhythm is not None:
        print(f"rhythm   {pred.rhythm.lead}: {pred.rhythm.summary()}")
    af = _af_line(pred)
    if af:
        print(f"AF       {af}")
    for note in pred.notes:
        print(f"note     {note}")
    for ls, scores in pred.by_label_set.items():
        print(f"\n{ls}:")
        for cls, p in sorted(scores.items(), key=lambda kv: -kv[1]):
            print(f"  {p:6.3f}  {cls}")
    if len(windows) > 1:
        _print_window_table(windows)
    if getattr(a, "plot", None):
        print(f"\nplot     {a.plot}")
    return 0


def _af_line(pred: object) -> str:
    """The atrial fibrillation probability of the recording (mean of its windows), its largest window
    and the bundle that scored it; empty when the bundle has no such class."""
    import numpy as np

    from ._classifier import Prediction, WindowScores

    assert isinstance(pred, Prediction)
    key = next((ls for ls, scores in pred.by_label_set.items() if "atrial fibrillation" in scores), None)
    if key is None:
        return ""
    ws = pred.window_scores
    col = (ws.column(key, "atrial fibrillation") if isinstance(ws, WindowScores)
           else np.array([w["atrial fibrillation"] for w in ws]))
    i = int(col.argmax())
    names = ", ".join(dict.fromkeys(Path(r.bundle).name for r in pred.routes)) or Path(pred.bundle).name
    return (f"{pred.by_label_set[key]['atrial fibrillation']:.3f} mean of {len(col)} window(s), max {col[i]:.3f} "
            f"in the window at {pred.window_starts_s[i]:.1f} s (bundle {names})")


def _window_rows(clf: object, pred: object, duration_s: float) -> list[dict[str, object]]:
    """One row per scored window: start, end (s) and {label set: {class: probability}}."""
    from ._classifier import Classifier, Prediction

    assert isinstance(clf, Classifier) and isinstance(pred, Prediction)
    win = float(clf.bundle.preprocess_config.window_s)
    rows: list[dict[str, object]] = []
    rhythms = getattr(pred, "window_rhythm", ())
    for k, (start, flat) in enumerate(zip(pred.window_starts_s, pred.window_scores)):
        by = {ls: {c: round(flat[c], 4) for c in classes if c in flat} for ls, classes in clf.label_sets.items()}
        by = {ls: v for ls, v in by.items() if v}
        row: dict[str, object] = {"start_s": round(float(start), 3),
                                  "end_s": round(min(float(start) + win, duration_s), 3), "scores": by}
        if len(rhythms) == len(pred.window_starts_s):
            hr = rhythms[k].hr_bpm
            row["heart_rate_bpm"] = None if hr is None else round(float(hr), 1)
        rows.append(row)
    return rows


def _print_window_table(windows: list[dict[str, object]]) -> None:
    """Per-window table: the most probable class of each label set and its probability, per window."""
    first = windows[0]["scores"]
    assert isinstance(first, dict)
    sets = list(first)
    print(f"\nper window ({len(windows)} windows of the recording; the scores above are their mean):")
    has_hr = "heart_rate_bpm" in windows[0]
    header = "  window (s)    " + ("  HR " if has_hr else "") + "  ".join(f"{ls[:28]:<34}" for ls in sets)
    print(header.rstrip())
    for w in windows:
        scores = w["scores"]
        assert isinstance(scores, dict)
        cells = []
        for ls in sets:
            top = sorted(scores.get(ls, {}).items(), key=lambda kv: -kv[1])[:1]
            cells.append(f"{top[0][1]:5.2f} {top[0][0][:28]:<28}" if top else f"{'':34}")
        hr = ""
        if has_hr:
            v = w.get("heart_rate_bpm")
            hr = f"{v:4.0f} " if isinstance(v, (int, float)) else " n/a "
        print((f"  {w['start_s']:5.1f}–{w['end_s']:5.1f}   " + hr + "  ".join(cells)).rstrip())


def _cmd_info(a: argparse.Namespace) -> int:
    from ._backends import AUTO_HORIZON_WINDOWS, auto_plan
    from ._bundle import CARD, load_bundle
    from ._classifier import default_bundle_path, default_companion_path
    from ._jsonout import dumps

    b = load_bundle(a.bundle or default_bundle_path(), public_key=a.public_key, digest=a.digest)
    assert b.seal is not None and b.spec is not None
    plan = auto_plan(b)
    comp_path = None if a.bundle else default_companion_path()
    companion = None
    if comp_path is not None:
        cb = load_bundle(comp_path, public_key=a.public_key)
        assert cb.seal is not None
        companion = {"path": str(cb.path), "digest": f"sha256:{cb.seal.digest}", "model": cb.model_config.name,
                     "serves_leads": [b.max_leads + 1, cb.max_leads]}
    if a.json:
        print(dumps({
            "manifest": b.manifest,
            "integrity": {"digest": f"sha256:{b.seal.digest}", "files": len(b.seal.files), "signed": b.seal.signed,
                          "key_id": b.seal.key_id, "signature_verified": b.seal.signature_verified,
                          "digest_pinned": b.seal.digest_pinned},
            "defaulted_fields": list(b.spec.defaulted),
            "auto_backend_plan": [c.name for c in plan if c.installed and c.parity_ok],
            **({"companion": companion} if companion else {}),
        }, indent=2))
        return 0
    print(dumps(b.manifest, indent=2))
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
    if companion:
        lo, hi = companion["serves_leads"]
        print(f"companion {companion['path']} ({companion['model']}, {companion['digest']}, verified) scores "
              f"{lo}–{hi} leads; this bundle scores 1–{b.max_leads}. `kmerl-edge info {companion['path']}` shows it")
    return 0


def _cmd_models(a: argparse.Namespace) -> int:
    from ._jsonout import dumps
    from ._models import find_bundles

    found = find_bundles(a.dir)
    if a.json:
        print(dumps([b.to_dict() for b in found], indent=2))
        return 0
    if not found:
        print("no bundles found")
        return 0
    for b in found:
        print(b.describe())
        print()
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
    c.add_argument(
        "--lead-map",
        default=None,
        help="which standard lead each ECG channel of unknown position is, e.g. 'ECG 1=I,V=V5' (MCL1, V, ch1 …)",
    )
    c.add_argument("--label-set", default=None, help="only this label set")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--units", default=None, choices=["mV", "uV", "adc"], type=_unit_arg,
                   help="what the numbers of a CSV are when its header does not say (adc needs --gain)")
    c.add_argument("--gain", type=float, default=None, help="ADC counts per mV (with --units adc)")
    c.add_argument("--plot", default=None, metavar="PNG",
                   help="draw the ECG on a 25 mm/s, 10 mm/mV grid with per-window scores (extra 'plot')")
    _trust_args(c)
    c.set_defaults(func=_cmd_classify)

    i = sub.add_parser("info", help="verify a bundle; print its manifest, model card, seal and backend plan")
    i.add_argument("bundle", nargs="?", default=None, help="bundle directory (default: the shipped bundle)")
    i.add_argument("--json", action="store_true")
    _trust_args(i)
    i.set_defaults(func=_cmd_info)

    m = sub.add_parser("models", help="list the bundles available: the default and those in a user directory")
    m.add_argument("--dir", default=None,
                   help="bundle directory (default: $KMERL_EDGE_BUNDLES or ~/.local/share/kmerl-edge/bundles)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_cmd_models)

    s = sub.add_parser("stream", help="live diagnoses from a serial patch or a recording played in real time")
    s.add_argument(
        "--source", required=True,
        help="recording file, synthetic://?fs=HZ&leads=I,II, or (with the serial extra) a serial port, "
        "pyserial URL or virtual-patch://RECORD?fs=HZ&leads=I",
    )
    s.add_argument("--protocol", choices=["kmerl", "ascii"], default="kmerl")
    s.add_argument("--leads", default=None, help="comma-separated leads (required for ascii)")
    s.add_argument("--fs", type=float, default=None, help="device rate in Hz (required for ascii)")
    s.add_argument("--lead-map", default=None, help="for recordings: e.g. 'ECG 1=I,V=V5' (see classify --help)")
    s.add_argument("--hop", type=float, default=2.0, help="seconds between results")
    s.add_argument("--speed", type=float, default=1.0, help="playback speed for recording files")
    s.add_argument("--bundle", default=None)
    s.add_argument("--backend", default="auto")
    s.add_argument("--json-lines", action="store_true")
    s.add_argument("--max-seconds", type=float, default=None, help="stop after this much signal time")
    s.add_argument("--plot", default=None, metavar="PNG",
                   help="on close, draw a timeline of AF probability, heart rate, events and quality (extra 'plot')")
    s.add_argument("--disconnect-timeout", type=float, default=30.0, metavar="S",
                   help="end with a summary when the device stays disconnected longer than S seconds (default 30)")
    s.set_defaults(func=_cmd_stream)

    d = sub.add_parser("demo", help="virtual patch on a pty → serial bridge → default bundle, with AF events")
    d.add_argument("--bundle", default=None)
    d.add_argument("--backend", default="auto")
    d.add_argument("--speed", type=float, default=3.0, help="replay speed (× real time; 121 s of signal)")
    d.add_argument("--hop", type=float, default=2.0, help="seconds between results")
    d.add_argument("--json-lines", action="store_true")
    d.set_defaults(func=_cmd_demo)

    f = sub.add_parser("fleet", add_help=False,
                       help="serve patches on an MQTT broker, in this process or on Ray (extra 'fleet'; "
                       "kmerl-edge fleet --help)")
    f.add_argument("fleet_args", nargs=argparse.REMAINDER)
    f.set_defaults(func=_cmd_fleet)

    from ._cli_common import add_common_args

    add_common_args(ap, prog="kmerl-edge", subparsers=[c, i, m, s, d])
    return ap


def _cmd_fleet(a: argparse.Namespace) -> int:
    """``kmerl-edge fleet``: found through the ``kmerl_edge.commands`` entry point (the runtime does not
    import the fleet package, which joins it with the firmware bridge)."""
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="kmerl_edge.commands") if ep.name == "fleet"]
    if not eps:
        raise KmerlError("kmerl-edge fleet is not installed: pip install 'kmerl-edge[fleet]'")
    run: Callable[[list[str]], int] = eps[0].load()
    return run(list(a.fleet_args))


def _unit_arg(text: str) -> str:
    key = text.strip().lower()
    return {"mv": "mV", "uv": "uV", "µv": "uV", "μv": "uV", "adc": "adc"}.get(key, text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fleet"]:  # its own parser (its --help too) lives in the fleet package
        try:
            return _cmd_fleet(argparse.Namespace(fleet_args=argv[1:]))
        except KmerlError as exc:
            print(f"kmerl-edge: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
    ap = build_parser()
    a = ap.parse_args(argv)
    from ._cli_common import configure

    configure(a)
    func: Callable[[argparse.Namespace], int] = a.func
    try:
        return func(a)
    except KmerlError as exc:
        print(f"kmerl-edge: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except FileNotFoundError as exc:
        print(f"kmerl-edge: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("kmerl-edge: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # permission denied, disk errors …: one line, not a traceback
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"kmerl-edge: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _repo_root() -> Path:  # used by tests to locate fixtures
    return Path(__file__).resolve().parents[1]
