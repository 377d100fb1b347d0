"""benchmarks.superclass_shift: each device-shift family changes what it says and nothing else, seeded."""

from __future__ import annotations

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge.stream import demo_record_path

pytest.importorskip("scipy")
from benchmarks.superclass_shift import SHIFTS, apply_shift, decide, polarity_guard  # noqa: E402


@pytest.fixture(scope="module")
def rec() -> tuple[np.ndarray, float, list[str]]:
    r = kmerl_edge.read_record(demo_record_path())  # real Holter excerpt, I + II
    return r.signal[:, :2000].astype(np.float64), float(r.fs), list(r.leads)


def test_shifts_are_seeded_and_do_what_they_say(rec):
    x, fs, leads = rec
    for name in SHIFTS:
        a, fa = apply_shift(name, x, fs, leads, np.random.default_rng([0, 1]))
        b, _ = apply_shift(name, x, fs, leads, np.random.default_rng([0, 1]))
        assert np.array_equal(a, b) and np.isfinite(a).all()
        if name == "clean":
            assert np.array_equal(a, x) and fa == fs
        elif name == "invert_I":
            assert np.array_equal(a[0], -x[0]) and np.array_equal(a[1], x[1])
        elif name.startswith("fs"):
            assert fa == float(name[2:]) and a.shape[1] == round(x.shape[1] * fa / fs)
        else:
            assert fa == fs and a.shape == x.shape and not np.allclose(a, x)
    with pytest.raises(ValueError, match="unknown shift"):
        apply_shift("gravity", x, fs, leads, np.random.default_rng(0))


def test_polarity_guard_and_decision():
    s, h = np.full((3, 5), 0.9), np.full((3, 5), 0.1)
    flags = [{"lead_I_qrs_t": [-1.0, -0.2]}, {"lead_I_qrs_t": [-1.0, 0.3]}, {"lead_I_qrs_t": None}]
    assert polarity_guard(s, h, flags)[:, 0].tolist() == [0.1, 0.9, 0.9]
    row = {"stack_minus_head": {"ci95": [0.0, 0.1]}}
    assert decide({"I|clean": row})["stack_clearly_worse"] == []
