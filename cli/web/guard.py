"""Host and Origin checks: a page on another site cannot reach the server through the browser.

DNS rebinding points a name the attacker owns at 127.0.0.1: the browser then sends the
attacker's name in ``Host``. Only loopback names (and the ``--host`` the server listens on,
and each ``--allow-host``) are answered; any other ``Host`` gets 400. A POST (or any unsafe
method) whose ``Origin`` is present and names another host gets 403 (a form on another site);
requests without ``Origin`` (curl, the CLI, scripts) are not browser cross-site requests and pass.

Starlette's ``TrustedHostMiddleware`` checks the host but answers in plain text and does not
look at ``Origin``; this small ASGI middleware does both and answers in the API's JSON shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

LOOPBACK = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = {"0.0.0.0", "::", ""}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def host_name(netloc: str | None) -> str | None:
    """The host of a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``, ``v6``), lower case.

    Returns None for an empty or malformed value.
    """
    v = (netloc or "").strip().lower()
    if not v:
        return None
    if v.startswith("["):
        end = v.find("]")
        rest = v[end + 1:] if end > 0 else ""
        return v[1:end] if end > 1 and (not rest or (rest[0] == ":" and rest[1:].isdigit())) else None
    if v.count(":") > 1:  # a bare IPv6 literal
        return v
    name, _, port = v.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def allowed_hosts(listen_host: str | None = None, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a server answers to: loopback, the address it listens on (unless any-address), ``extra``."""
    names = set(LOOPBACK)
    if listen_host and listen_host.strip() not in ANY_ADDRESS:
        names.add(host_name(listen_host) or listen_host.strip().lower())
    for name in extra:
        h = host_name(name) or str(name).strip().lower()
        if h:
            names.add(h)
    return frozenset(names)


class HostGuard:
    """ASGI middleware: 400 for a ``Host`` not in ``allowed``, 403 for a foreign ``Origin`` on unsafe methods.

    Parameters
    ----------
    app : ASGI application
    allowed : iterable of str
        Host names (no port) answered, e.g. ``allowed_hosts("127.0.0.1", ["eeg.example.org"])``.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]):
        self.app = app
        self.allowed = frozenset(host_name(a) or a for a in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 400/403 for a refused request, else pass it on."""
        if scope["type"] != "http":  # no websocket routes: the app itself refuses those
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        raw_host = headers.get("host")
        if host_name(raw_host) not in self.allowed:
            logger.warning("refused a request for Host %r (not in %s)", raw_host, sorted(self.allowed))
            await _json(send, 400, f"Host {_short(raw_host)} is not served here "
                                   "(start the server with --allow-host NAME to add a name)")
            return
        origin = headers.get("origin")
        if origin is not None and scope.get("method", "GET") not in SAFE_METHODS:
            o = urlsplit(origin.strip())
            if o.scheme not in {"http", "https"} or host_name(o.netloc) not in self.allowed:
                logger.warning("refused a cross-origin %s from Origin %r", scope.get("method"), origin)
                await _json(send, 403, f"cross-origin request refused (Origin {_short(origin)})")
                return
        await self.app(scope, receive, send)


def _short(value: str | None) -> str:
    return repr((value or "")[:100])


async def _json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
