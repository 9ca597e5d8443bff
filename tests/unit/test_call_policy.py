"""core/call_policy: who may approve, how many, signed, timeout and onDeny from the selecting
Policies (only ever tighter), the call digest an approval binds, and the redacted preview."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orlojd.core.call_policy import REDACTED, CallPolicy, call_digest, call_policy, redacted_preview
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.policies import Policy
from orlojd.core.manifests.registry import validate_object

AGENT: dict[str, Any] = {
    "apiVersion": "orloj.dev/v1",
    "kind": "Agent",
    "metadata": {"name": "clerk", "labels": {"team": "risk"}},
    "spec": {"model": "gpt-4", "tools": [{"name": "ledger", "permissions": [{"write": "ledger"}]}]},
}


def agent() -> Agent:
    obj = validate_object(AGENT).obj
    assert isinstance(obj, Agent)
    return obj


def policy(name: str, **spec: Any) -> Policy:
    body = {"apiVersion": "orloj.dev/v1", "kind": "Policy", "metadata": {"name": name}, "spec": spec}
    obj = validate_object(body).obj
    assert isinstance(obj, Policy), name
    return obj


def test_no_policy_means_anyone_but_the_requester_once_within_an_hour_and_a_denial_fails_the_run() -> None:
    assert call_policy(agent(), []) == CallPolicy()
    assert CallPolicy().may_approve("bob@example.com", "alice@example.com") is None
    refusal = CallPolicy().may_approve("Alice@Example.com ", "alice@example.com")
    assert refusal is not None and "nobody approves their own request" in refusal


def test_policies_fold_to_the_strictest_rules() -> None:
    folded = call_policy(
        agent(),
        [
            policy("a", approval={"approvers": ["alice", "bob", "carol"], "required": 1, "timeout": "2h"}),
            policy(
                "b", approval={"approvers": ["bob", "carol", "dave"], "required": 2, "signed": True, "timeout": "15m"}
            ),
            policy("c", selector={"namespaces": ["elsewhere"]}, approval={"approvers": ["zed"], "required": 5}),
        ],
    )
    assert folded.approvers == frozenset({"bob", "carol"})
    assert (folded.required, folded.signed, folded.timeout) == (2, True, timedelta(minutes=15))
    refusal = folded.may_approve("alice", "dave")
    assert refusal is not None and "not an approver" in refusal and "bob, carol" in refusal


def test_return_to_model_only_when_every_selecting_policy_says_so() -> None:
    assert call_policy(agent(), [policy("a", onDeny="return_to_model")]).on_deny == "return_to_model"
    assert call_policy(agent(), [policy("a", onDeny="return_to_model"), policy("b")]).on_deny == "fail_run"
    mixed = [policy("a", onDeny="return_to_model"), policy("b", onDeny="fail_run")]
    assert call_policy(agent(), mixed).on_deny == "fail_run"


policies = st.lists(
    st.builds(
        lambda i, approvers, required, signed, minutes, on_deny: policy(
            f"p{i}",
            approval={"approvers": approvers, "required": required, "signed": signed, "timeout": f"{minutes}m"},
            **({} if on_deny is None else {"onDeny": on_deny}),
        ),
        st.integers(0, 10_000),
        st.lists(st.sampled_from(["alice", "bob", "carol", "dave"]), max_size=3, unique=True),
        st.integers(1, 5),
        st.booleans(),
        st.integers(1, 600),
        st.sampled_from([None, "fail_run", "return_to_model"]),
    ),
    max_size=4,
)


@given(policies, policies)
def test_adding_policies_never_loosens_who_may_approve_or_how(base: list[Policy], more: list[Policy]) -> None:
    before, after = call_policy(agent(), base), call_policy(agent(), base + more)
    assert before.approvers is None or (after.approvers is not None and after.approvers <= before.approvers)
    assert after.required >= before.required
    assert after.signed or not before.signed
    # The expiry and onDeny are the Policies' to set (default 1h, fail_run with none); once set, more only tighten.
    assert after.timeout <= before.timeout or not base
    assert after.on_deny == "fail_run" or before.on_deny == "return_to_model" or not base
    assert after.on_deny == "fail_run" or all(p.spec.on_deny == "return_to_model" for p in base + more)


def test_the_digest_binds_agent_tool_and_every_argument_but_not_key_order() -> None:
    one = call_digest("Agent/default/clerk", "ledger", {"amount": 10, "to": "acme"})
    assert one == call_digest("Agent/default/clerk", "ledger", {"to": "acme", "amount": 10})
    assert one.startswith("sha256:") and len(one) == 71
    others = {
        call_digest("Agent/default/clerk", "ledger", {"amount": 11, "to": "acme"}),
        call_digest("Agent/default/other", "ledger", {"amount": 10, "to": "acme"}),
        call_digest("Agent/default/clerk", "mail", {"amount": 10, "to": "acme"}),
    }
    assert one not in others and len(others) == 3


def test_the_preview_hides_secrets_and_cuts_long_values() -> None:
    preview = redacted_preview(
        {"to": "acme", "api_key": "sk-1", "nested": {"Password": "p", "ok": [1, 2]}, "body": "x" * 500}
    )
    assert "sk-1" not in preview and '"p"' not in preview and preview.count(REDACTED) == 2
    assert '"to":"acme"' in preview and "(+300 chars)" in preview
    assert len(redacted_preview({f"k{i}": "y" * 190 for i in range(100)})) <= 4096
