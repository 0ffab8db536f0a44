"""One-line, secret-free descriptions of connection problems, for MQTT and NATS alike."""

from __future__ import annotations

import socket
import ssl


def describe_error(exc: BaseException, server: str = "the broker") -> str:
    """A short description of why connecting to `server` (what to call it in a hint)
    failed: no traceback, no credentials, the first line of the message at most."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused (is {server} running and listening on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
