"""`orlojd serve` end to end: a real bare origin, a clone that commits and pushes to it,
and the daemon as a subprocess (tests/e2e/serve_harness.py).

Every wait polls the state store (or the daemon's log) with a deadline; nothing sleeps
for a fixed time. Unless a test says otherwise the daemon watches the bare repository
as a local path; test_remote_url_is_mirrored_and_polled and the webhook test use its
file:// URL, which the daemon treats as remote (mirror + ls-remote). The store is SQLite
in the daemon's state folder, except for the standby test, which runs on both stores
(``db_url``: PostgreSQL takes an advisory lock instead of the lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from manifests import OFFLINE_ENDPOINT
from serve_harness import DEADLINE, ORLOJD, Origin, Served, clean_env, condition, git, wait_for

from orlojd.core.digest import digest_of

pytestmark = pytest.mark.e2e


ENDPOINT = OFFLINE_ENDPOINT

AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: clerk
spec:
  modelRef: offline
  tools:
    - name: ledger
      permissions:
        - read: ledger
"""

TOOL_KEY = ("Tool", "default", "ledger")
SECRET = b"webhook-hmac-key-0123456789"
GITLAB_TOKEN = b"gitlab-shared-token-0123456789"


def tool(description: str) -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: ledger
spec:
  type: builtin
  description: "{description}"
  requires:
    - read: ledger
"""


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    """A bare origin and a clone holding three valid objects, not pushed yet."""
    made = Origin.create(tmp_path)
    made.write("models/offline.yaml", ENDPOINT)
    made.write("tools/ledger.yaml", tool("v0"))
    made.write("agents/clerk.yaml", AGENT)
    return made


def change(origin: Origin, description: str, **commit: Any) -> str:
    """Commit a new Tool description (a real update), without pushing."""
    origin.write("tools/ledger.yaml", tool(description))
    return origin.commit(f"ledger: {description}", **commit)


def deploy(origin: Origin, description: str) -> str:
    head = change(origin, description)
    origin.push()
    return head


def results(served: Served, revision: str) -> list[str]:
    return [h["result"] for h in served.store.history() if h["revision"] == revision]


# -- 1. push to deploy -------------------------------------------------------------------------------


def test_push_deploys_the_new_revision(tmp_path: Path, origin: Origin) -> None:
    first = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare) as served:
        served.wait_applied(first)
        pushed = deploy(origin, "v1")
        served.wait_applied(pushed)
        served.wait_condition("Ready", "Applied", revision_seen=pushed)

        status = served.status_json()
    assert status["revision"] == pushed
    source = status["source"]
    assert (source["repo"], source["branch"], source["revision_seen"]) == (str(origin.bare), "main", pushed)
    ready = condition(source, "Ready")
    assert ready is not None and ready["reason"] == "Applied" and pushed[:12] in ready["message"]
    assert "1 updated" in ready["message"]
    assert {c["type"]: c["status"] for c in source["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert {(o["kind"], o["name"]) for o in status["objects"]} == {
        ("ModelEndpoint", "offline"),
        ("Tool", "ledger"),
        ("Agent", "clerk"),
    }
    assert (status["history"][0]["revision"], status["history"][0]["result"]) == (pushed, "applied")


# -- 2. a bad commit keeps the last good revision --------------------------------------------------------


def test_bad_commit_stalls_and_the_last_good_revision_keeps_running(tmp_path: Path, origin: Origin) -> None:
    good = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare) as served:
        served.wait_applied(good)
        origin.write("agents/clerk.yaml", AGENT.replace("modelRef", "modelRfe"))
        bad = origin.commit("typo")
        origin.push()

        stalled = served.wait_condition("Stalled", "ApplyRefused", revision_seen=bad)
        assert bad[:12] in stalled["message"] and "modelRfe" in stalled["message"]
        assert f"{good[:12]} keeps running" in stalled["message"]
        assert stalled["lastAppliedRevision"] == good
        assert condition(served.store.source_status(), "Ready") is None
        assert served.store.applied_revision() == good
        assert results(served, bad) == ["stalled"]
        assert served.running

        origin.write("agents/clerk.yaml", AGENT)
        fixed = change(origin, "fixed")
        origin.push()
        served.wait_applied(fixed)
        served.wait_condition("Ready", "Applied", revision_seen=fixed)
        assert served.store.inventory()[TOOL_KEY][1].count('"description":"fixed"') == 1


# -- 3. coalescing -------------------------------------------------------------------------------------


def test_a_burst_of_commits_applies_the_newest_and_records_the_rest_as_superseded(
    tmp_path: Path, origin: Origin
) -> None:
    base = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare) as served:
        served.wait_applied(base)
        first, second, newest = (change(origin, f"burst {n}") for n in range(3))
        origin.push()  # one push, three commits

        served.wait_applied(newest)
        history = served.store.history()
    assert results(served, newest) == ["applied"]
    assert results(served, first) == ["superseded"] and results(served, second) == ["superseded"]
    superseded = [h for h in history if h["result"] == "superseded"]
    assert [h["revision"] for h in superseded] == [second, first]  # newest first, as recorded oldest first
    assert all(h["summary"] == {"by": newest} for h in superseded)


# -- 4. signatures ---------------------------------------------------------------------------------------


def ssh_key(folder: Path, name: str) -> tuple[Path, str]:
    """(public key file, "ssh-ed25519 AAAA...") of a new key; git signs with the private key beside it."""
    private = folder / name
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)]
    done = subprocess.run(command, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    public = private.with_suffix(".pub")
    return public, " ".join(public.read_text().split()[:2])


def test_verify_head_refuses_unsigned_and_untrusted_commits_and_applies_signed_ones(
    tmp_path: Path, origin: Origin
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    trusted, trusted_line = ssh_key(keys, "trusted")
    rogue, _ = ssh_key(keys, "rogue")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'signer@example.invalid namespaces="git" {trusted_line}\n')

    signed = origin.commit("base, signed", signing_key=trusted)
    origin.push()
    with Served(tmp_path, origin.bare, "--verify", "head", "--allowed-signers", str(allowed)) as served:
        served.wait_applied(signed)

        unsigned = deploy(origin, "unsigned")
        refused = served.wait_condition("Stalled", "SignatureVerificationFailed", revision_seen=unsigned)
        assert f"commit {unsigned[:12]}" in refused["message"] and "unsigned" in refused["message"]
        assert f"{signed[:12]} keeps running" in refused["message"]
        assert served.store.applied_revision() == signed

        untrusted = change(origin, "rogue", signing_key=rogue)
        origin.push()
        refused = served.wait_condition("Stalled", "SignatureVerificationFailed", revision_seen=untrusted)
        assert "untrusted" in refused["message"]
        assert served.store.applied_revision() == signed

        good = change(origin, "signed again", signing_key=trusted)
        origin.push()
        served.wait_applied(good)
        served.wait_condition("Ready", "Applied", revision_seen=good)
    assert results(served, unsigned) == ["stalled"] and results(served, untrusted) == ["stalled"]


# -- 5. webhooks and health ----------------------------------------------------------------------------


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    """(status, JSON body) from the daemon's listener on 127.0.0.1."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body if method == "POST" else None, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def github_headers(body: bytes, delivery: str, key: bytes = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
    }


def oversized_post(port: int, size: int) -> bytes:
    """POST a real body of ``size`` bytes; return what the server answered before it hung up."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: {size}\r\n\r\n".encode()
        )

        def send_body() -> None:
            with contextlib.suppress(OSError):  # the server answers without reading the body, then closes
                conn.sendall(b"x" * size)

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
        sender.join(timeout=10)
    return answer


def test_webhooks_trigger_a_reconcile_and_bad_deliveries_are_refused(tmp_path: Path, origin: Origin) -> None:
    secret_file, token_file = tmp_path / "webhook-secret", tmp_path / "gitlab-token"
    secret_file.write_bytes(SECRET + b"\n")  # as `echo KEY > file` writes it: the daemon strips the newline
    token_file.write_bytes(GITLAB_TOKEN + b"\n")
    # A remote URL polled once an hour: only a webhook can make the daemon look at the origin again.
    args = ("--poll-interval", "1h", "--webhook-secret-file", str(secret_file), "--gitlab-token-file", str(token_file))
    with Served(tmp_path, origin.url, *args, listen=True) as served:
        port = served.port
        assert port is not None
        served.wait_condition("Stalled", "BranchNotFound")  # first pass done, listener up, origin still empty
        assert request(port, "GET", "/healthz") == (200, {"status": "ok"})
        status, ready = request(port, "GET", "/readyz")
        assert (status, ready["ready"]) == (503, False)

        first = origin.commit("base")
        origin.push()
        body = json.dumps({"ref": "refs/heads/main", "after": first}).encode()
        status, answer = request(port, "POST", "/webhook", body, {"Content-Type": "application/json"})
        assert (status, answer["accepted"]) == (401, False)  # no signature
        forged = github_headers(body, "delivery-1", key=b"not-the-secret")
        assert request(port, "POST", "/webhook", body, forged)[0] == 401
        assert served.store.applied_revision() is None

        delivery = github_headers(body, "delivery-1")
        assert request(port, "POST", "/webhook", body, delivery) == (202, {"accepted": True, "reason": "accepted"})
        served.wait_applied(first)
        wait_for("/readyz 200", lambda: request(port, "GET", "/readyz")[0] == 200, explain=served.explain)
        assert request(port, "GET", "/readyz")[1] == {"ready": True, "revision": first}

        status, answer = request(port, "POST", "/webhook", body, delivery)  # the same delivery again
        assert (status, answer["accepted"], answer["reason"]) == (409, False, "replayed delivery")

        answer_413 = oversized_post(port, 1_048_577)
        assert answer_413.startswith(b"HTTP/1.1 413 "), answer_413[:200]

        second = deploy(origin, "via gitlab")
        gitlab_body = json.dumps({"object_kind": "push", "after": second}).encode()
        status, _ = request(port, "POST", "/webhook", gitlab_body, {"X-Gitlab-Token": GITLAB_TOKEN.decode()})
        assert status == 202
        served.wait_applied(second)

        third = deploy(origin, "via generic")
        stamp = str(int(time.time()))
        generic_body = json.dumps({"after": third}).encode()
        signature = hmac.new(SECRET, f"{stamp}.".encode() + generic_body, hashlib.sha256).hexdigest()
        generic = {"X-Orlojd-Timestamp": stamp, "X-Orlojd-Signature": f"sha256={signature}"}
        assert request(port, "POST", "/hooks/generic", generic_body, generic)[0] == 202
        served.wait_applied(third)
        assert served.running


# -- 6. SIGTERM ------------------------------------------------------------------------------------------


def test_sigterm_drains_exits_zero_and_releases_the_lock(tmp_path: Path, origin: Origin) -> None:
    first = origin.commit("base")
    origin.push()
    state = tmp_path / "state"
    with Served(tmp_path, origin.bare, state_dir=state, name="first") as served:
        served.wait_applied(first)
        started = time.monotonic()
        assert served.terminate(grace=10) == 0
        assert time.monotonic() - started < 10
        assert served.log().rstrip().splitlines()[-1].split()[2] == "stopped"

    with (state / "daemon.lock").open("a") as handle:  # released: taken at once, without blocking
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    with Served(tmp_path, origin.bare, state_dir=state, name="second") as again:
        again.wait_log("lock acquired", deadline=DEADLINE)
        assert "standby" not in again.log()
        pushed = deploy(origin, "after restart")
        again.wait_applied(pushed)


# -- 7. kill -9 and restart ------------------------------------------------------------------------------


def test_after_sigkill_a_new_daemon_resumes_from_the_store(tmp_path: Path, origin: Origin) -> None:
    first = origin.commit("base")
    origin.push()
    state = tmp_path / "state"
    with Served(tmp_path, origin.bare, state_dir=state, name="killed") as killed:
        killed.wait_applied(first)
        killed.kill()
        assert killed.process is not None and killed.process.returncode == -9
        assert "stopped" not in killed.log()

    with Served(tmp_path, origin.bare, state_dir=state, name="restarted") as restarted:
        restarted.wait_log(f"{first[:12]} is applied; nothing to change")
        assert restarted.store.applied_revision() == first
        assert "standby" not in restarted.log()
        pushed = deploy(origin, "after the crash")
        restarted.wait_applied(pushed)
        restarted.wait_condition("Ready", "Applied", revision_seen=pushed)
    assert results(restarted, first) == ["applied"]  # applied once, by the first daemon


# -- 8. hot standby --------------------------------------------------------------------------------------


def test_standby_applies_nothing_until_the_active_daemon_dies(tmp_path: Path, origin: Origin, db_url: str) -> None:
    """SQLite: one state folder, so the file lock beside the database decides. PostgreSQL: each
    replica has its own state folder (as on two machines), so only the advisory lock can."""
    postgres = db_url.startswith("postgresql")
    first = origin.commit("base")
    origin.push()
    state_a = tmp_path / "state-a"
    state_b = tmp_path / "state-b" if postgres else state_a
    with Served(tmp_path, origin.bare, state_dir=state_a, db=db_url, name="active") as active:
        active.wait_applied(first)
        with Served(tmp_path, origin.bare, state_dir=state_b, db=db_url, name="standby") as standby:
            standby.wait_log("standby")

            while_standing_by = deploy(origin, "applied by the active daemon")
            active.wait_applied(while_standing_by)
            active.wait_log(while_standing_by[:12])
            log = standby.log()
            assert "lock acquired" not in log and "applied" not in log, log
            assert standby.running

            active.kill()
            standby.wait_log("lock acquired")
            taken_over = deploy(origin, "applied by the standby")
            standby.wait_applied(taken_over)
            assert f"applied {taken_over[:12]}" in standby.wait_log(f"applied {taken_over[:12]}")
    assert results(standby, while_standing_by) == ["applied"]


# -- 9. drift ----------------------------------------------------------------------------------------------


def tamper(served: Served, description: str) -> None:
    """Change Tool/ledger's stored body behind the daemon's back (its digest column stays)."""
    _, body = served.store.inventory()[TOOL_KEY]
    edited = json.loads(body)
    edited["spec"]["description"] = description
    changed = served.store.execute(
        "UPDATE inventory SET body = :body WHERE kind = 'Tool' AND namespace = 'default' AND name = 'ledger'",
        body=json.dumps(edited, sort_keys=True, separators=(",", ":")),
    )
    assert changed == 1


def wait_restored(served: Served, digest: str) -> None:
    def restored() -> bool:
        row = served.store.inventory().get(TOOL_KEY)
        return row is not None and row[0] == digest and digest_of(json.loads(row[1])) == row[0]

    wait_for("git's version of Tool/ledger back in the store", restored, explain=served.explain)


def test_resync_writes_gits_version_back_over_drift(tmp_path: Path, origin: Origin) -> None:
    first = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare, "--resync-interval", "300ms") as served:
        served.wait_applied(first)
        digest, body = served.store.inventory()[TOOL_KEY]
        assert digest_of(json.loads(body)) == digest

        tamper(served, "edited in the database")
        wait_restored(served, digest)
        assert json.loads(served.store.inventory()[TOOL_KEY][1]) == json.loads(body)
        assert results(served, first) == ["applied", "applied"]  # the correction is an apply of the same revision
        correction = served.store.history()[0]
        assert correction["summary"]["update"] == 1 and correction["summary"]["create"] == 0
        assert "drift: 1 objects changed outside git" in served.log()
        served.wait_condition("Ready", "Applied")


def test_drift_that_keeps_coming_back_is_held_after_five_corrections(tmp_path: Path, origin: Origin) -> None:
    first = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare, "--resync-interval", "200ms") as served:
        served.wait_applied(first)
        digest, _ = served.store.inventory()[TOOL_KEY]
        for attempt in range(1, 5):
            tamper(served, f"edit {attempt}")
            wait_restored(served, digest)

        tamper(served, "edit 5")
        held = served.wait_condition("Stalled", "DriftLoop")
        assert "not correcting Tool/ledger" in held["message"] and held["lastAppliedRevision"] == first
        stored = json.loads(served.store.inventory()[TOOL_KEY][1])
        assert stored["spec"]["description"] == "edit 5"  # the fifth drift is left alone
        assert results(served, first) == ["applied"] * 5  # the first apply and four corrections
        assert served.running


# -- 10. remote URL ----------------------------------------------------------------------------------------


def test_remote_url_is_mirrored_and_polled(tmp_path: Path, origin: Origin) -> None:
    first = origin.commit("base")
    origin.push()
    state = tmp_path / "state"
    with Served(tmp_path, origin.url, "--poll-interval", "200ms", state_dir=state) as served:
        served.wait_applied(first)
        pushed = deploy(origin, "polled")
        served.wait_applied(pushed)
        served.wait_condition("Ready", "Applied", revision_seen=pushed)
        source = served.store.source_status()
    assert source is not None and source["repo"] == origin.url
    assert git(state / "mirror.git", "rev-parse", "refs/heads/main") == pushed  # read from its own mirror


# -- SIGHUP ------------------------------------------------------------------------------------------------


def test_sighup_reloads_and_keeps_serving(tmp_path: Path, origin: Origin) -> None:
    first = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare) as served:
        served.wait_applied(first)
        assert served.process is not None
        served.process.send_signal(signal.SIGHUP)
        log = served.wait_log("reloading settings")
        served.wait_log(f"{first[:12]} is applied; nothing to change")  # a reconcile after the reload
        assert served.running and "stopped" not in log
        pushed = deploy(origin, "after reload")
        served.wait_applied(pushed)


# -- 11. bad input ------------------------------------------------------------------------------------------


def serve_once(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`orlojd serve` expected to give up at once (bad input): its exit code and output."""
    return subprocess.run(
        [ORLOJD, "serve", "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


MISSING_REPO = "<no such repository>"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--verify", "sometimes"], "--verify 'sometimes': use off, head or all", id="unknown-verify"),
        pytest.param(["--verify", "head"], "--verify head needs --allowed-signers FILE", id="verify-without-signers"),
        pytest.param(["--listen", "localhost"], "--listen 'localhost': use HOST:PORT", id="listen-without-port"),
        pytest.param(["--listen", "127.0.0.1:70000"], "--listen '127.0.0.1:70000': use HOST:PORT", id="listen-port"),
        pytest.param(["--repo", MISSING_REPO], "no-such-repo.git does not exist", id="nonexistent-repo"),
    ],
)
def test_bad_serve_input_is_an_error_without_a_traceback(
    tmp_path: Path, origin: Origin, args: list[str], expected: str
) -> None:
    origin.commit("base")
    origin.push()
    missing = str(tmp_path / "no-such-repo.git")
    args = [missing if a == MISSING_REPO else a for a in args]
    repo = [] if "--repo" in args else ["--repo", str(origin.bare)]
    done = serve_once(tmp_path, *repo, *args)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr


def test_a_busy_listen_port_is_an_error_without_a_traceback(tmp_path: Path, origin: Origin) -> None:
    origin.commit("base")
    origin.push()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = serve_once(tmp_path, "--repo", str(origin.bare), "--listen", f"127.0.0.1:{port}")
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert any(line.startswith("error: ") and "in use" in line for line in done.stderr.splitlines()), done.stderr
    assert "internal error" not in done.stderr  # a user's mistake, said as one, with a next step
    assert "choose a free --listen" in done.stderr


# -- transient git errors -------------------------------------------------------------------------------------


def hide_object(origin: Origin, oid: str) -> tuple[Path, Path]:
    """Move a loose object out of the bare repository; (where it was, where it is now)."""
    loose = origin.bare / "objects" / oid[:2] / oid[2:]
    assert loose.is_file(), f"{oid} is not a loose object in {origin.bare}"
    hidden = origin.bare.parent / f"hidden-{oid}"
    loose.rename(hidden)
    return loose, hidden


def stage_with_missing_object(origin: Origin, description: str, which: str) -> tuple[str, Path, Path]:
    """Commit, push the objects to another branch, hide one object, then point main at the commit."""
    head = change(origin, description)
    git(origin.work, "push", "--quiet", "origin", "main:staging")  # objects arrive loose (below unpackLimit)
    oid = git(origin.work, "rev-parse", which)
    loose, hidden = hide_object(origin, oid)
    git(origin.bare, "update-ref", "refs/heads/main", head)
    return head, loose, hidden


def test_transient_git_error_is_retried_with_backoff(tmp_path: Path, origin: Origin) -> None:
    """A root tree missing for a moment: the pass fails, and the retry after the 1 s backoff (not the
    hour-long resync, and no push) applies the commit once the object is back (fixed in 07b5af1)."""
    first = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare, "--resync-interval", "1h") as served:
        served.wait_applied(first)
        head, loose, hidden = stage_with_missing_object(origin, "tree missing for a moment", "HEAD^{tree}")
        waiting = served.wait_condition("Reconciling", "TransientError")
        assert "retrying in 1s" in waiting["message"]
        assert served.store.applied_revision() == first
        hidden.rename(loose)  # the repository is whole again; nothing else changes
        served.wait_applied(head, deadline=20)
        served.wait_condition("Ready", "Applied", revision_seen=head)


def test_a_missing_blob_is_a_transient_error_not_a_crash(tmp_path: Path, origin: Origin) -> None:
    """`git ls-tree -l` prints 'BAD' as the size of a missing blob; that used to escape as a
    ValueError and end the daemon (exit 1, internal error) (fixed in 07b5af1)."""
    first = origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare) as served:
        served.wait_applied(first)
        head, loose, hidden = stage_with_missing_object(origin, "blob missing", "HEAD:tools/ledger.yaml")
        waiting = served.wait_condition("Reconciling", "TransientError")
        assert "is missing from" in waiting["message"]
        assert served.running and served.store.applied_revision() == first
        hidden.rename(loose)
        served.wait_applied(head)
