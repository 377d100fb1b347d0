"""benchmarks.lead_reversal: the simulated electrode swaps and the rate statistics (pure functions, real record)."""

from __future__ import annotations

import numpy as np

import kmerl_edge as ke
from benchmarks.lead_reversal import apply_condition, bootstrap_rate, exact_upper, record_flag


def test_la_ra_swap_keeps_einthoven_and_swaps_the_right_leads(records_dir):
    r = ke.read_record(records_dir / "00001_hr")
    leads = list(r.leads)
    x = np.asarray(r.signal, dtype=np.float64)
    y = apply_condition("la_ra", x, leads)
    i = {lead: k for k, lead in enumerate(leads)}
    assert np.array_equal(y[i["I"]], -x[i["I"]])
    assert np.array_equal(y[i["II"]], x[i["III"]]) and np.array_equal(y[i["III"]], x[i["II"]])
    assert np.array_equal(y[i["aVR"]], x[i["aVL"]]) and np.array_equal(y[i["aVL"]], x[i["aVR"]])
    for lead in ("aVF", "V1", "V6"):
        assert np.array_equal(y[i[lead]], x[i[lead]])
    # the swapped record is still a consistent limb-lead set: II = I + III
    assert np.allclose(y[i["II"]], y[i["I"]] + y[i["III"]], atol=0.01)
    z = apply_condition("invert_I", x, leads)
    assert np.array_equal(z[0], -x[0]) and np.array_equal(z[1:], x[1:])
    assert np.array_equal(apply_condition("as_recorded", x, leads), x)


def test_rates_and_record_verdicts():
    b = bootstrap_rate(np.array([True] * 3 + [False] * 97))
    assert b["rate"] == 0.03 and b["k"] == 3 and b["n"] == 100 and b["ci95"][0] <= 0.03 <= b["ci95"][1]
    assert exact_upper(0, 66) is not None and 0.05 < exact_upper(0, 66) < 0.06  # 1 - 0.025 ** (1/66)
    assert record_flag(np.array([-1, -1])) == -1
    assert record_flag(np.array([1, 0, -1])) == 1 and record_flag(np.array([0, 0, 1])) == 0
