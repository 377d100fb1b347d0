"""The stream window profile times every block of the worker's path and the reader's push, and leaves the
functions it wraps as it found them."""

from __future__ import annotations

import json

import kmerl_edge._classifier as kc
import kmerl_edge._stream_worker as sw
from benchmarks.stream_window_profile import main


def test_stream_window_profile_times_each_block_and_restores_what_it_wraps(tmp_path, capsys):
    before = (sw.run_with_polarity, sw._model_band, sw.normalize_window, sw._device_rhythm,
              sw.InferenceWorker.__dict__["_quality"], kc.window_rhythm_features, kc.stack_measurements)
    out = tmp_path / "profile.json"
    assert main(["--leads", "1", "--windows", "3", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["leads"] == ["I"]
    # the default bundle carries an AF fusion and a superclass stack: the device-rate rhythm path is timed
    assert list(row["worker_us"]) == ["quality", "resample_bandpass", "zscore", "device_rhythm", "model_fusion_stack",
                                      "backend", "fusion_features", "stack_measurements", "window", "other"]
    assert all(v > 0 for k, v in row["worker_us"].items() if k != "other")
    assert row["worker_us"]["window"] > row["worker_us"]["model_fusion_stack"] > row["worker_us"]["backend"]
    assert row["reader_us"]["push"] > 0
    assert (sw.run_with_polarity, sw._model_band, sw.normalize_window, sw._device_rhythm,
            sw.InferenceWorker.__dict__["_quality"], kc.window_rhythm_features, kc.stack_measurements) == before
    assert "1 lead(s): worker quality" in capsys.readouterr().out
