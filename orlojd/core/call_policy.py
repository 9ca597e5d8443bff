"""What happens around a gated call: who may approve it, how many must, and what a denial does.

Pure. ``call_policy`` folds the Policies that select an agent into one ``CallPolicy``; Policies
only tighten, so:

* ``approvers``: a person must be listed by every Policy that names approvers (the lists
  intersect); no Policy naming any means anyone may approve (but never the requester);
* ``required``: the largest count; ``signed``: if any Policy asks for signatures;
* ``timeout``: the shortest (default 1h, Policy ``approval.timeout``);
* ``on_deny``: ``return_to_model`` only when every selecting Policy says so (``onDeny``
  defaults to ``fail_run``, and so does an agent no Policy selects);
* ``audit``: off only when the agent and every selecting Policy turn ``auditLog`` off.

``call_digest`` binds an approval to the exact call: sha256 over the agent, the tool and the
canonical JSON of the arguments. ``redacted_preview`` is what approvers see: the arguments with
values under secret-looking keys replaced and long strings cut.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from orlojd.core.digest import canonical_json, normalised
from orlojd.core.durations import parse_ms
from orlojd.core.effective import policy_selects
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.policies import Policy

OnDeny = Literal["fail_run", "return_to_model"]
DEFAULT_TIMEOUT = timedelta(hours=1)
PREVIEW_STRING = 200  # characters of a string value shown to approvers
PREVIEW_BYTES = 4096  # the whole preview, at most
SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authori[sz]ation|credential|private[_-]?key)", re.I)
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class CallPolicy:
    approvers: frozenset[str] | None = None  # None: anyone but the requester
    required: int = 1
    signed: bool = False
    timeout: timedelta = DEFAULT_TIMEOUT
    on_deny: OnDeny = "fail_run"
    audit: bool = True

    def may_approve(self, person: str, requester: str) -> str | None:
        """None if ``person`` may vote on a request by ``requester``; else why not."""
        if person.strip().lower() == requester.strip().lower():
            return f"{person} made this request; nobody approves their own request"
        if self.approvers is not None and person not in self.approvers:
            listed = ", ".join(sorted(self.approvers)) or "nobody"
            return f"{person} is not an approver here (approvers: {listed})"
        return None


def call_policy(agent: Agent, policies: Iterable[Policy]) -> CallPolicy:
    """The CallPolicy of ``agent`` under the Policies that select it."""
    body = normalised(agent)
    chosen = [p for p in policies if policy_selects(normalised(p), body)]
    approvers: frozenset[str] | None = None
    for policy in chosen:
        named = policy.spec.approval.approvers
        if named:
            approvers = frozenset(named) if approvers is None else approvers & frozenset(named)
    timeouts = [timedelta(milliseconds=parse_ms(p.spec.approval.timeout)) for p in chosen]
    return CallPolicy(
        approvers=approvers,
        required=max((p.spec.approval.required for p in chosen), default=1),
        signed=any(p.spec.approval.signed for p in chosen),
        timeout=min(timeouts, default=DEFAULT_TIMEOUT),
        on_deny="return_to_model"
        if chosen and all(p.spec.on_deny == "return_to_model" for p in chosen)
        else "fail_run",
        audit=agent.spec.governance.audit_log or any(p.spec.audit_log for p in chosen),
    )


def _on_deny(chosen: list[Policy]) -> OnDeny:
    return "return_to_model" if chosen and all(p.spec.on_deny == "return_to_model" for p in chosen) else "fail_run"


def call_digest(agent: str, tool: str, arguments: Mapping[str, Any]) -> str:
    """'sha256:<hex>' of the exact call: what an approval is bound to."""
    data = canonical_json({"agent": agent, "tool": tool, "arguments": dict(arguments)})
    return "sha256:" + hashlib.sha256(data).hexdigest()


def redacted_preview(arguments: Mapping[str, Any]) -> str:
    """The arguments as approvers see them: secrets hidden, long values cut, at most PREVIEW_BYTES."""
    text = canonical_json(_redact(dict(arguments))).decode()
    return text if len(text) <= PREVIEW_BYTES else text[: PREVIEW_BYTES - 14] + "...(truncated)"


def _redact(value: Any, key: str = "") -> Any:
    if key and SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, str) and len(value) > PREVIEW_STRING:
        return value[:PREVIEW_STRING] + f"...(+{len(value) - PREVIEW_STRING} chars)"
    return value
