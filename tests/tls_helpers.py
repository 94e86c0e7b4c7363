"""Throwaway certificates for TLS tests, made with the openssl command at test time."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from simulators.broker import TlsListener

__all__ = ["BROKER_NAME", "BrokerPki", "have_openssl", "make_pki"]

# The only name in the broker's certificate. Connecting to 127.0.0.1 reaches the same
# listener under a name the certificate does not hold: the hostname-mismatch case.
BROKER_NAME = "localhost"


@dataclass(frozen=True)
class BrokerPki:
    broker: TlsListener  # the broker's certificate, signed by ``broker.ca_file``
    other_ca: Path  # an unrelated CA: the "wrong CA" a client may be given

    @property
    def ca(self) -> Path:
        return self.broker.ca_file


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def _openssl(work: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True, timeout=60)


def _make_ca(work: Path, name: str) -> Path:
    _openssl(
        work,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN=sentinel test {name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
    )
    return work / f"{name}.pem"


def make_pki(work: Path) -> BrokerPki:
    """A CA, a broker certificate it signed for ``BROKER_NAME``, and an unrelated CA."""
    work.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(work, "ca")
    other = _make_ca(work, "other-ca")
    _openssl(
        work,
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        f"/CN={BROKER_NAME}",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
    )
    (work / "broker.ext").write_text(
        f"subjectAltName=DNS:{BROKER_NAME}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n",
        encoding="utf-8",
    )
    _openssl(
        work,
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        ca.name,
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "broker.ext",
        "-out",
        "broker.pem",
    )
    return BrokerPki(TlsListener(ca, work / "broker.pem", work / "broker.key"), other)
