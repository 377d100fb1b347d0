"""A bundle is trusted only as a whole: one test per reproduced hole (issue 16, "Security").

Each test attacks a copy of the committed test bundle (or of the default bundle) with real files, real
symlinks, a real FIFO, real ONNX Runtime and a real ExecuTorch crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._backends import choose_backend, create_backend
from kmerl_edge._bundle import load_bundle, seal_bundle, write_bundle
from kmerl_edge.cli import main

REPO = Path(__file__).resolve().parents[1]
OTHER_ONNX = REPO / "kmerl_edge" / "default_bundle" / "model.onnx"  # a valid model, not the test bundle's


@pytest.fixture()
def bundle(tmp_path: Path, test_bundle_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(test_bundle_path, dst)
    return dst


def _edit_manifest(b: Path, edit) -> None:  # type: ignore[no-untyped-def]
    m = json.loads((b / "manifest.json").read_text())
    edit(m)
    (b / "manifest.json").write_text(json.dumps(m, indent=2))


def _keypair(tmp_path: Path, name: str = "k") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sk = Ed25519PrivateKey.generate()
    priv, pub = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
    priv.write_bytes(sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pub.write_bytes(sk.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


# ---------------------------------------------------------------------------- manifest integrity


def _swap_labels(m: dict) -> None:
    m["label_sets"]["rhythm"][0], m["label_sets"]["rhythm"][2] = m["label_sets"]["rhythm"][2], m["label_sets"]["rhythm"][0]


def _no_range_check(m: dict) -> None:
    m["preprocess"]["quality"]["max_abs_mv"] = 1e9  # µV fed as mV would pass as "good"


def _twelve_leads(m: dict) -> None:
    m["max_leads"] = 12 if m["max_leads"] != 12 else 3


@pytest.mark.parametrize("edit", [_swap_labels, _no_range_check, _twelve_leads])
def test_editing_the_manifest_alone_is_refused(bundle: Path, edit) -> None:  # type: ignore[no-untyped-def]
    _edit_manifest(bundle, edit)
    with pytest.raises(ke.TamperedArtifactError, match="manifest.json"):
        ke.load(bundle, backend="torch")


def test_editing_the_model_card_is_refused(bundle: Path) -> None:
    (bundle / "MODEL_CARD.md").write_text("# trained and cleared for clinical use\n")
    with pytest.raises(ke.TamperedArtifactError, match="MODEL_CARD.md"):
        load_bundle(bundle)


def test_info_says_what_was_verified_and_what_was_not(bundle: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "signature: none" in out and "bundle digest sha256:" in out
    priv, pub = _keypair(tmp_path)
    seal_bundle(bundle, priv)
    assert main(["info", str(bundle)]) == 0
    assert "present but NOT verified" in capsys.readouterr().out
    assert main(["info", str(bundle), "--public-key", str(pub)]) == 0
    assert "verified against the pinned public key" in capsys.readouterr().out


def test_signed_bundle_with_pinned_key(bundle: Path, tmp_path: Path) -> None:
    priv, pub = _keypair(tmp_path)
    _, other_pub = _keypair(tmp_path, "other")
    with pytest.raises(ke.TamperedArtifactError, match="not signed"):  # unsigned, key pinned
        load_bundle(bundle, public_key=pub)
    seal_bundle(bundle, priv)
    b = load_bundle(bundle, public_key=pub)
    assert b.seal is not None and b.seal.signature_verified
    with pytest.raises(ke.SignatureError, match="does not verify"):
        load_bundle(bundle, public_key=other_pub)
    # an attacker who can write the directory edits the manifest and re-seals it without the key
    _edit_manifest(bundle, _swap_labels)
    seal_bundle(bundle)
    load_bundle(bundle)  # a valid seal ...
    with pytest.raises(ke.SignatureError):  # ... but not by the pinned key
        load_bundle(bundle, public_key=pub)
    seal_bundle(bundle, tmp_path / "other.pem")  # signed, by the wrong key
    with pytest.raises(ke.SignatureError):
        ke.load(bundle, backend="torch", public_key=pub)


def test_public_key_pinned_by_environment_covers_every_command(
    bundle: Path, tmp_path: Path, records_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    _, pub = _keypair(tmp_path)
    monkeypatch.setenv("KMERL_EDGE_PUBLIC_KEY", str(pub))
    assert main(["classify", str(records_dir / "00001_hr"), "--bundle", str(bundle), "--leads", "I,II"]) == 1
    assert "not signed" in capsys.readouterr().err


def test_pinned_digest(bundle: Path) -> None:
    digest = load_bundle(bundle).seal.digest  # type: ignore[union-attr]
    assert load_bundle(bundle, digest=f"sha256:{digest}").seal.digest_pinned  # type: ignore[union-attr]
    _edit_manifest(bundle, _swap_labels)
    seal_bundle(bundle)
    with pytest.raises(ke.TamperedArtifactError, match="pinned"):
        load_bundle(bundle, digest=digest)


# -------------------------------------------------------------------- every file listed and verified


def test_unlisted_file_beside_the_model_is_refused(bundle: Path) -> None:
    (bundle / "model.onnx.data").write_bytes(b"\0" * 64)
    with pytest.raises(ke.UnlistedFileError, match="model.onnx.data"):
        ke.load(bundle, backend="onnxruntime")


def _external_data_bundle(test_bundle_path: Path, tmp_path: Path) -> Path:
    import onnx

    src = tmp_path / "src"
    src.mkdir()
    m = onnx.load(str(test_bundle_path / "model.onnx"))
    onnx.save_model(m, str(src / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    b = load_bundle(test_bundle_path)
    from safetensors.numpy import load

    out = write_bundle(
        tmp_path / "ext", weights=b.weights(), model_config=b.model_config, preprocess_config=b.preprocess_config,
        label_sets=b.label_sets, queries=load(b.read("queries.safetensors")), trained=False,
        extra_files={
            "model.onnx": (src / "model.onnx", {"backend": "onnxruntime", "precision": "fp32",
                                                "backend_name": "onnxruntime", "external_data": ["model.onnx.data"]}),
            "model.onnx.data": (src / "model.onnx.data", {"kind": "external-data", "backend": "onnxruntime"}),
        },
    )
    return out


def test_onnx_external_data_is_listed_verified_and_read_from_verified_bytes(
    test_bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = _external_data_bundle(test_bundle_path, tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 2, 5000)).astype(np.float32)
    lid = np.array([0, 1], np.int64)
    ref = create_backend(load_bundle(test_bundle_path), "onnxruntime").run(x, lid)
    np.testing.assert_allclose(create_backend(load_bundle(ext), "onnxruntime").run(x, lid), ref, atol=1e-5)
    # a swapped weights file is caught
    data = bytearray((ext / "model.onnx.data").read_bytes())
    data[100] ^= 0x7F
    (ext / "model.onnx.data").write_bytes(bytes(data))
    with pytest.raises(ke.TamperedArtifactError, match="model.onnx.data"):
        ke.load(ext, backend="onnxruntime")


def test_undeclared_external_data_is_never_read_from_the_working_directory(
    test_bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = _external_data_bundle(test_bundle_path, tmp_path)
    m = json.loads((ext / "manifest.json").read_text())
    m["artifacts"]["model.onnx"].pop("external_data")
    del m["artifacts"]["model.onnx.data"]
    (ext / "manifest.json").write_text(json.dumps(m))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.replace(ext / "model.onnx.data", cwd / "model.onnx.data")  # an attacker's file where ORT would look
    seal_bundle(ext)  # the publisher's mistake, sealed
    monkeypatch.chdir(cwd)
    with pytest.raises(ke.BackendUnavailableError, match="ONNX Runtime cannot load"):
        ke.load(ext, backend="onnxruntime")


# --------------------------------------------------------------------------- time of check / use


def test_file_swapped_after_verification_is_not_used(bundle: Path, tmp_path: Path) -> None:
    b = load_bundle(bundle)  # verified
    tmp = bundle / ".swap"
    shutil.copyfile(OTHER_ONNX, tmp)  # another valid model
    os.replace(tmp, bundle / "model.onnx")  # a concurrent writer, between check and use
    with pytest.raises(ke.TamperedArtifactError, match="model.onnx"):
        create_backend(b, "onnxruntime")


def test_concurrent_writer_never_gets_an_unverified_model_scored(bundle: Path, tmp_path: Path) -> None:
    good, bad = (bundle / "model.onnx").read_bytes(), OTHER_ONNX.read_bytes()
    x = np.random.default_rng(1).standard_normal((1, 1, 5000)).astype(np.float32)
    lid = np.zeros(1, np.int64)
    ref = create_backend(load_bundle(bundle), "onnxruntime").run(x, lid)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            tmp = bundle / ".w"
            tmp.write_bytes(bad if i % 2 else good)
            os.replace(tmp, bundle / "model.onnx")
            i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    scored = 0
    try:
        for _ in range(30):
            try:
                be = create_backend(load_bundle(bundle, verify=False), "onnxruntime")
            except ke.KmerlError:
                continue
            np.testing.assert_allclose(be.run(x, lid), ref, atol=1e-5)
            scored += 1
    finally:
        stop.set()
        t.join()


# ------------------------------------------------------------------------- links and special files


def test_symlink_to_a_file_outside_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(bundle / "model.onnx", outside)  # same bytes: the hash would match
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(ke.UnsafeArtifactError, match="symbolic link"):
        ke.load(bundle, backend="torch")


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "dir"])
def test_special_files_are_refused_without_hanging(bundle: Path, kind: str) -> None:
    target = bundle / "model.onnx"
    target.unlink()
    if kind == "dev_zero":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            ke.load(bundle, backend="torch")
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"load() hangs on a {kind}"
    assert isinstance(result[0], ke.UnsafeArtifactError)


# ------------------------------------------------------------------ native artifacts that crash


def _corrupt_pte(path: Path) -> None:
    """Put an invalid UTF-8 byte into the last named-data key of a .pte: ExecuTorch 1.5 aborts (SIGABRT)
    in load_method on it. The bundle is then re-sealed, so its hashes match."""
    import re

    data = bytearray(path.read_bytes())
    key = list(re.finditer(rb"[0-9a-f]{64}", data))[-1]
    data[key.start() + 10 : key.start() + 12] = b"\xc4\x28"
    path.write_bytes(bytes(data))


_CHILD = """
import os, sys
import kmerl_edge._backends as kb
kb.FAMILIES["executorch"] = ("executorch", 0.0)  # make auto try ExecuTorch first
from kmerl_edge import load
clf = load(sys.argv[1], backend=sys.argv[2])
print("BACKEND", clf.backend_name)
for line in clf.backend_choice.lines():
    print(line)
"""


@pytest.mark.slow
def test_corrupted_pte_with_matching_hash_does_not_abort_and_auto_falls_back(tmp_path: Path) -> None:
    pytest.importorskip("executorch")
    b = tmp_path / "b"
    shutil.copytree(REPO / "kmerl_edge" / "default_bundle", b)
    for name in ("model.pte", "model.int8.pte"):
        _corrupt_pte(b / name)
    m = json.loads((b / "manifest.json").read_text())
    from kmerl_edge._bundle import sha256_file

    for name in ("model.pte", "model.int8.pte"):
        m["artifacts"][name]["sha256"] = sha256_file(b / name)
    (b / "manifest.json").write_text(json.dumps(m, indent=2))
    seal_bundle(b)
    env = {**os.environ, "PYTHONPATH": str(REPO), "KMERL_EDGE_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(b), "auto"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "BACKEND onnxruntime" in p.stdout
    assert "skipped executorch-int8: executorch-int8: the native runtime crashed with SIGABRT" in p.stdout
    p = subprocess.run([sys.executable, "-m", "kmerl_edge.cli", "info", str(b), "--verbose"], capture_output=True,
                       text=True, env=env, timeout=600)
    assert p.returncode == 0 and "auto" in p.stdout
    p = subprocess.run([sys.executable, "-c", _CHILD, str(b), "executorch"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 1 and "BackendCrashedError" in p.stderr and "SIGABRT" in p.stderr


def test_probe_success_is_remembered_once_per_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("executorch")
    from kmerl_edge import _probe

    monkeypatch.setenv("KMERL_EDGE_CACHE_DIR", str(tmp_path / "cache"))
    b = load_bundle(REPO / "kmerl_edge" / "default_bundle")
    calls: list[list[str]] = []
    real = subprocess.run

    def counting(cmd, **kw):  # type: ignore[no-untyped-def]
        calls.append(cmd)
        return real([sys.executable, "-c", "pass"], **kw)  # the probe's verdict; this test is about the cache

    monkeypatch.setattr(_probe.subprocess, "run", counting)
    _probe.probe_backend(b, "executorch-int8")
    _probe.probe_backend(b, "executorch-int8")
    assert len(calls) == 1 and len(list((tmp_path / "cache" / "probes").iterdir())) == 1


# -------------------------------------------------------------------------- auto weighs load time


def test_auto_weighs_load_time_and_says_why() -> None:
    b = load_bundle(REPO / "kmerl_edge" / "default_bundle")
    be, choice = choose_backend(b, "auto")
    assert be.name.startswith("onnxruntime")  # not ExecuTorch with its 10-19 s import
    assert "load" in choice.reason and "ms/window" in choice.reason
    assert choice.plan[0].name == be.name


def test_classify_verbose_says_which_backend_and_why(test_bundle_path: Path, records_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["classify", str(records_dir / "00001_hr"), "--bundle", str(test_bundle_path), "--leads", "I,II",
                 "--verbose"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("backend: onnxruntime (auto:")


# ------------------------------------------------------------------- the exporter seals and signs


def test_exporter_writes_a_signed_seal_and_export_cli_seals_and_makes_keys(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from export.cli import main as export_main
    from export.test_bundle import build_random_bundle

    assert export_main(["keygen", str(tmp_path / "pub")]) == 0
    capsys.readouterr()
    priv, pub = tmp_path / "pub.pem", tmp_path / "pub.pub.pem"
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    out = build_random_bundle(tmp_path / "b", onnx=False, signing_key=priv)
    b = load_bundle(out, public_key=pub)
    assert b.seal is not None and b.seal.signature_verified and set(b.seal.files) == {
        "manifest.json", "MODEL_CARD.md", "weights.safetensors", "queries.safetensors"}
    _edit_manifest(out, _swap_labels)
    assert export_main(["seal", str(out)]) == 0  # re-sealed without the key: valid, unsigned
    assert capsys.readouterr().out.startswith("sha256:")
    with pytest.raises(ke.SignatureError):
        load_bundle(out, public_key=pub)
    assert export_main(["seal", str(out), "--key", str(priv)]) == 0
    assert load_bundle(out, public_key=pub).label_sets["rhythm"][0] == "sinus rhythm"
    (out / "stray.bin").write_bytes(b"x")
    assert export_main(["seal", str(out)]) == 2  # the publisher's tool refuses to seal what the manifest omits
    assert "stray.bin" in capsys.readouterr().err
