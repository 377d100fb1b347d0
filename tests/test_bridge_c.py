"""The C99 reference encoder, compiled with gcc: strict C99, freestanding, no float, byte-identical frames."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

import firmware_bridge
from firmware_bridge import FrameDecoder, SampleBlock
from firmware_bridge._golden import encode_script

C_DIR = Path(firmware_bridge.__file__).parent / "c"
GOLDEN = Path(__file__).parent / "fixtures" / "bridge_golden"
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed: C encoder not compiled")


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kmerl_c") / "kmerl_golden"
    subprocess.run(["gcc", *STRICT, "-O2", "-I", str(C_DIR), str(C_DIR / "kmerl_frame.c"),
                    str(C_DIR / "kmerl_golden.c"), "-o", str(out)], check=True, capture_output=True, text=True)
    return out


def run_driver(driver: Path, script: str) -> bytes:
    proc = subprocess.run([str(driver)], input=script.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, f"driver failed with {proc.returncode}"
    return proc.stdout


def test_encoder_is_freestanding_integer_only(tmp_path):
    """-ffreestanding -mgeneral-regs-only: any float use is a compile error; nm: no libc symbol needed."""
    obj = tmp_path / "kmerl_frame.o"
    flags = ["-ffreestanding", "-fno-builtin", "-mgeneral-regs-only"]
    res = subprocess.run(["gcc", *STRICT, "-Os", *flags, "-c", str(C_DIR / "kmerl_frame.c"), "-o", str(obj)],
                         capture_output=True, text=True)
    if res.returncode != 0 and "general-regs-only" in res.stderr:
        pytest.skip("this gcc target has no -mgeneral-regs-only")
    assert res.returncode == 0, res.stderr
    undefined = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
    assert undefined == [], f"encoder needs external symbols: {undefined}"
    defined = subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True).stdout
    assert "kmerl_encode_samples" in defined and " B " not in defined and " D " not in defined  # no globals


@pytest.mark.parametrize("vec", json.loads((GOLDEN / "vectors.json").read_text())["vectors"],
                         ids=lambda v: v["file"])
def test_c_driver_writes_the_golden_vectors(driver, vec):
    script = "\n".join(vec["script"]) + "\n"
    out = run_driver(driver, script)
    assert out == (GOLDEN / vec["file"]).read_bytes() == encode_script(script)


def test_c_encoder_rejects_invalid_input(driver):
    bad_format = "D 3 9 10 500000 1000 0 0 0 0 - 0\n"
    assert subprocess.run([str(driver)], input=bad_format.encode(), capture_output=True).returncode == 3
    too_many = "D 4095 2 10 500000 1000 0 0 0 0 - 0\nS 0 29 " + " ".join(["0"] * 29 * 12) + "\n"
    assert subprocess.run([str(driver)], input=too_many.encode(), capture_output=True).returncode == 6
    # rates and gains no ECG device can mean: the firmware encoder refuses what the host would refuse
    for fs_mhz, lsb_pv in ((1, 1_000_000), (4294967295, 1_000_000), (500000, 1), (500000, 4294967295)):
        dev = f"D 3 1 10 {fs_mhz} {lsb_pv} 0 0 0 0 - 0\n"
        assert subprocess.run([str(driver)], input=dev.encode(), capture_output=True).returncode == 3



@hst.composite
def scripts(draw):
    """A random device and a random sequence of frames, as a frame script."""
    mask = draw(hst.integers(1, 0xFFF))
    nl = bin(mask).count("1")
    fmt = draw(hst.sampled_from([1, 2]))
    lo, hi = (-(1 << 15), (1 << 15) - 1) if fmt == 1 else (-(1 << 23), (1 << 23) - 1)
    max_n = min(255, 1024 // (nl * (2 if fmt == 1 else 3)))
    model = draw(hst.text("abcXYZ019-_", min_size=1, max_size=16))
    lines = [f"D {mask} {fmt} {draw(hst.integers(1, max_n))} {draw(hst.integers(10_000, 32_000_000))} "
             f"{draw(hst.integers(1_000, 1_000_000_000))} {draw(hst.integers(0, 2**32 - 1))} 1 2 3 {model} "
             f"{draw(hst.integers(0, 65535))}"]
    ts = draw(hst.integers(0, 2**32 - 1))
    for _ in range(draw(hst.integers(1, 6))):
        kind = draw(hst.sampled_from("SSSIT"))
        if kind == "S":
            n = draw(hst.integers(1, min(max_n, 8)))
            vals = draw(hst.lists(hst.integers(lo - 1000, hi + 1000), min_size=n * nl, max_size=n * nl))
            lines.append(f"S {ts} {n} " + " ".join(map(str, vals)))
            ts = (ts + n) % 2**32
        elif kind == "I":
            lines.append(f"I {ts}")
        else:
            batt = draw(hst.one_of(hst.integers(0, 100), hst.just(255)))  # a percentage, or unknown
            lines.append(f"T {ts} {draw(hst.integers(0, 0xFFF))} {batt} "
                         f"{draw(hst.sampled_from([0, 1, 2, 4, 7]))}")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts())
def test_c_and_python_encoders_agree_on_random_frames(driver, script):
    c_bytes = run_driver(driver, script)
    assert c_bytes == encode_script(script)
    dec = FrameDecoder()
    events = dec.feed(c_bytes)
    n_frames = sum(1 for line in script.splitlines() if line[0] in "SIT")
    assert dec.stats.frames == n_frames and dec.stats.crc_errors == 0 and dec.stats.invalid_frames == 0
    assert dec.stats.implausible_frames == 0
    n_samples = sum(int(line.split()[2]) for line in script.splitlines() if line[0] == "S")
    assert sum(e.n_samples for e in events if isinstance(e, SampleBlock)) == n_samples
    assert all(np.isfinite(e.data).all() for e in events if isinstance(e, SampleBlock))
