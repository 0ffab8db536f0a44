"""HTTP to Alertmanager: one request body posted to every configured URL at once.

Alertmanager runs highly available as a few peers that gossip alerts to each other, and
Prometheus posts every alert to every peer; so does this client. A batch counts as delivered
when at least one peer accepted it (the gossip spreads it to the others, and firing alerts
are re-posted every resend interval anyway).

Only the stdlib (`urllib.request`, `ssl`), so the worker install stays light. Credentials are
read from their file on every request, so a rotated secret takes effect without a restart,
and they never appear in an exception, a log line or a repr.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from detector.config.secrets import Credentials, SecretFileError

API_PATH = "/api/v2/alerts"


@dataclass(frozen=True, slots=True)
class Answer:
    """What one URL made of one request."""

    url: str
    ok: bool
    retry: bool
    """Worth sending again: unreachable, 5xx, 408, 429, or credentials refused (401/403:
    the password file may be fixed meanwhile; it is read again on every attempt)."""
    detail: str
    """For the log: ``HTTP 401 Unauthorized``, ``connection refused``, ...; never a secret."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as an error: following it would re-send the credentials to
    wherever it points, and urllib turns a redirected POST into a GET without the alerts."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class AlertmanagerClient:
    """Posts JSON bodies to ``<url>/api/v2/alerts`` of every URL in `urls`, in parallel.

    Args:
        urls: Alertmanager base URLs (``https://am-0:9093``); each is also the value of the
            ``url`` label of the per-URL error counter.
        credentials: the Authorization header, if any.
        ssl_context: for https URLs (a CA bundle, a client certificate); default: the
            system's CAs.
        headers: extra HTTP headers.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        credentials: Credentials | None = None,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one Alertmanager URL is needed")
        self.urls = [u.rstrip("/") for u in urls]
        self.credentials = credentials or Credentials()
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)
        # One thread per extra URL: the first is posted from the caller's thread.
        self._pool = (
            ThreadPoolExecutor(len(self.urls) - 1, thread_name_prefix="iotad-alertmanager-post")
            if len(self.urls) > 1
            else None
        )

    def post(self, body: bytes, timeout_s: float) -> list[Answer]:
        """Post `body` to every URL; one `Answer` per URL, in the order of `urls`.

        Returns once every URL answered or timed out (at most `timeout_s`); never raises.
        """
        headers = dict(self._headers)
        try:
            auth = self.credentials.header()
        except SecretFileError as exc:
            return [Answer(url, False, True, str(exc)) for url in self.urls]
        if auth is not None:
            headers["Authorization"] = auth
        if self._pool is None:
            return [self._post_one(self.urls[0], body, headers, timeout_s)]
        try:
            rest = [
                self._pool.submit(self._post_one, url, body, headers, timeout_s)
                for url in self.urls[1:]
            ]
        except RuntimeError:  # closed meanwhile (a sink thread that outlived its close)
            return [Answer(url, False, True, "client closed") for url in self.urls]
        first = self._post_one(self.urls[0], body, headers, timeout_s)
        return [first, *(f.result() for f in rest)]

    def _post_one(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Answer:
        req = urllib.request.Request(url + API_PATH, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code} {exc.reason}"
            try:
                text = exc.read(300).decode(errors="replace").strip()
            except OSError:
                text = ""
            if text:
                detail += f": {' '.join(text.split())}"
            retry = exc.code >= 500 or exc.code in (401, 403, 408, 429)
            return Answer(url, False, retry, detail)
        except urllib.error.URLError as exc:
            return Answer(url, False, True, _reason(exc.reason))
        except (OSError, ValueError) as exc:  # timeout, reset, a bad status line
            return Answer(url, False, True, _reason(exc))
        return Answer(url, True, False, "")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"AlertmanagerClient({self.urls}, {self.credentials!r})"


def _reason(exc: object) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
