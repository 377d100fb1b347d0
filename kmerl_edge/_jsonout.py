"""Strict JSON output: NaN and ±Inf become ``null`` (``json.dumps`` would write bare ``NaN``)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["strict", "dumps"]


def strict(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, numbers, numpy scalars/arrays) with non-finite floats → None."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(obj)`` with ``allow_nan=False``: always valid (RFC 8259) JSON."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)
