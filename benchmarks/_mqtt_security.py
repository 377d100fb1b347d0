"""A throw-away PKI, Mosquitto password lines and the fleet's per-device ACL, for the TLS benchmark
(``kmerl-bench fleet --tls``) and the tests' secure broker. Uses ``cryptography`` (the ``dev`` extra)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["make_pki", "mosquitto_password_line", "FLEET_ACL", "secure_broker_conf"]


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


def secure_broker_conf(directory: Path, port: int, users: dict[str, str], pki: dict[str, Path],
                       cert_port: int | None = None, extra: str = "") -> str:
    """A Mosquitto 2 configuration: no anonymous access, a TLS listener on ``port`` with the password file
    of ``users`` and :data:`FLEET_ACL`; with ``cert_port`` a second TLS listener that requires a client
    certificate whose common name is the user name. Writes the password and ACL files into ``directory``."""
    import os
    import pwd

    (directory / "passwd").write_text("".join(mosquitto_password_line(u, p) + "\n" for u, p in users.items()))
    (directory / "acl").write_text(FLEET_ACL)
    tls = f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\ntls_version tlsv1.2\n"
    conf = (f"user {pwd.getpwuid(os.getuid()).pw_name}\nper_listener_settings false\nallow_anonymous false\n"
            f"password_file {directory / 'passwd'}\nacl_file {directory / 'acl'}\npersistence false\n"
            f"log_dest none\n{extra}listener {port} 127.0.0.1\n{tls}")
    if cert_port is not None:
        conf += f"listener {cert_port} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\n"
    return conf
