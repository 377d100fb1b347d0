"""Markdown tables and PNG plots (matplotlib, Agg) of benchmark results, and JSON writing."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "write_json",
    "fmt_ms",
    "fmt_bytes",
    "machine_line",
    "latency_markdown",
    "roofline_markdown",
    "accuracy_markdown",
    "stream_markdown",
    "plot_latency_vs_leads",
    "plot_auc_vs_leads",
]


def write_json(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``data`` as indented JSON (NaN written as null), creating parent folders."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(clean(data), indent=2, allow_nan=False) + "\n")
    return p


def fmt_ms(v: float | None) -> str:
    """Milliseconds with 3 significant figures (``—`` for none)."""
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}×"


def machine_line(machine: Mapping[str, Any]) -> str:
    v = machine.get("versions", {})
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime", "executorch", "tensorrt") if v.get(k))
    return (
        f"{machine.get('cpu')}, {machine.get('cores')} cores ({machine.get('cores_usable')} usable), "
        f"{machine.get('threads')} thread(s); {libs}; {machine.get('date')}"
    )


def _stat(d: Mapping[str, Any] | None, key: str) -> float | None:
    return None if not d else d.get(key)


def latency_markdown(report: Mapping[str, Any]) -> str:
    """The latency table of a :meth:`benchmarks.latency.LatencyReport.to_dict`."""
    b = report["bundle"]
    o = report["options"]
    lines = [
        f"### Latency — `{b['model']}` ({'trained' if b['trained'] else 'random weights'}), batch 1",
        "",
        f"Machine: {machine_line(report['machine'])}. Input: {report['input']}. "
        f"{o['iters']} timed iterations after {o['warmup']} warm-up; peak RSS "
        f"{'per configuration (fresh process)' if o['isolate'] else 'process-wide (cumulative)'}.",
        "",
        "| backend | leads | model ms median / p95 / p99 | with preprocessing ms median / p99 | "
        "preprocessing ms | GFLOP | artifact | peak RSS MiB | speed-up vs MERL (model / with prep.) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = list(report["results"]) + list(report.get("baseline", []))
    for r in rows:
        lead = f"{r['n_leads']} ({','.join(r['leads'])})" if r["n_leads"] <= 3 else str(r["n_leads"])
        if r["status"] != "ok":
            lines.append(f"| {r['backend']} | {lead} | {r['status']}: {r['reason']} | | | | | | |")
            continue
        m, e, p = r["model"], r["end_to_end"], r["preprocess"]
        sp = "baseline" if r["backend"] == "merl-baseline" else f"{_x(r['speedup_model'])} / {_x(r['speedup_end_to_end'])}"
        lines.append(
            f"| {r['backend']} | {lead} | {fmt_ms(_stat(m, 'median_ms'))} / {fmt_ms(_stat(m, 'p95_ms'))} / "
            f"{fmt_ms(_stat(m, 'p99_ms'))} | {fmt_ms(_stat(e, 'median_ms'))} / {fmt_ms(_stat(e, 'p99_ms'))} | "
            f"{fmt_ms(_stat(p, 'median_ms'))} | {r['gflop']:.4f} | {r['artifact']} ({fmt_bytes(r['artifact_bytes'])}) | "
            f"{r['peak_rss_mb']:.0f} | {sp} |"
        )
    best = [r for r in report["results"] if r["status"] == "ok" and r["n_leads"] == 1 and r["speedup_model"]]
    int8 = [r for r in best if r["backend"].endswith("-int8")]
    lines.append("")
    if int8:
        top = max(int8, key=lambda r: r["speedup_model"])
        lines.append(
            f"1-lead int8 speed-up over the MERL baseline: **{top['speedup_model']:.1f}×** ({top['backend']}; "
            f"goal ≥ 25× with the default int8 student: {'met' if top['speedup_model'] >= 25 else 'not met'})."
        )
    elif best:
        top = max(best, key=lambda r: r["speedup_model"])
        lines.append(
            f"Best 1-lead speed-up over the MERL baseline: {top['speedup_model']:.1f}× ({top['backend']}); "
            "no int8 backend ran, so the ≥ 25× int8 goal is not evaluated."
        )
    return "\n".join(lines) + "\n"


def roofline_markdown(report: Mapping[str, Any]) -> str:
    g = report["gemm"]
    lines = [
        "### Roofline — measured fp32 GEMM throughput",
        "",
        f"Machine: {machine_line(report['machine'])}.",
        "",
        "| GEMM n×n×n | GFLOP/s (median) |",
        "| --- | --- |",
    ]
    lines += [f"| {s['n']} | {s['gflops']:.1f} |" for s in g["sizes"]]
    lines += [
        "",
        f"Peak: **{g['peak_gflops']:.1f} GFLOP/s** ({g['threads']} thread(s)). "
        "Fraction = (GFLOP ÷ peak) ÷ measured model latency: the share of the fp32 GEMM roofline a configuration "
        "reaches (int8 backends run integer GEMMs and can exceed 100 %).",
        "",
        "| backend | leads | GFLOP | model ms (median) | roofline ms | fraction of roofline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["configs"]:
        lines.append(
            f"| {r['backend']} | {r['n_leads']} | {r['gflop']:.4f} | {fmt_ms(r['median_ms'])} | "
            f"{fmt_ms(r['roofline_ms'])} | {r['fraction']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def _auc(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def accuracy_markdown(report: Mapping[str, Any]) -> str:
    """Macro AUC per (dataset/label set, model) × lead subset."""
    lines = ["### Zero-shot macro AUC by lead subset (bootstrap 95 % interval in brackets)", ""]
    lines.append(f"Machine: {machine_line(report['machine'])}. Bundle: `{report['bundle']}`.")
    for name, note in report.get("skipped_models", {}).items():
        lines.append(f"- {name}: skipped — {note}")
    lines.append("")
    for task in report["tasks"]:
        subsets = list(task["subsets"])
        lines += [
            f"**{task['name']}** ({task['n']} windows; classes scored: {', '.join(task['classes_scored']) or 'none'})",
            "",
            "| model | " + " | ".join(subsets) + " |",
            "| --- |" + " --- |" * len(subsets),
        ]
        for model, by in task["auc"].items():
            cells = []
            ci = task.get("auc_ci95", {}).get(model, {})
            for s in subsets:
                v = by.get(s)
                cell = _auc(v) if not isinstance(v, str) else v
                if ci.get(s):
                    cell += f" [{ci[s][0]:.2f}, {ci[s][1]:.2f}]"
                cells.append(cell)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("af_loso"):
        from .af import af_loso_markdown

        lines.append(af_loso_markdown(report["af_loso"]))
    if report.get("af_events"):
        lines += ["### AF events on Holter records (rule tuned on training patients)", "",
                  "| leads | rule | | false events/h | non-AF hours | episodes detected |", "| --- | --- | --- | --- | --- | --- |"]
        for leads, ev in report["af_events"].items():
            for name in ("bundle", "chosen", "default"):
                if f"{name}_rule" not in ev:
                    continue
                rule = ev[f"{name}_rule"]
                for part in ("train", "test"):
                    r = ev[f"{name}_on_{part}"]
                    lines.append(f"| {leads} | {name} {rule} | {part} | {r['false_per_hour']} | {r['non_af_hours']} | "
                                 f"{int(r['detected'])}/{int(r['episodes'])} |")
                ext = ev.get("external_normal", {}).get(name)
                if ext:
                    lines.append(f"| {leads} | {name} | external normal rhythm ({', '.join(ev['external_normal']['records'])}) "
                                 f"| {ext['false_per_hour']} | {ext['non_af_hours']} | – |")
        lines.append("")
    return "\n".join(lines)


def stream_markdown(report: Mapping[str, Any]) -> str:
    lines = ["### Streaming gateway", "", f"Machine: {machine_line(report['machine'])}.", ""]
    if report.get("status") != "ok":
        lines.append(f"skipped: {report.get('reason')}")
        return "\n".join(lines) + "\n"
    res = report["result"]
    lines += [
        f"Backend {report.get('backend')}; one-lead patches for {res['duration_s']:g} s each. Largest N "
        f"sustained at real time ({res['criterion']}): **{res['max_sustained']}**",
        "",
        "| patches | windows/s | window p99 ms | push lag p99 ms | dropped | mean batch | real time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r.get('patches')} | {r.get('windows_per_s')} | {r.get('latency_ms_p99')} | "
            f"{r.get('push_lag_ms_p99')} | {r.get('dropped')} | {r.get('mean_batch')} | "
            f"{'yes' if r.get('real_time') else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_vs_leads(report: Mapping[str, Any], path: str | Path, key: str = "model") -> Path:
    """Median latency (log scale) against number of leads, one line per backend plus the baseline."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in list(report["results"]) + list(report.get("baseline", [])):
        if r["status"] == "ok" and r.get(key):
            series.setdefault(r["backend"], []).append((r["n_leads"], r[key]["median_ms"]))
    for name, pts in series.items():
        pts.sort()
        style = {"linestyle": "--", "color": "black"} if name == "merl-baseline" else {}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name, **style)
    ax.set_yscale("log")
    ax.set_xticks(list(report["options"]["lead_counts"]))
    ax.set_xlabel("number of leads")
    ax.set_ylabel(f"median latency, ms ({'model only' if key == 'model' else 'with preprocessing'})")
    ax.set_title(f"{report['bundle']['model']}, batch 1, {report['machine'].get('threads')} thread(s)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def plot_auc_vs_leads(tasks: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Macro AUC against the number of leads (count subsets only), one panel per task, one line per model."""
    plt = _plt()
    n = max(1, len(tasks))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model, by in task["auc"].items():
            pts = [
                (int(k), v)
                for k, v in by.items()
                if k.isdigit() and isinstance(v, (int, float)) and v is not None
            ]
            if pts:
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
        ax.set_title(task["name"], fontsize=9)
        ax.set_xlabel("number of leads")
        ax.set_ylabel("macro AUC (zero-shot)")
        ax.set_xticks([1, 2, 3, 6, 12])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)
