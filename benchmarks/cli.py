"""``kmerl-bench``: what wearable makers use to choose a device configuration.

    kmerl-bench latency  [--bundle B] [--leads 1,2,3,6,12] [--backends torch,onnxruntime,...] [--threads N]
                         [--iters 200] [--warmup 20] [--isolate] [--json OUT] [--out DIR]
    kmerl-bench roofline [latency options | --latency-json IN] [--json OUT] [--out DIR]
    kmerl-bench stream   [--bundle B] [--backend NAME] [--threads N] [--patches 250,500,1000] [--duration 30]
                         [--json OUT] [--out DIR]
    kmerl-bench accuracy [--bundle B] [--data ../shared/data] [--teacher CKPT] [--cpsc2021-records a,b]
                         [--json OUT] [--out DIR]
    kmerl-bench fuzz     [--cases 100000] [--seed 0] [--workers 2] [--case-timeout 20] [--bridge-frames N]
                         [--json OUT]
    kmerl-bench train-throughput --data STORE --out DIR [--device cuda] [--preset paper] [--batch 512]
                         [--workers 4,8] [--k 128] [--steps 150] [--nproc 1] [--set KEY=VALUE]
                         | --runs RUNS_JSON
    kmerl-bench all --out results/DIR [options of the above]

Every number comes from a real run on this machine; results are JSON, markdown tables and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .latency import ALL_BACKENDS, DEFAULT_LEAD_COUNTS, LatencyOptions

__all__ = ["main", "build_parser", "run_stream"]

_REPO = Path(__file__).resolve().parents[1]
_DEFAULT_DATA = _REPO.parent / "shared" / "data"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(not 1 <= v <= 12 for v in vals):
        raise argparse.ArgumentTypeError(f"lead counts must be between 1 and 12, got {text!r}")
    return vals


def _int_list_any(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _name_list(text: str) -> tuple[str, ...]:
    vals = tuple(x.strip() for x in text.split(",") if x.strip())
    if not vals:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return vals


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _bundle_path(arg: str | None) -> Path:
    if arg is not None:
        return Path(arg)
    from kmerl_edge import default_bundle_path

    return default_bundle_path()  # BundleError with a clear message when the package ships none


def _add_common(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    p.add_argument("--bundle", help="bundle directory (default: the package's default bundle)")
    p.add_argument("--threads", type=_positive, default=1, help="torch and ONNX Runtime threads (default 1)")
    if out:
        p.add_argument("--json", dest="json_out", metavar="OUT", help="write the results as JSON to OUT")
        p.add_argument("--out", metavar="DIR", help="write JSON, markdown and PNG plots into DIR")


def _add_latency(p: argparse.ArgumentParser, *, isolate_default: bool) -> None:
    p.add_argument("--leads", type=_int_list, default=DEFAULT_LEAD_COUNTS, help="lead counts (default 1,2,3,6,12)")
    p.add_argument("--backends", type=_name_list, default=ALL_BACKENDS, help="comma-separated backend names")
    p.add_argument("--iters", type=_positive, default=200, help="timed iterations per measurement (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up iterations (default 20)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=isolate_default,
                   help="measure each configuration in a fresh process (own peak RSS)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="do not time the MERL baseline")
    p.add_argument("--record", help="12-lead record used as input (default: PTB-XL ecg_id 1 from the fixtures)")
    p.add_argument("--device-fs", type=_positive_float, default=None,
                   help="resample the input to a patch's rate (e.g. 250) so preprocessing includes resampling")


def _add_accuracy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(_DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--teacher", help="teacher checkpoint (trainer.checkpoint); without it the teacher is skipped")
    p.add_argument("--cpsc2021-records", type=_name_list, default=None,
                   help="held-out CPSC2021 record names, comma-separated (default: the bundle's held-out list)")
    p.add_argument("--heldout", default=None,
                   help="held-out list (JSON: test_records, train_patients) for a bundle without heldout.json")
    p.add_argument("--loso", action="store_true",
                   help="also AF leave-one-source-out: the AF fusion refitted without each source, scored on it")
    p.add_argument("--af-events", action="store_true",
                   help="also AF events on the Holter records: rule tuned on training patients, false events/h "
                        "on held-out ones")
    p.add_argument("--fold", type=int, default=10, help="PTB-XL strat_fold to evaluate (default 10)")


def _add_stream(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", help="backend of the gateway's classifier (default auto)")
    p.add_argument("--patches", type=_int_list_any, default=(250, 500, 1000),
                   help="numbers of concurrent patches to try, ascending (default 250,500,1000)")
    p.add_argument("--duration", type=float, default=30.0, help="wall seconds per gateway run (default 30)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kmerl-bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("latency", help="batch-1 latency per backend × lead count, with a MERL baseline")
    _add_common(p)
    _add_latency(p, isolate_default=False)
    p = sub.add_parser("roofline", help="measured fp32 GEMM throughput and each configuration against it")
    _add_common(p)
    _add_latency(p, isolate_default=False)
    p.add_argument("--latency-json", help="reuse a latency JSON instead of measuring again")
    p.add_argument("--gemm-sizes", type=_name_list, default=None, help="square GEMM sizes (default 128,256,512,1024)")
    p = sub.add_parser("stream", help="concurrent simulated patches through the gateway at real time")
    _add_common(p)
    _add_stream(p)
    p = sub.add_parser("fleet", help="patches over MQTT on a local Ray cluster of 1 and 2 nodes vs the gateway")
    _add_common(p)
    p.add_argument("--backend", default="onnxruntime", help="backend of every classifier (default onnxruntime)")
    p.add_argument("--patches", type=_int_list_any, default=(100, 200, 400),
                   help="numbers of concurrent patches to try, ascending (default 100,200,400)")
    p.add_argument("--duration", type=float, default=20.0, help="wall seconds per run (default 20)")
    p.add_argument("--nodes", type=_int_list_any, default=(1, 2), help="Ray worker node counts (default 1,2)")
    p.add_argument("--inference", type=_name_list, default=("actors", "serve"),
                   help="where the model runs: actors (in the shard), serve (a Ray Serve deployment with "
                        "@serve.batch); default both, in the same run")
    p.add_argument("--no-gateway", action="store_true", help="skip the in-process gateway baseline")
    p.add_argument("--autoscale", action="store_true",
                   help="also record the Serve scorer's replicas over time: idle, load, idle")
    p.add_argument("--autoscale-patches", type=int, default=200, help="patches of the autoscaling load (default 200)")
    p.add_argument("--tls", action="store_true",
                   help="the broker with TLS, a password per account and the per-device ACL (docs/fleet.md)")
    p.add_argument("--pin", action="store_true",
                   help="pin the load side (simulator, listener, broker) to core 0 and the Ray worker nodes (and "
                        "the gateway baseline) to the other cores (taskset-style CPU affinity)")
    p = sub.add_parser("accuracy", help="zero-shot macro AUC per label set and lead subset")
    _add_common(p)
    _add_accuracy(p)
    p = sub.add_parser("rhythm", help="R-peak Se/PPV, heart-rate error and AF-evidence AUC vs xqrs and NeuroKit2")
    p.add_argument("--data", default=str(_DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--detectors", type=_name_list, default=("kmerl", "xqrs", "neurokit2"),
                   help="detectors to run (default kmerl,xqrs,neurokit2)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--out", metavar="DIR", help="write JSON and markdown into DIR")
    p = sub.add_parser("sweep", help="student width × depth sweep: train each with the v2 recipe, held-out AUC vs "
                                     "latency, the knee within the budget")
    from .sweep import add_arguments as _add_sweep

    _add_sweep(p)
    p = sub.add_parser("train-throughput", help="trainer samples/s under torchrun on a tiled shard store, and the "
                                                "training step's compute ceiling")
    from .train_throughput import add_arguments as _add_train_throughput

    _add_train_throughput(p)
    p = sub.add_parser("fuzz", help="seeded fuzz of the whole runtime surface: crashes, tracebacks, hangs, "
                                    "silent wrong results, lost samples")
    p.add_argument("--cases", type=_positive, default=100_000, help="generated cases (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive, default=2, help="worker processes (default 2)")
    p.add_argument("--case-timeout", type=_positive_float, default=20.0, help="seconds before a case is a hang")
    p.add_argument("--families", default=None, help="comma-separated case families (default: all)")
    p.add_argument("--bridge-frames", type=int, default=0, help="also run the bridge's frame fuzz over N frames")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the results as JSON to OUT "
                                                                  "(default benchmarks/results/surface_fuzz.json)")
    p = sub.add_parser("all", help="everything into one results folder")
    _add_common(p, out=False)
    _add_latency(p, isolate_default=True)
    _add_accuracy(p)
    _add_stream(p)
    p.add_argument("--skip", type=_name_list, default=(), help="parts to leave out: stream,accuracy,roofline")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder")
    from kmerl_edge._cli_common import add_common_args

    add_common_args(ap, prog="kmerl-bench", subparsers=list(sub.choices.values()))
    return ap


# ----------------------------------------------------------------------------------------------- parts
def _latency_options(a: argparse.Namespace) -> LatencyOptions:
    unknown = [b for b in a.backends if b not in ALL_BACKENDS]
    if unknown:
        raise CliError(f"unknown backend(s) {', '.join(unknown)}; known: {', '.join(ALL_BACKENDS)}")
    return LatencyOptions(
        bundle=_bundle_path(a.bundle),
        lead_counts=tuple(a.leads),
        backends=tuple(a.backends),
        threads=a.threads,
        iters=a.iters,
        warmup=max(0, a.warmup),
        isolate=a.isolate,
        baseline=a.baseline,
        record=None if a.record is None else Path(a.record),
        device_fs=a.device_fs,
    )


def _latency(a: argparse.Namespace) -> dict[str, Any]:
    from .latency import run_latency

    return run_latency(_latency_options(a)).to_dict()


def _roofline(a: argparse.Namespace, latency: dict[str, Any] | None = None) -> dict[str, Any]:
    from .roofline import run_roofline

    if latency is None:
        if getattr(a, "latency_json", None):
            latency = json.loads(Path(a.latency_json).read_text())
            if latency.get("kind") != "latency":
                raise CliError(f"{a.latency_json} is not a kmerl-bench latency JSON")
        else:
            latency = _latency(a)
    sizes = getattr(a, "gemm_sizes", None)
    if sizes:
        try:
            ns = [int(x) for x in sizes]
        except ValueError:
            raise CliError(f"--gemm-sizes must be integers, got {','.join(sizes)}") from None
        return run_roofline(latency, threads=a.threads, sizes=ns)
    return run_roofline(latency, threads=a.threads)


def run_stream(
    bundle: Path, *, backend: str, threads: int, patches: Sequence[int], duration_s: float
) -> dict[str, Any]:
    """N one-lead simulated patches through one gateway at real time, for each N of ``patches`` in
    ascending order until one is not sustained (:func:`benchmarks.stream_gateway.bench_gateway`: no
    dropped window, push lag p99 and window latency p99 ≤ 250 ms)."""
    import importlib

    import kmerl_edge

    from ._stats import machine_info

    base = {"kind": "stream", "machine": machine_info(threads), "bundle": str(bundle)}
    try:
        mod = importlib.import_module("benchmarks.stream_gateway")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.stream_gateway":
            raise
        return {**base, "status": "skipped", "reason": "benchmarks/stream_gateway.py does not exist yet"}
    if not callable(getattr(mod, "bench_gateway", None)):
        return {**base, "status": "skipped", "reason": "benchmarks.stream_gateway has no bench_gateway()"}
    clf = kmerl_edge.load(bundle, backend=backend, threads=threads)
    runs = []
    best = 0
    for n in sorted(patches):
        r = mod.bench_gateway(clf, int(n), float(duration_s))
        runs.append(r)
        if not r.get("real_time"):
            break
        best = max(best, int(n))
    return {
        **base,
        "status": "ok",
        "backend": clf.backend_name,
        "result": {"max_sustained": best, "criterion": "no drops, push lag p99 and window latency p99 <= 250 ms",
                   "duration_s": duration_s, "runs": runs},
    }


def _stream(a: argparse.Namespace) -> dict[str, Any]:
    return run_stream(_bundle_path(a.bundle), backend=a.backend, threads=a.threads, patches=a.patches,
                      duration_s=a.duration)


def _fleet(a: argparse.Namespace) -> dict[str, Any]:
    from .fleet import run_fleet

    return run_fleet(_bundle_path(a.bundle), backend=a.backend, threads=a.threads, patches=a.patches,
                     duration_s=a.duration, nodes=a.nodes, inference=a.inference, gateway=not a.no_gateway,
                     autoscale=a.autoscale, autoscale_patches=a.autoscale_patches, pin=a.pin,
                     tls=a.tls)


def _accuracy(a: argparse.Namespace) -> dict[str, Any]:
    from .accuracy import run_accuracy

    data = Path(a.data)
    if not data.is_dir():
        raise CliError(f"data folder {data} not found (pass --data)")
    from .accuracy import TrainingPatientError

    try:
        res = run_accuracy(
            bundle=_bundle_path(a.bundle),
            data_root=data,
            teacher=a.teacher,
            cpsc2021_records=a.cpsc2021_records,
            fold=a.fold,
            threads=a.threads,
            heldout=a.heldout,
        )
        if getattr(a, "loso", False):
            from .af import run_af_loso

            res["af_loso"] = run_af_loso(bundle=_bundle_path(a.bundle), data_root=data, threads=a.threads,
                                         heldout=a.heldout)
        if getattr(a, "af_events", False):
            from .af_events import run_af_events

            res["af_events"] = {",".join(leads): run_af_events(
                bundle=_bundle_path(a.bundle), data_root=data, heldout=a.heldout, leads=leads, threads=a.threads)
                for leads in (("I",), ("I", "II"), ("II",))}
    except TrainingPatientError as exc:
        raise CliError(str(exc)) from None
    return res


# ---------------------------------------------------------------------------------------------- output
def _markdown(kind: str, res: dict[str, Any]) -> str:
    from . import report

    return {
        "latency": report.latency_markdown,
        "roofline": report.roofline_markdown,
        "stream": report.stream_markdown,
        "accuracy": report.accuracy_markdown,
        "rhythm": _rhythm_markdown,
        "fleet": _fleet_markdown,
    }[kind](res)


def _fleet_markdown(res: dict[str, Any]) -> str:
    from .fleet import fleet_markdown

    return fleet_markdown(res)


def _rhythm_markdown(res: dict[str, Any]) -> str:
    from .rhythm import rhythm_markdown

    return rhythm_markdown(res)


def _rhythm(a: argparse.Namespace) -> dict[str, Any]:
    from .rhythm import run_rhythm

    return run_rhythm(Path(a.data), detectors=tuple(a.detectors))


def _plots(kind: str, res: dict[str, Any], out: Path) -> list[Path]:
    from . import report

    if kind == "latency":
        return [
            report.plot_latency_vs_leads(res, out / "latency_vs_leads.png", "model"),
            report.plot_latency_vs_leads(res, out / "latency_with_preprocessing_vs_leads.png", "end_to_end"),
        ]
    if kind == "accuracy":
        return [report.plot_auc_vs_leads(res["tasks"], out / "auc_vs_leads.png")]
    return []


def _emit(kind: str, res: dict[str, Any], a: argparse.Namespace) -> None:
    from .report import write_json

    md = _markdown(kind, res)
    print(md)
    if getattr(a, "json_out", None):
        write_json(res, a.json_out)
    if getattr(a, "out", None):
        out = Path(a.out)
        write_json(res, out / f"{kind}.json")
        (out / f"{kind}.md").write_text(md)
        for p in _plots(kind, res, out):
            print(f"wrote {p}")


def _all(a: argparse.Namespace) -> None:
    from .report import machine_line, write_json

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    lat = _latency(a)
    results["latency"] = lat
    if "roofline" not in a.skip:
        results["roofline"] = _roofline(a, lat)
    if "stream" not in a.skip:
        results["stream"] = _stream(a)
    if "accuracy" not in a.skip:
        results["accuracy"] = _accuracy(a)
    images: list[Path] = []
    sections = [f"# kmerl-bench results\n\nMachine: {machine_line(lat['machine'])}.\n"]
    for kind, res in results.items():
        sections.append(_markdown(kind, res))
        images += _plots(kind, res, out)
    sections += [f"![{p.stem}]({p.name})\n" for p in images]
    write_json({"kind": "all", "machine": lat["machine"], **results}, out / "results.json")
    (out / "results.md").write_text("\n".join(sections))
    print("\n".join(sections))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from kmerl_edge import KmerlError
    from kmerl_edge._cli_common import configure

    configure(a)

    if a.command == "fuzz":
        from .surface_fuzz import main as fuzz_main

        argv_f = ["--cases", str(a.cases), "--seed", str(a.seed), "--workers", str(a.workers),
                  "--case-timeout", str(a.case_timeout), "--bridge-frames", str(a.bridge_frames)]
        argv_f += ["--families", a.families] if a.families else []
        argv_f += ["--json", a.json_out] if a.json_out else []
        return fuzz_main(argv_f)
    if a.command == "sweep":
        from .sweep import run as sweep_run

        return sweep_run(a, list(sys.argv[1:] if argv is None else argv), prog="kmerl-bench")
    if a.command == "train-throughput":
        from .train_throughput import run as train_throughput_run

        try:
            train_throughput_run(a)
        except KmerlError as exc:
            print(f"kmerl-bench: error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        if a.command == "all":
            _all(a)
        else:
            res = {
                "latency": _latency,
                "roofline": _roofline,
                "stream": _stream,
                "fleet": _fleet,
                "accuracy": _accuracy,
                "rhythm": _rhythm,
            }[a.command](a)
            _emit(a.command, res, a)
    except (CliError, KmerlError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"kmerl-bench: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"kmerl-bench: error: a needed library is missing ({exc}); pip install 'kmerl-edge[all]'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
