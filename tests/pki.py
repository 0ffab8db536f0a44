"""Throwaway certificate authorities and certificates for the TLS tests (openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    key, pem = d / f"{name}.key", d / f"{name}.pem"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(pem),
    )  # fmt: skip
    return key, pem


def make_cert(d: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    """A key and a certificate for `name` signed by `ca`, with extensions `ext`."""
    key, csr, pem, cnf = (d / f"{name}.{x}" for x in ("key", "csr", "pem", "cnf"))
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    cnf.write_text(ext + "\n")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-days", "2", "-out", str(pem), "-extfile", str(cnf),
    )  # fmt: skip
    return key, pem
