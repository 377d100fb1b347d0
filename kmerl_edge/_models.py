"""The bundles a user has: the default one shipped in the package and those in a user directory.

The user directory is ``$KMERL_EDGE_BUNDLES`` if set, else ``$XDG_DATA_HOME/kmerl-edge/bundles``
(``~/.local/share/kmerl-edge/bundles``); every sub-directory holding a ``manifest.json`` is a bundle.
Listing reads manifests only (fast); ``kmerl-edge info BUNDLE`` verifies every artifact's hash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BundleSummary", "find_bundles", "user_bundle_dir"]


def user_bundle_dir() -> Path:
    env = os.environ.get("KMERL_EDGE_BUNDLES")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kmerl-edge" / "bundles"


@dataclass(frozen=True)
class BundleSummary:
    """What ``kmerl-edge models`` prints for one bundle."""

    path: Path
    source: str  # "default", "companion" (the default bundle's, for more leads) or "user"
    model: str
    trained: bool
    max_leads: int | None
    lead_sets: str
    label_sets: dict[str, list[str]]
    backends: tuple[str, ...]
    auc: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": self.source,
            "model": self.model,
            "trained": self.trained,
            "max_leads": self.max_leads,
            "lead_sets": self.lead_sets,
            "label_sets": self.label_sets,
            "backends": list(self.backends),
            "auc": self.auc,
            "error": self.error,
        }

    def describe(self) -> str:
        if self.error:
            return f"{self.path}  [{self.source}]\n  unreadable: {self.error}"
        lines = [f"{self.path.name}  [{self.source}]  {self.path}"]
        if self.source == "companion":
            lines.append("  role        load() without a bundle scores lead sets larger than the default bundle's with it")
        lines.append(f"  model       {self.model}" + ("" if self.trained else "  (randomly initialised: test only)"))
        leads = self.lead_sets + (f" (at most {self.max_leads} leads)" if self.max_leads else "")
        lines.append(f"  leads       {leads}")
        lines.append(f"  backends    {', '.join(self.backends) or 'torch weights only'}")
        for ls, classes in self.label_sets.items():
            lines.append(f"  label set   {ls}: {', '.join(classes)}")
        for what, by_leads in self.auc.items():
            cells = ", ".join(f"{k}: {v:.3f}" for k, v in by_leads.items())
            lines.append(f"  AUC         {what}: {cells}")
        if not self.auc:
            lines.append("  AUC         none measured")
        return "\n".join(lines)


def _auc(manifest: dict[str, Any]) -> dict[str, Any]:
    """Measured macro AUCs by lead set: the build's held-out evaluations (``metrics.default_model.student``,
    {evaluation: {leads: {"macro_auc", "n"}}}) where present, else the exporter's ``metrics.auc``."""
    built = ((manifest.get("metrics") or {}).get("default_model") or {}).get("student")
    fused = bool((manifest.get("metrics") or {}).get("af_fusion"))  # predict reports the fused AF probability
    stacked = bool((manifest.get("metrics") or {}).get("superclass_stack"))  # and the stacked superclass scores
    if isinstance(built, dict) and built:
        out_b: dict[str, Any] = {}
        for evaluation, by_leads in built.items():
            if not isinstance(by_leads, dict):
                continue
            row = {
                str(leads).replace(",", "+"): float(v["macro_auc"])
                for leads, v in by_leads.items()
                if isinstance(v, dict) and isinstance(v.get("macro_auc"), (int, float))
            }
            n = next((v.get("n") for v in by_leads.values() if isinstance(v, dict) and v.get("n")), None)
            if row:
                notes = [f"n={n}"] if n else []
                if fused and evaluation.endswith("_af"):
                    notes.append("network alone, before the bundle's AF fusion")
                if stacked and evaluation.endswith("_superclass"):
                    notes.append("head alone, before the bundle's superclass stack")
                out_b[evaluation + (f" ({', '.join(notes)})" if notes else "")] = row
        if out_b:
            return out_b
    m = (manifest.get("metrics") or {}).get("auc") or {}
    if not isinstance(m, dict) or not m.get("meaningful", True):
        return {}
    out: dict[str, Any] = {}
    lead_sets = m.get("lead_sets") or {}
    where = f"{m.get('label_set', '?')}" + (f", PTB-XL fold {m['fold']}" if m.get("fold") else "")
    for model_key in ("student", "teacher"):
        vals = m.get(model_key)
        if isinstance(vals, dict) and vals:
            named = {}
            for k, v in vals.items():
                if isinstance(v, (int, float)):
                    leads = lead_sets.get(k)
                    named["+".join(leads) if isinstance(leads, list) else f"{k} leads"] = float(v)
            if named:
                out[f"{where} ({model_key})" if model_key == "teacher" else where] = named
            if model_key == "student" and named:
                break
    return out


def _summary(path: Path, source: str) -> BundleSummary:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return BundleSummary(path, source, "?", False, None, "?", {}, (), {}, str(exc))
    model = manifest.get("model") or {}
    arts = manifest.get("artifacts") or {}
    backends = sorted({
        str(a.get("backend_name") or a.get("backend"))
        for a in (arts.values() if isinstance(arts, dict) else arts)
        if isinstance(a, dict) and (a.get("backend_name") or a.get("backend")) not in (None, "torch", "any", "none")
    })
    sets = manifest.get("supported_lead_sets", "?")
    lead_sets = "any of the 12" if sets == "any" else (
        "; ".join(",".join(s) for s in sets) if isinstance(sets, list) else str(sets)
    )
    label_sets = {
        str(k): list(v.get("classes", v) if isinstance(v, dict) else v)
        for k, v in (manifest.get("label_sets") or {}).items()
    }
    return BundleSummary(
        path=path,
        source=source,
        model=str(model.get("name", "?")),
        trained=bool(manifest.get("trained", False)),
        max_leads=manifest.get("max_leads"),
        lead_sets=lead_sets,
        label_sets=label_sets,
        backends=tuple(backends),
        auc=_auc(manifest),
    )


def find_bundles(user_dir: str | Path | None = None) -> list[BundleSummary]:
    """The default bundle (if this install ships one), its companion (``load()`` scores 4–12 leads with
    it) and every bundle under ``user_dir``."""
    from ._classifier import _DEFAULT_BUNDLE, default_companion_path

    out: list[BundleSummary] = []
    if (_DEFAULT_BUNDLE / "manifest.json").exists():
        out.append(_summary(_DEFAULT_BUNDLE, "default"))
    comp = default_companion_path()
    if comp is not None:
        out.append(_summary(comp, "companion"))
    root = Path(user_dir).expanduser() if user_dir is not None else user_bundle_dir()
    if root.is_dir():
        if (root / "manifest.json").exists():
            out.append(_summary(root, "user"))
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            if (d / "manifest.json").exists():
                out.append(_summary(d, "user"))
    return out
