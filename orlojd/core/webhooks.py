"""Webhook verification: headers and raw body in, a ``Verdict`` out. Pure; never raises.

A webhook only tells ``orlojd serve`` that something was pushed, so the daemon polls
git sooner. The payload is never trusted for content; this module only decides whether
the request is authentic and fresh enough to be worth a poll.

Three schemes, detected from the headers (names are case-insensitive):

* GitHub: ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the raw body.
* GitLab: ``X-Gitlab-Token``, a shared token compared in constant time.
* generic: ``X-Orlojd-Signature: sha256=<hex>`` with ``X-Orlojd-Timestamp: <unix seconds>``,
  HMAC-SHA256 of ``f"{ts}.".encode() + body``; the timestamp must be within
  ``MAX_SKEW_SECONDS`` of ``now``.

Replays are refused with a ``ReplayGuard``, which only ever records requests that
passed verification, so unauthenticated traffic cannot fill or flush it. Reasons are
fixed strings: they never echo a header value, a secret or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

MAX_BODY_BYTES = 1_048_576
MAX_SKEW_SECONDS = 300
REPLAY_WINDOW_SECONDS = 2 * MAX_SKEW_SECONDS
"""How long the guard remembers a delivery. Twice the skew: a generic request stamped
up to 300 s in the future stays valid until 600 s after it was first accepted."""
MAX_REPLAY_ENTRIES = 10_000

_GITHUB_SIGNATURE = "x-hub-signature-256"
_GITHUB_DELIVERY = "x-github-delivery"
_GITLAB_TOKEN = "x-gitlab-token"
_GITLAB_IDEMPOTENCY = "idempotency-key"
_GENERIC_SIGNATURE = "x-orlojd-signature"
_GENERIC_TIMESTAMP = "x-orlojd-timestamp"
_WANTED = frozenset(
    {_GITHUB_SIGNATURE, _GITHUB_DELIVERY, _GITLAB_TOKEN, _GITLAB_IDEMPOTENCY, _GENERIC_SIGNATURE, _GENERIC_TIMESTAMP}
)
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,14}")
_OWS = " \t"


class Provider(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    GENERIC = "generic"


@dataclass(frozen=True)
class WebhookSecrets:
    github: bytes | None = None  # HMAC key for X-Hub-Signature-256
    gitlab: bytes | None = None  # shared token compared with X-Gitlab-Token
    generic: bytes | None = None  # HMAC key for the generic scheme


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    status: int  # 202 accepted, 400 malformed, 401 bad/missing signature, 403 no secret, 409 replay, 413 too large
    reason: str  # short, safe to log and to return; never echoes secrets or the signature
    provider: Provider | None = None


class ReplayGuard:
    """Remembers (provider, signature) pairs seen within the skew window; pure: `now` passed in; bounded memory
    (evicts entries older than the window; cap 10,000 entries).

    The window defaults to ``REPLAY_WINDOW_SECONDS`` (twice the skew, see there). When the
    cap is reached the oldest entry is dropped. A key recorded at a time later than ``now``
    (the clock went back) still counts as seen.
    """

    def __init__(self, window: float = REPLAY_WINDOW_SECONDS, cap: int = MAX_REPLAY_ENTRIES) -> None:
        if not (math.isfinite(window) and window > 0) or cap < 1:
            raise ValueError("window must be a positive finite number of seconds and cap at least 1")
        self._window = float(window)
        self._cap = cap
        self._entries: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, key: str, now: float) -> bool:
        """True if ``key`` was seen within the window (a replay); records it otherwise."""
        if not math.isfinite(now):
            return True  # freshness cannot be judged: refuse rather than remember garbage
        self._evict(now)
        recorded = self._entries.get(key)
        if recorded is not None and now - recorded <= self._window:
            return True
        self._entries.pop(key, None)
        while len(self._entries) >= self._cap:
            self._entries.popitem(last=False)
        self._entries[key] = now
        return False

    def _evict(self, now: float) -> None:
        horizon = now - self._window
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest >= horizon:
                return
            self._entries.popitem(last=False)


def verify(headers: Mapping[str, str], body: bytes, secrets: WebhookSecrets, now: float, guard: ReplayGuard) -> Verdict:
    """Decide whether a webhook request is authentic, fresh and new. Never raises."""
    try:
        return _verify(headers, body, secrets, now, guard)
    except Exception:  # arbitrary input must give an answer, never a traceback
        return Verdict(False, 400, "request could not be verified")


def _verify(
    headers: Mapping[str, str], body: bytes, secrets: WebhookSecrets, now: float, guard: ReplayGuard
) -> Verdict:
    if len(body) > MAX_BODY_BYTES:
        return Verdict(False, 413, f"body larger than {MAX_BODY_BYTES} bytes")
    if not isinstance(body, bytes | bytearray):
        return Verdict(False, 400, "body is not bytes")
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        return Verdict(False, 401, "cannot check freshness: no valid current time")
    found = _relevant(headers)
    if found is None:
        return Verdict(False, 400, "conflicting or malformed webhook headers")
    present = [name for name in (_GITHUB_SIGNATURE, _GITLAB_TOKEN, _GENERIC_SIGNATURE) if name in found]
    if not present:
        return Verdict(False, 401, "no signature header")
    if len(present) > 1:
        return Verdict(False, 400, "more than one signature header")
    if present[0] == _GITHUB_SIGNATURE:
        return _github(found, bytes(body), secrets.github, now, guard)
    if present[0] == _GITLAB_TOKEN:
        return _gitlab(found, bytes(body), secrets.gitlab, now, guard)
    return _generic(found, bytes(body), secrets.generic, now, guard)


def _relevant(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The headers this module reads, by lower-case name; None if two spellings disagree or a value is not text."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not name.isascii():  # 'K' (Kelvin) lowers to 'k': ASCII names only
            continue
        lowered = name.lower()
        if lowered not in _WANTED:
            continue
        if not isinstance(value, str):
            return None
        value = value.strip(_OWS)
        if found.setdefault(lowered, value) != value:
            return None
    return found


def _digest(value: str) -> bytes | None:
    match = _SIGNATURE.fullmatch(value)
    return bytes.fromhex(match.group(1)) if match else None


def _hashed(text: str | bytes) -> str:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def _replayed(guard: ReplayGuard, keys: list[str], now: float) -> bool:
    results = [guard.seen(key, now) for key in keys]  # record every key, not only up to the first hit
    return any(results)


def _accept(provider: Provider, guard: ReplayGuard, keys: list[str], now: float) -> Verdict:
    if _replayed(guard, keys, now):
        return Verdict(False, 409, "replayed delivery", provider)
    return Verdict(True, 202, "accepted", provider)


def _github(found: dict[str, str], body: bytes, secret: bytes | None, now: float, guard: ReplayGuard) -> Verdict:
    provider = Provider.GITHUB
    if not secret:  # None, or empty: an empty key would let anyone sign
        return Verdict(False, 403, "no github secret configured", provider)
    given = _digest(found[_GITHUB_SIGNATURE])
    if given is None:
        return Verdict(False, 400, "malformed X-Hub-Signature-256", provider)
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        return Verdict(False, 401, "signature mismatch", provider)
    keys = [f"github:sig:{given.hex()}"]
    if _GITHUB_DELIVERY in found:  # not signed, so it adds to the signature key rather than replacing it
        keys.append(f"github:delivery:{_hashed(found[_GITHUB_DELIVERY])}")
    return _accept(provider, guard, keys, now)


def _token_bytes(value: str) -> bytes:
    """The header as sent: http.server decodes header bytes as Latin-1; other text is taken as UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _gitlab(found: dict[str, str], body: bytes, secret: bytes | None, now: float, guard: ReplayGuard) -> Verdict:
    provider = Provider.GITLAB
    if not secret:  # None, or empty: an empty key would let anyone sign
        return Verdict(False, 403, "no gitlab secret configured", provider)
    given = hashlib.sha256(_token_bytes(found[_GITLAB_TOKEN])).digest()  # hashing hides the token's length
    if not hmac.compare_digest(given, hashlib.sha256(secret).digest()):
        return Verdict(False, 401, "token mismatch", provider)
    # The token is the same on every delivery, so it cannot tell a replay from the next push.
    # GitLab 17.4+ sends Idempotency-Key, constant across retries; otherwise the body identifies the event.
    if _GITLAB_IDEMPOTENCY in found:
        key = f"gitlab:idempotency:{_hashed(found[_GITLAB_IDEMPOTENCY])}"
    else:
        key = f"gitlab:body:{_hashed(body)}"
    return _accept(provider, guard, [key], now)


def _generic(found: dict[str, str], body: bytes, secret: bytes | None, now: float, guard: ReplayGuard) -> Verdict:
    provider = Provider.GENERIC
    if not secret:  # None, or empty: an empty key would let anyone sign
        return Verdict(False, 403, "no generic secret configured", provider)
    given = _digest(found[_GENERIC_SIGNATURE])
    if given is None:
        return Verdict(False, 400, "malformed X-Orlojd-Signature", provider)
    if _GENERIC_TIMESTAMP not in found:
        return Verdict(False, 401, "missing X-Orlojd-Timestamp", provider)
    if not _TIMESTAMP.fullmatch(found[_GENERIC_TIMESTAMP]):  # canonical decimal only: the text is what was signed
        return Verdict(False, 400, "malformed X-Orlojd-Timestamp", provider)
    ts = int(found[_GENERIC_TIMESTAMP])
    if not abs(now - ts) <= MAX_SKEW_SECONDS:
        return Verdict(False, 401, f"timestamp outside the {MAX_SKEW_SECONDS} s window", provider)
    expected = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        return Verdict(False, 401, "signature mismatch", provider)
    return _accept(provider, guard, [f"generic:sig:{given.hex()}"], now)
