"""Webhook verification: GitHub, GitLab and generic signatures, freshness, replays, limits, and never raising.

Time is faked by passing ``now``; nothing here reads a clock or sleeps.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orlojd.core.webhooks import (
    MAX_BODY_BYTES,
    MAX_SKEW_SECONDS,
    Provider,
    ReplayGuard,
    Verdict,
    WebhookSecrets,
    verify,
)

PROPERTY = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
NOW = 1_700_000_000.0
GITHUB_KEY = b"github-hmac-key-0123456789"
GITLAB_TOKEN = b"gitlab-shared-token-0123456789"
GENERIC_KEY = b"generic-hmac-key-0123456789"
SECRETS = WebhookSecrets(github=GITHUB_KEY, gitlab=GITLAB_TOKEN, generic=GENERIC_KEY)
BODY = b'{"ref": "refs/heads/main", "after": "0123abc"}'


def github_sig(body: bytes, key: bytes = GITHUB_KEY) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def generic_sig(body: bytes, ts: int | str, key: bytes = GENERIC_KEY) -> str:
    return "sha256=" + hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def github_headers(body: bytes = BODY, key: bytes = GITHUB_KEY, delivery: str | None = None) -> dict[str, str]:
    headers = {"X-Hub-Signature-256": github_sig(body, key), "X-GitHub-Event": "push"}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def generic_headers(body: bytes = BODY, ts: int | str = int(NOW), key: bytes = GENERIC_KEY) -> dict[str, str]:
    return {"X-Orlojd-Signature": generic_sig(body, ts, key), "X-Orlojd-Timestamp": str(ts)}


def check(
    headers: Any,
    body: bytes = BODY,
    secrets: WebhookSecrets = SECRETS,
    now: float = NOW,
    guard: ReplayGuard | None = None,
) -> Verdict:
    verdict = verify(headers, body, secrets, now, guard if guard is not None else ReplayGuard())
    assert_safe(verdict)
    return verdict


REASONS = {
    "accepted",
    "body larger than 1048576 bytes",
    "body is not bytes",
    "cannot check freshness: no valid current time",
    "conflicting or malformed webhook headers",
    "no signature header",
    "more than one signature header",
    "no github secret configured",
    "no gitlab secret configured",
    "no generic secret configured",
    "malformed X-Hub-Signature-256",
    "malformed X-Orlojd-Signature",
    "malformed X-Orlojd-Timestamp",
    "missing X-Orlojd-Timestamp",
    "timestamp outside the 300 s window",
    "signature mismatch",
    "token mismatch",
    "replayed delivery",
    "request could not be verified",
}


def assert_safe(verdict: Verdict) -> None:
    """A verdict is well formed and its reason is one of the fixed strings: it echoes no input and no secret."""
    assert isinstance(verdict, Verdict)
    assert verdict.status in {202, 400, 401, 403, 409, 413}
    assert verdict.accepted == (verdict.status == 202)
    assert verdict.reason in REASONS


# -- GitHub -----------------------------------------------------------------------------------


def test_github_good_signature_is_accepted() -> None:
    assert check(github_headers()) == Verdict(True, 202, "accepted", Provider.GITHUB)


def test_github_wrong_secret_and_tampered_body_are_refused() -> None:
    assert check(github_headers(key=b"some-other-key")) == Verdict(False, 401, "signature mismatch", Provider.GITHUB)
    assert check(github_headers(), body=BODY + b" ").status == 401


def test_github_bad_signature_is_refused() -> None:
    flipped = github_sig(BODY)[:-1] + ("0" if github_sig(BODY)[-1] != "0" else "1")
    assert check({"X-Hub-Signature-256": flipped}).status == 401


def test_github_upper_case_hex_and_surrounding_whitespace_are_the_same_signature() -> None:
    assert check({"X-Hub-Signature-256": "sha256=" + github_sig(BODY)[7:].upper()}).accepted
    assert check({"X-Hub-Signature-256": "  " + github_sig(BODY) + "\t"}).accepted


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256=",
        "sha256=xyz",
        "sha1=" + hashlib.sha1(BODY).hexdigest(),
        "SHA256=" + "a" * 64,
        "sha256=" + "a" * 63,
        "sha256=" + "a" * 65,
        "sha256=" + "ab " * 32,
        "sha256=" + "a" * 64 + "\n",
        "sha256=" + "\u0661" * 64,
    ],
)
def test_github_malformed_signature_is_400(value: str) -> None:
    assert check({"X-Hub-Signature-256": value}) == Verdict(
        False, 400, "malformed X-Hub-Signature-256", Provider.GITHUB
    )


@pytest.mark.parametrize("secrets", [WebhookSecrets(), WebhookSecrets(github=b""), WebhookSecrets(gitlab=GITLAB_TOKEN)])
def test_github_secret_not_configured_is_403(secrets: WebhookSecrets) -> None:
    assert check(github_headers(key=b""), secrets=secrets) == Verdict(
        False, 403, "no github secret configured", Provider.GITHUB
    )


def test_github_replayed_delivery_is_409_and_a_new_delivery_id_does_not_bypass_it() -> None:
    guard = ReplayGuard()
    assert check(github_headers(delivery="d-1"), guard=guard).accepted
    assert check(github_headers(delivery="d-1"), now=NOW + 1, guard=guard) == Verdict(
        False, 409, "replayed delivery", Provider.GITHUB
    )
    # the delivery id is not signed: changing it must not make a captured request new
    assert check(github_headers(delivery="d-2"), now=NOW + 2, guard=guard).status == 409
    assert check(github_headers(), now=NOW + 3, guard=guard).status == 409
    # the same delivery id with another (validly signed) body is still a replay of that delivery
    assert check(github_headers(b"other", delivery="d-1"), body=b"other", now=NOW + 4, guard=guard).status == 409
    assert check(github_headers(b"next", delivery="d-3"), body=b"next", now=NOW + 5, guard=guard).accepted


# -- GitLab -----------------------------------------------------------------------------------


def test_gitlab_good_token_is_accepted() -> None:
    assert check({"X-Gitlab-Token": GITLAB_TOKEN.decode()}) == Verdict(True, 202, "accepted", Provider.GITLAB)


@pytest.mark.parametrize(
    "token", ["", "wrong", GITLAB_TOKEN.decode()[:-1], GITLAB_TOKEN.decode() + "x", "\u00e9\u20ac"]
)
def test_gitlab_wrong_token_is_401(token: str) -> None:
    assert check({"X-Gitlab-Token": token}) == Verdict(False, 401, "token mismatch", Provider.GITLAB)


def test_gitlab_secret_not_configured_is_403() -> None:
    for secrets in (WebhookSecrets(github=GITHUB_KEY, generic=GENERIC_KEY), WebhookSecrets(gitlab=b"")):
        verdict = check({"X-Gitlab-Token": ""}, secrets=secrets)
        assert verdict == Verdict(False, 403, "no gitlab secret configured", Provider.GITLAB)


def test_gitlab_latin1_decoded_header_matches_a_non_ascii_token() -> None:
    token = "t\u00f6ken-\u20ac".encode()
    as_http_server_decodes = token.decode("latin-1")
    assert check({"X-Gitlab-Token": as_http_server_decodes}, secrets=WebhookSecrets(gitlab=token)).accepted
    assert check({"X-Gitlab-Token": token.decode()}, secrets=WebhookSecrets(gitlab=token)).accepted


def test_gitlab_successive_pushes_are_not_replays_of_each_other() -> None:
    guard = ReplayGuard()
    token = GITLAB_TOKEN.decode()
    assert check({"X-Gitlab-Token": token}, body=b"push 1", guard=guard).accepted
    assert check({"X-Gitlab-Token": token}, body=b"push 2", now=NOW + 1, guard=guard).accepted
    assert check({"X-Gitlab-Token": token}, body=b"push 1", now=NOW + 2, guard=guard).status == 409


def test_gitlab_idempotency_key_identifies_retries() -> None:
    guard = ReplayGuard()
    token = GITLAB_TOKEN.decode()
    assert check({"X-Gitlab-Token": token, "Idempotency-Key": "k-1"}, body=b"a", guard=guard).accepted
    assert check({"X-Gitlab-Token": token, "Idempotency-Key": "k-1"}, body=b"b", guard=guard).status == 409
    assert check({"X-Gitlab-Token": token, "Idempotency-Key": "k-2"}, body=b"a", guard=guard).accepted


# -- generic ----------------------------------------------------------------------------------


def test_generic_good_signature_is_accepted() -> None:
    assert check(generic_headers()) == Verdict(True, 202, "accepted", Provider.GENERIC)


def test_generic_bad_signature_and_wrong_secret_are_401() -> None:
    mismatch = Verdict(False, 401, "signature mismatch", Provider.GENERIC)
    assert check(generic_headers(key=b"another-key")) == mismatch
    assert check(generic_headers(), body=BODY + b"!") == mismatch
    signed_for_other_time = {"X-Orlojd-Signature": generic_sig(BODY, int(NOW) - 1), "X-Orlojd-Timestamp": str(int(NOW))}
    assert check(signed_for_other_time) == mismatch
    assert check({"X-Orlojd-Signature": github_sig(BODY, GENERIC_KEY), "X-Orlojd-Timestamp": str(int(NOW))}) == mismatch


def test_generic_malformed_signature_is_400() -> None:
    headers = generic_headers()
    headers["X-Orlojd-Signature"] = headers["X-Orlojd-Signature"][7:]
    assert check(headers) == Verdict(False, 400, "malformed X-Orlojd-Signature", Provider.GENERIC)


def test_generic_secret_not_configured_is_403() -> None:
    verdict = check(generic_headers(), secrets=WebhookSecrets(github=GITHUB_KEY, gitlab=GITLAB_TOKEN))
    assert verdict == Verdict(False, 403, "no generic secret configured", Provider.GENERIC)


@pytest.mark.parametrize("offset", [-MAX_SKEW_SECONDS - 1, MAX_SKEW_SECONDS + 1, -86_400, 10**9])
def test_generic_timestamp_too_old_or_too_new_is_401(offset: int) -> None:
    ts = int(NOW) + offset
    assert check(generic_headers(ts=ts)) == Verdict(False, 401, "timestamp outside the 300 s window", Provider.GENERIC)


@pytest.mark.parametrize("offset", [-MAX_SKEW_SECONDS, 0, MAX_SKEW_SECONDS])
def test_generic_timestamp_at_the_edges_of_the_window_is_accepted(offset: int) -> None:
    assert check(generic_headers(ts=int(NOW) + offset)).accepted


def test_generic_fractional_now_is_compared_exactly() -> None:
    ts = int(NOW) - MAX_SKEW_SECONDS
    assert check(generic_headers(ts=ts), now=NOW + 0.5).status == 401


@pytest.mark.parametrize(
    "ts",
    ["", "abc", "1.5", f"{int(NOW)}.0", "1e9", f"+{int(NOW)}", f"-{int(NOW)}", f"0{int(NOW)}", "1_700_000_000",
     "\u0661\u0667\u0660\u0660", f"{int(NOW)} {int(NOW)}", "9" * 40],
)  # fmt: skip
def test_generic_non_integer_timestamp_is_400(ts: str) -> None:
    verdict = check({"X-Orlojd-Signature": generic_sig(BODY, ts), "X-Orlojd-Timestamp": ts})
    assert verdict == Verdict(False, 400, "malformed X-Orlojd-Timestamp", Provider.GENERIC)


def test_generic_missing_timestamp_is_401() -> None:
    verdict = check({"X-Orlojd-Signature": generic_sig(BODY, int(NOW))})
    assert verdict == Verdict(False, 401, "missing X-Orlojd-Timestamp", Provider.GENERIC)


def test_generic_replay_is_409_and_the_same_body_with_a_fresh_timestamp_is_accepted() -> None:
    guard = ReplayGuard()
    assert check(generic_headers(ts=int(NOW)), guard=guard).accepted
    assert check(generic_headers(ts=int(NOW)), now=NOW + 10, guard=guard) == Verdict(
        False, 409, "replayed delivery", Provider.GENERIC
    )
    assert check(generic_headers(ts=int(NOW) + 10), now=NOW + 10, guard=guard).accepted
    assert check(generic_headers(ts=int(NOW) + 10), now=NOW + 11, guard=guard).status == 409


def test_generic_replay_of_a_future_stamped_request_is_refused_for_its_whole_validity() -> None:
    guard = ReplayGuard()
    ts = int(NOW) + MAX_SKEW_SECONDS
    assert check(generic_headers(ts=ts), guard=guard).accepted
    # still inside the timestamp window 600 s later, so the guard must still remember it
    assert check(generic_headers(ts=ts), now=NOW + 2 * MAX_SKEW_SECONDS, guard=guard).status == 409
    assert check(generic_headers(ts=ts), now=NOW + 2 * MAX_SKEW_SECONDS + 1, guard=guard).status == 401


# -- detection, headers, limits ---------------------------------------------------------------


def test_no_signature_header_is_401() -> None:
    for headers in (
        {},
        {"Content-Type": "application/json"},
        {"X-Hub-Signature": "sha1=00"},
        {"X-GitHub-Delivery": "d"},
    ):
        assert check(headers) == Verdict(False, 401, "no signature header")


def test_more_than_one_signature_header_is_400() -> None:
    headers = {**github_headers(), **generic_headers()}
    assert check(headers) == Verdict(False, 400, "more than one signature header")
    assert check({**github_headers(), "X-Gitlab-Token": GITLAB_TOKEN.decode()}).status == 400


def _recase(headers: dict[str, str], how: str) -> dict[str, str]:
    change = {"lower": str.lower, "upper": str.upper, "swap": str.swapcase}[how]
    return {change(name): value for name, value in headers.items()}


@pytest.mark.parametrize("how", ["lower", "upper", "swap"])
def test_header_names_are_case_insensitive(how: str) -> None:
    assert check(_recase(github_headers(), how)).provider == Provider.GITHUB
    assert check(_recase(github_headers(), how)).accepted
    assert check(_recase({"X-Gitlab-Token": GITLAB_TOKEN.decode()}, how)).accepted
    assert check(_recase(generic_headers(), how)).accepted
    assert check(_recase({"X-Orlojd-Signature": generic_sig(BODY, int(NOW))}, how)).status == 401


def test_two_spellings_of_a_header_must_agree() -> None:
    good = github_sig(BODY)
    assert check({"X-Hub-Signature-256": good, "x-hub-signature-256": good}).accepted
    conflicting = {"X-Hub-Signature-256": good, "x-hub-signature-256": "sha256=" + "0" * 64}
    assert check(conflicting) == Verdict(False, 400, "conflicting or malformed webhook headers")


def test_non_ascii_header_names_are_not_folded_onto_ours() -> None:
    kelvin = "X-Gitlab-To\u212aen"  # KELVIN SIGN lower-cases to ASCII 'k'
    assert check({kelvin: GITLAB_TOKEN.decode()}) == Verdict(False, 401, "no signature header")


def test_body_of_exactly_one_mebibyte_is_accepted_and_one_byte_more_is_413() -> None:
    body = b"x" * MAX_BODY_BYTES
    assert MAX_BODY_BYTES == 1024 * 1024
    assert check(github_headers(body), body=body).accepted
    larger = body + b"x"
    too_large = Verdict(False, 413, "body larger than 1048576 bytes")
    assert check(github_headers(larger), body=larger) == too_large
    assert check({}, body=larger) == too_large  # checked before anything else
    assert check(generic_headers(larger), body=larger, secrets=WebhookSecrets()) == too_large


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_an_unusable_now_is_refused_without_raising(now: float) -> None:
    guard = ReplayGuard()
    for headers in (github_headers(), generic_headers(), {"X-Gitlab-Token": GITLAB_TOKEN.decode()}):
        assert not check(headers, now=now, guard=guard).accepted
    assert len(guard) == 0


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-Hub-Signature-256": None}, BODY),
        ({"X-Hub-Signature-256": b"sha256=00"}, BODY),
        ({1: "x", None: "y", b"X-Gitlab-Token": "z"}, BODY),
        (github_headers(), "text, not bytes"),
        (github_headers(), None),
        (None, BODY),
        ("X-Hub-Signature-256", BODY),
    ],
)
def test_wrongly_typed_input_is_refused_without_raising(headers: Any, body: Any) -> None:
    assert not check(headers, body=body).accepted


def test_rejected_requests_are_not_remembered() -> None:
    guard = ReplayGuard()
    check(github_headers(key=b"attacker"), guard=guard)
    check({"X-Gitlab-Token": "guess"}, guard=guard)
    check(generic_headers(ts=int(NOW) - 10_000), guard=guard)
    assert len(guard) == 0


# -- ReplayGuard ------------------------------------------------------------------------------


def test_guard_remembers_within_the_window_and_forgets_after_it() -> None:
    guard = ReplayGuard(window=300)
    assert guard.seen("a", 1000.0) is False
    assert guard.seen("a", 1000.0) is True
    assert guard.seen("a", 1300.0) is True  # exactly the window: still a replay
    assert guard.seen("b", 1300.5) is False  # evicts "a" (older than the window)
    assert len(guard) == 1
    assert guard.seen("a", 1300.5) is False


def test_guard_eviction_bounds_memory_over_time() -> None:
    guard = ReplayGuard()
    for i in range(500):
        assert guard.seen(f"k{i}", NOW) is False
    assert len(guard) == 500
    assert guard.seen("late", NOW + 2 * MAX_SKEW_SECONDS + 1) is False
    assert len(guard) == 1


def test_guard_default_window_is_twice_the_skew() -> None:
    guard = ReplayGuard()
    guard.seen("k", NOW)
    assert guard.seen("k", NOW + 2 * MAX_SKEW_SECONDS) is True
    assert guard.seen("j", NOW + 4 * MAX_SKEW_SECONDS + 1) is False
    assert guard.seen("k", NOW + 4 * MAX_SKEW_SECONDS + 1) is False


def test_guard_caps_at_ten_thousand_entries_dropping_the_oldest() -> None:
    guard = ReplayGuard()
    for i in range(10_000):
        guard.seen(f"k{i}", NOW)
    assert len(guard) == 10_000
    assert guard.seen("k10000", NOW) is False
    assert len(guard) == 10_000
    for i in range(20_000):
        guard.seen(f"flood{i}", NOW)
    assert len(guard) == 10_000
    assert guard.seen("flood19999", NOW) is True
    assert guard.seen("k1", NOW) is False  # dropped by the cap


def test_guard_treats_a_clock_gone_back_as_still_seen() -> None:
    guard = ReplayGuard()
    guard.seen("k", NOW)
    assert guard.seen("k", NOW - 3_600) is True


def test_guard_rejects_an_unusable_configuration() -> None:
    for window, cap in ((0, 10), (-1, 10), (math.nan, 10), (math.inf, 10), (60, 0)):
        with pytest.raises(ValueError):
            ReplayGuard(window=window, cap=cap)


# -- properties -------------------------------------------------------------------------------

OUR_NAMES = ["X-Hub-Signature-256", "X-GitHub-Delivery", "X-Gitlab-Token", "Idempotency-Key", "X-Orlojd-Signature",
             "X-Orlojd-Timestamp"]  # fmt: skip
names = st.one_of(st.sampled_from(OUR_NAMES).map(lambda n: n.swapcase() if len(n) % 2 else n), st.text(max_size=30))
nows = st.one_of(
    st.just(NOW),
    st.just(NOW + 0.5),
    st.floats(0, 2**33),
    st.floats(0, 2**33),
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes, float]:
    """Arbitrary headers and bytes, built around a correctly signed request for one scheme that is then
    perturbed (key, body, timestamp, header case, values replaced or dropped, headers added), so accepted,
    nearly accepted and plainly wrong requests are all common."""
    body = draw(st.binary(max_size=256))
    now = draw(nows)
    usable_now = int(now) if math.isfinite(now) else 0
    near = st.integers(usable_now - 400, usable_now + 400)
    ts = draw(st.one_of(near, near, near, st.integers(-(2**40), 2**40)))
    key = draw(st.sampled_from([GITHUB_KEY, GITLAB_TOKEN, GENERIC_KEY, b"other"]))
    signed_body = draw(st.one_of(st.just(body), st.binary(max_size=8)))
    scheme = draw(st.sampled_from(["github", "gitlab", "generic", "none"]))
    base: dict[str, str] = {
        "github": {"X-Hub-Signature-256": github_sig(signed_body, key), "X-GitHub-Delivery": "d"},
        "gitlab": {"X-Gitlab-Token": key.decode()},
        "generic": {"X-Orlojd-Signature": generic_sig(signed_body, ts, key), "X-Orlojd-Timestamp": str(ts)},
        "none": {},
    }[scheme]
    headers: dict[str, str] = {}
    for name, value in base.items():
        action = draw(st.sampled_from(["keep", "keep", "keep", "recase", "replace", "drop"]))
        if action == "recase":
            headers[draw(st.sampled_from([name.lower(), name.upper(), name.swapcase()]))] = value
        elif action == "replace":
            headers[name] = draw(st.text(max_size=80))
        elif action == "keep":
            headers[name] = value
    values = st.one_of(st.text(max_size=80), st.just(github_sig(body, key)), st.just(key.decode()), st.just(str(ts)))
    extra = draw(st.dictionaries(names, values, max_size=3))
    return {**headers, **extra}, body, now


def validly_signed(headers: dict[str, str], body: bytes, now: float) -> bool:
    """An independent oracle: does the request carry a valid signature for a configured secret?"""
    low = {n.lower(): v.strip(" \t") for n, v in headers.items() if n.isascii()}
    github = low.get("x-hub-signature-256", "").lower()
    if github == github_sig(body).lower():
        return True
    if low.get("x-gitlab-token") == GITLAB_TOKEN.decode():
        return True
    ts = low.get("x-orlojd-timestamp", "")
    return (
        ts.isascii() and ts.isdigit() and math.isfinite(now) and abs(now - int(ts)) <= MAX_SKEW_SECONDS
        and low.get("x-orlojd-signature", "").lower() == generic_sig(body, int(ts)).lower()
    )  # fmt: skip


@PROPERTY
@given(requests())
def test_verify_never_raises_and_never_accepts_without_a_valid_signature(
    request: tuple[dict[str, str], bytes, float],
) -> None:
    headers, body, now = request
    guard = ReplayGuard()
    verdict = check(headers, body=body, now=now, guard=guard)
    if verdict.accepted:
        assert validly_signed(headers, body, now)
    assert len(guard) <= (2 if verdict.status in {202, 409} else 0)
    # and with no secrets at all, nothing is ever accepted
    assert not check(headers, body=body, secrets=WebhookSecrets(), now=now).accepted


@PROPERTY
@given(st.dictionaries(st.text(max_size=40), st.text(max_size=200), max_size=12), st.binary(max_size=2048), nows)
def test_verify_never_raises_on_arbitrary_text_headers(headers: dict[str, str], body: bytes, now: float) -> None:
    assert not check(headers, body=body, now=now).accepted


@PROPERTY
@given(st.binary(max_size=512), st.binary(min_size=1, max_size=512))
def test_a_signature_never_carries_over_to_another_body(body: bytes, other: bytes) -> None:
    if body == other:
        return
    assert check(github_headers(body), body=body).accepted
    assert check(github_headers(body), body=other).status == 401
    assert check(generic_headers(body), body=body).accepted
    assert check(generic_headers(body), body=other).status == 401
