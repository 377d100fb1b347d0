"""A real Mosquitto broker on a free loopback port for tests (Debian package ``mosquitto``), never a mock."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


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
def make_pki(directory: Path, clients: tuple[str, ...] = ()) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 / localhost, and client certificates whose common
    name is each of ``clients`` (PEM files in ``directory``), made with ``cryptography``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("kmerl test CA")).issuer_name(name("kmerl test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": directory / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(cn: str, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        stem = directory / ("server" if server else f"client-{cn}")
        crt = stem.with_suffix(".pem")
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return crt, write_key(key, stem.with_suffix(".key"))

    out["server_cert"], out["server_key"] = leaf("127.0.0.1", True)
    for cn in clients:
        out[f"{cn}_cert"], out[f"{cn}_key"] = leaf(cn, False)
    return out


def mosquitto_password_line(user: str, password: str, iterations: int = 101) -> str:
    """A Mosquitto 2 password-file line (``$7$``: PBKDF2-SHA512), what ``mosquitto_passwd`` writes."""
    import base64
    import hashlib
    import os

    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


#: the per-device ACL of docs/fleet.md: a device (its user name is its id) writes only its own frames, info
#: and link state and reads only its own results and events; the gateway and the monitor are service accounts
FLEET_ACL = """\
pattern write kmerl/v1/%u/frames
pattern write kmerl/v1/%u/info
pattern write kmerl/v1/%u/link
pattern read kmerl/v1/%u/results
pattern read kmerl/v1/%u/events

user kmerl-gateway
topic read kmerl/v1/+/frames
topic read kmerl/v1/+/info
topic read kmerl/v1/+/link
topic readwrite kmerl/v1/+/results
topic write kmerl/v1/+/events

user kmerl-monitor
topic read kmerl/v1/+/results
topic read kmerl/v1/+/events
"""


class SecureBroker(Broker):
    """Mosquitto with no anonymous access: a TLS listener with password authentication (``url``, users and
    passwords ``users``) and a TLS listener that requires a client certificate whose common name is the user
    name (``cert_url``), both under :data:`FLEET_ACL`. ``pki`` holds the CA, server and client files."""

    def __init__(self, users: dict[str, str], cert_clients: tuple[str, ...] = ()) -> None:
        super().__init__()
        import os
        import pwd

        self.users = dict(users)
        self.pki = make_pki(self.dir, cert_clients)
        self.cert_port = _free_port()
        self.url = f"mqtts://127.0.0.1:{self.port}"
        self.cert_url = f"mqtts://127.0.0.1:{self.cert_port}"
        (self.dir / "passwd").write_text("".join(mosquitto_password_line(u, p) + "\n" for u, p in users.items()))
        (self.dir / "acl").write_text(FLEET_ACL)
        tls = (f"cafile {self.pki['ca']}\ncertfile {self.pki['server_cert']}\nkeyfile {self.pki['server_key']}\n"
               "tls_version tlsv1.2\n")
        self.conf.write_text(
            f"user {pwd.getpwuid(os.getuid()).pw_name}\nper_listener_settings false\nallow_anonymous false\n"
            f"password_file {self.dir / 'passwd'}\nacl_file {self.dir / 'acl'}\npersistence false\n"
            "log_dest none\nmax_queued_messages 100000\n"
            f"listener {self.port} 127.0.0.1\n{tls}"
            f"listener {self.cert_port} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\n")

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
