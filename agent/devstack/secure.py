"""Throwaway TLS material and credentials for a secured local stack (``devstack up --secure``).

A CA made here signs a server certificate for ``localhost`` / ``127.0.0.1`` (Kafka's listeners and
Redis) and a client certificate (mTLS), with the ``cryptography`` package: no openssl shell-outs.
Kafka reads PEM directly (``ssl.keystore.type=PEM``). Passwords are random, kept in the stack's
directory with mode 0600, and handed to clients through settings that are secrets (never logged).
"""

from __future__ import annotations

import datetime
import json
import secrets
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: the SCRAM user every client of a secured stack uses, and its mechanism
KAFKA_USER = "coordinator"
SCRAM: Final = "SCRAM-SHA-512"
REDIS_USER = "coordinator"


@dataclass(frozen=True)
class Material:
    """Where a secured stack's files are, and its passwords."""

    ca: str
    #: the broker's key and certificate chain in one PEM file (Kafka's PEM keystore), and apart (Redis)
    server_pem: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    kafka_password: str
    redis_password: str


def ensure(directory: Path) -> Material:
    """The stack's material, made once and kept (a restarted broker keeps its certificates)."""
    directory.mkdir(parents=True, exist_ok=True)
    saved = directory / "material.json"
    if saved.exists():
        return Material(**json.loads(saved.read_text()))
    ca_key, ca_cert = authority("coordinator devstack CA")
    server_key, server_cert = issue(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = issue(ca_key, ca_cert, KAFKA_USER, server=False)
    files = {
        "ca.pem": pem_cert(ca_cert),
        "server.pem": pem_key(server_key) + pem_cert(server_cert) + pem_cert(ca_cert),
        "server.crt": pem_cert(server_cert) + pem_cert(ca_cert),
        "server.key": pem_key(server_key),
        "client.crt": pem_cert(client_cert) + pem_cert(ca_cert),
        "client.key": pem_key(client_key),
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
    material = Material(ca=str(directory / "ca.pem"), server_pem=str(directory / "server.pem"),
                        server_cert=str(directory / "server.crt"), server_key=str(directory / "server.key"),
                        client_cert=str(directory / "client.crt"), client_key=str(directory / "client.key"),
                        kafka_password=secrets.token_urlsafe(24), redis_password=secrets.token_urlsafe(24))
    saved.write_text(json.dumps(asdict(material), indent=2))
    saved.chmod(0o600)
    return material


def authority(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed CA."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, name: str, *, server: bool,
          group: str = "", dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
          ) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A certificate signed by the CA: for a server (``localhost``, ``127.0.0.1`` and ``dns``/``ips``;
    it also connects to itself, so client use too) or a client (``name`` as its common name, ``group``
    as its organisation: Kubernetes reads them as user and group)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group)] if group else []
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    builder = (x509.CertificateBuilder().subject_name(x509.Name(subject))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=90))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in ("localhost", *dns)]
            + [x509.IPAddress(IPv4Address(ip)) for ip in ("127.0.0.1", *ips)]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
