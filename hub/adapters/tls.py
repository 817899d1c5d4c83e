"""The hub's own certificate authority and the local broker's TLS certificate (RELIABILITY.md A7).

``hub broker start --secure`` creates, once, under ``HUB_HOME/security``:

- ``ca.pem`` (the CA certificate: give it to clients, ``HUB_KAFKA_SECURITY__CA_FILE``) and
  ``ca.key`` (0600, never leaves the machine);
- ``broker.pem`` (0600): the broker's private key (PKCS#8) and certificate chain, the PEM keystore
  Kafka reads (``ssl.keystore.type=PEM``).

The broker certificate names only the addresses the broker advertises (``127.0.0.1`` by default), so
a client that reaches it by another name fails hostname verification.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = structlog.get_logger(__name__)

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    broker_keystore: Path

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        return cls(directory / "ca.pem", directory / "ca.key", directory / "broker.pem")

    def exist(self) -> bool:
        return self.ca_cert.exists() and self.ca_key.exists() and self.broker_keystore.exists()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (0600), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hub"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_ca(common_name: str = "hub local CA") -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def new_server_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, hosts: tuple[str, ...], common_name: str
) -> tuple[bytes, bytes]:
    """A server certificate for ``hosts`` signed by the CA: (certificate PEM, private key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_broker_tls(directory: Path, hosts: tuple[str, ...]) -> TlsFiles:
    """Create the CA and the broker's keystore under ``directory`` unless they exist (idempotent;
    the broker certificate is re-issued by the same CA when ``hosts`` changed)."""
    files = TlsFiles.under(directory)
    if not (files.ca_cert.exists() and files.ca_key.exists()):
        cert, key = new_ca()
        write_private(files.ca_key, key)
        files.ca_cert.write_bytes(cert)
        log.info("tls_ca_created", ca=str(files.ca_cert))
    if files.broker_keystore.exists() and _names(files.broker_keystore) == set(hosts):
        return files
    cert, key = new_server_cert(
        files.ca_cert.read_bytes(), files.ca_key.read_bytes(), hosts, "hub kafka broker"
    )
    write_private(files.broker_keystore, key + cert + files.ca_cert.read_bytes())
    log.info(
        "tls_broker_certificate_issued", hosts=list(hosts), keystore=str(files.broker_keystore)
    )
    return files


def _names(keystore: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(keystore.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name.value) for name in san}
