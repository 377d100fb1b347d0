"""A real Mosquitto broker on a free loopback port for tests (Debian package ``mosquitto``), never a mock."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks._mqtt_security import FLEET_ACL, make_pki, secure_broker_conf

__all__ = ["Broker", "SecureBroker", "FLEET_ACL", "make_pki", "mosquitto_binary"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)


class Broker:
    """``start()`` / ``stop()`` / ``restart()`` a mosquitto process (no persistence: a restart forgets
    retained messages and sessions, the hard case)."""

    def __init__(self) -> None:
        exe = mosquitto_binary()
        if exe is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
        self.exe = exe
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="kmerl-mosquitto-"))
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "log_dest none\nmax_queued_messages 100000\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------ TLS, passwords and ACLs
class SecureBroker(Broker):
    """Mosquitto with no anonymous access: a TLS listener with password authentication (``url``, users and
    passwords ``users``) and a TLS listener that requires a client certificate whose common name is the user
    name (``cert_url``), both under :data:`FLEET_ACL`. ``pki`` holds the CA, server and client files."""

    def __init__(self, users: dict[str, str], cert_clients: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.users = dict(users)
        self.pki = make_pki(self.dir, cert_clients)
        self.cert_port = _free_port()
        self.url = f"mqtts://127.0.0.1:{self.port}"
        self.cert_url = f"mqtts://127.0.0.1:{self.cert_port}"
        self.conf.write_text(secure_broker_conf(self.dir, self.port, users, self.pki, self.cert_port,
                                                "max_queued_messages 100000\n"))

    def start(self) -> SecureBroker:
        super().start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the second listener too
            try:
                with socket.create_connection(("127.0.0.1", self.cert_port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto's certificate listener did not listen within 10 s")
