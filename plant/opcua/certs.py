"""Certificates for a test site: a site CA and the application certificates it signs.

OPC-UA security (Basic256Sha256) needs an application instance certificate for the server and
for each client, with the application URI in the subject alternative name. A real site gets
them from its PKI; for a test site, a lab or CI, :func:`make_test_site` writes a small one:

    site = make_test_site(Path("site-pki"))
    # site.server_cert / site.server_key for the twin server,
    # site.client_cert / site.client_key for the agents (OpcuaSecurity.certificate_file...),
    # site.trusted_dir holds the CA certificate both sides trust.

Keys are RSA 2048 (what Basic256Sha256 allows), written unencrypted with mode 0600: test
material, not a production PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Application URIs the twin server and the agents announce (and their certificates carry).
SERVER_URI = "urn:atelier:twin"
CLIENT_URI = "urn:atelier:agent"


@dataclass(frozen=True)
class TestSite:
    """Paths of a test site's PKI files (DER certificates, PEM keys)."""

    __test__ = False  # not a pytest test class

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    trusted_dir: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(path, 0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Atelier test site"),
        ]
    )


def make_test_site(directory: Path, hostnames: tuple[str, ...] = ("localhost",), days: int = 30) -> TestSite:
    """Write a CA and a server and a client certificate signed by it into ``directory``.

    The server certificate names ``hostnames`` and 127.0.0.1. Takes about a second (three RSA
    keys). Raises ``OSError`` if the directory cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    trusted = directory / "trusted"
    trusted.mkdir(exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = _name("Atelier test site CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
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
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, uri: str, usage: list[x509.ObjectIdentifier]) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        key = _key()
        alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        alt += [x509.DNSName(h) for h in hostnames]
        alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=True,
                    data_encipherment=True,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    server, server_key = leaf(
        "Atelier twin", SERVER_URI, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    client, client_key = leaf(
        "Atelier agent", CLIENT_URI, [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    )
    site = TestSite(
        ca_cert=trusted / "ca.der",
        server_cert=directory / "server_cert.der",
        server_key=directory / "server_key.pem",
        client_cert=directory / "client_cert.der",
        client_key=directory / "client_key.pem",
        trusted_dir=trusted,
    )
    site.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.DER))
    site.server_cert.write_bytes(server.public_bytes(serialization.Encoding.DER))
    site.client_cert.write_bytes(client.public_bytes(serialization.Encoding.DER))
    _write_key(server_key, site.server_key)
    _write_key(client_key, site.client_key)
    return site
