"""The bridge's virtual patch reads recordings with the runtime's channel rules (issue #18): ECG channels of
unknown position need a lead map, non-ECG channels are left out, missing samples are refused, not sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from firmware_bridge._errors import BridgeConfigError
from firmware_bridge._simulate import SimulateConfig, VirtualPatch, load_patch_signal
from kmerl_edge import read_record
from kmerl_edge._errors import LeadMapRequiredError

REC = Path(__file__).parent / "fixtures" / "records" / "00001_hr"


def _write(tmp: Path, names: list[str], sig: np.ndarray, fs: float, units: list[str]) -> Path:
    wfdb.wrsamp("patch", fs=fs, units=units, sig_name=names, p_signal=sig.T, fmt=["16"] * len(names),
                write_dir=str(tmp))
    return tmp / "patch"


@pytest.fixture()
def lead_i() -> tuple[np.ndarray, float]:
    r = read_record(REC, leads=["I"])
    return r.signal[0].astype(np.float64), r.fs


def test_unknown_position_channel_needs_a_lead_map(tmp_path: Path, lead_i) -> None:
    x, fs = lead_i
    pleth = np.sin(np.arange(x.size) / fs) * 50.0
    base = _write(tmp_path, ["ECG 1", "PLETH"], np.vstack([x, pleth]), fs, ["mV", "NU"])
    with pytest.raises(LeadMapRequiredError, match="ECG 1="):
        load_patch_signal(base, ["I"], 250.0)
    sig, leads = load_patch_signal(base, ["I"], fs, lead_map={"ECG 1": "I"})
    assert leads == ("I",) and sig.shape == (1, x.size)
    np.testing.assert_allclose(sig[0], x, atol=2e-3)  # the ECG channel, not the plethysmogram
    cfg = SimulateConfig(record=str(base), leads=("I",), fs=fs, lead_map=(("ECG 1", "I"),))
    assert VirtualPatch(cfg).signal.shape == (1, x.size)


def test_missing_samples_are_refused_not_sent(tmp_path: Path, lead_i) -> None:
    x, fs = lead_i
    y = x.copy()
    y[1000:1500] = np.nan  # wfdb writes NaN as the format's missing-sample value
    base = _write(tmp_path, ["I"], y[None, :], fs, ["mV"])
    assert np.isnan(read_record(base).signal).sum() == 500
    with pytest.raises(BridgeConfigError, match="missing samples"):
        load_patch_signal(base, ["I"], fs)
