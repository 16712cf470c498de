"""Webhook signatures: pure functions that fail closed (no secret, no header → not valid).

Twilio signs ``HMAC-SHA1(auth token, URL + sorted form params)`` (protocols.md §4.1) where the
URL is the public one Twilio requested, rebuilt here from ``VOICEBOT_PUBLIC_URL`` plus the raw
path and query (§4.4: the app sees ``http://127.0.0.1:…`` behind a proxy). Meta signs
``HMAC-SHA256(app secret, raw body)`` (§5.2): it must be computed over the exact bytes received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "meta_signature",
    "public_url",
    "twilio_signature",
    "verify_meta",
    "verify_twilio",
]

_DEFAULT_PORTS = {"https": 443, "http": 80, "wss": 443, "ws": 80}


def public_url(base: str, raw_path: str) -> str:
    """The URL Twilio signed: the configured public base (which may carry a path prefix) plus
    the request's raw path and query, never re-encoded (§4.4, error 57012)."""
    return base.rstrip("/") + raw_path


def twilio_signature(url: str, params: Mapping[str, Iterable[str]], token: str) -> str:
    """Base64 HMAC-SHA1 over ``url`` + each name and value, names sorted, each name's distinct
    values sorted — exactly what twilio's ``RequestValidator.compute_signature`` does (§4.1)."""
    payload = url
    for name in sorted(params):
        for value in sorted(set(params[name])):
            payload += name + value
    digest = hmac.new(token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """The URL with and without its default port: Twilio's back end signs either form (§4.3)."""
    parts = urlsplit(url.split("#", 1)[0])  # fragments (#rc=…) are never signed (§1.2)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    default = _DEFAULT_PORTS.get(parts.scheme)
    port = parts.port
    if port is None:
        variants = [parts.netloc, f"{prefix}{host}:{default}"] if default else [parts.netloc]
    elif port == default:
        variants = [parts.netloc, f"{prefix}{host}"]
    else:
        variants = [parts.netloc]
    return [urlunsplit(parts._replace(netloc=netloc)) for netloc in variants]


def verify_twilio(
    url: str, params: Mapping[str, Iterable[str]], signature: str | None, token: str
) -> bool:
    """True only when ``signature`` matches; a missing token or header never validates."""
    if not token or not signature:
        return False
    values = {name: list(vals) for name, vals in params.items()}
    ok = False
    for candidate in _port_variants(url):
        expected = twilio_signature(candidate, values, token)
        # Evaluate every variant so timing does not reveal which one matched.
        ok |= hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))
    return ok


def meta_signature(raw: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` header value Meta sends for ``raw``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()


def verify_meta(raw: bytes, header: str | None, secret: str) -> bool:
    """Constant-time check of ``sha256=<hex>`` over the raw body bytes (§5.2)."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = meta_signature(raw, secret)
    return hmac.compare_digest(expected.encode("ascii"), header.encode("utf-8", "replace"))
