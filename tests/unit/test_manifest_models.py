"""Manifest models on good and bad input: every kind, both dialects, did-you-mean, warnings.

Documents go through ``validate_object`` (one parsed document) or ``build_desired``
(file bytes, so findings carry file, line and field). Digests come from
``orlojd.core.digest.digest``: the same object in Orloj's snake_case spelling and in
the canonical camelCase spelling must digest alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml

from orlojd.core.desired import Desired, build_desired
from orlojd.core.diagnostics import Severity
from orlojd.core.digest import digest, normalised
from orlojd.core.documents import parse_file
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import Access, Permission, ResourceKind
from orlojd.core.manifests.registry import Validated, validate_object
from orlojd.core.manifests.systems import AgentSystem
from orlojd.core.manifests.tasks import Task, TaskSchedule
from orlojd.core.manifests.tools import ModelEndpoint, Secret, Tool


def check(text: str) -> Validated:
    """Validate one YAML document given as text, read by orlojd's own YAML loader."""
    documents, found = parse_file("m.yaml", text.encode())
    assert found == [] and len(documents) == 1, found
    return validate_object(documents[0].data)


def valid(text: str) -> ResourceKind:
    """The model of a document that must validate without errors."""
    result = check(text)
    errors = [p for p in result.problems if p.severity is Severity.ERROR]
    assert result.obj is not None and not errors, result.problems
    return result.obj


def messages(result: Validated, severity: Severity = Severity.ERROR) -> list[str]:
    return [p.message for p in result.problems if p.severity is severity]


def errors_at(result: Validated) -> dict[tuple[str | int, ...], str]:
    assert result.obj is None, "expected the document to be invalid"
    return {p.path: p.message for p in result.problems if p.severity is Severity.ERROR}


def desired_of(text: str, name: str = "m.yaml") -> Desired:
    return build_desired([(name, text.encode())], resolve=False)


def manifest(kind: str, spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {"apiVersion": "orloj.dev/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


ANNOUNCEMENT_AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: compliance-checker
  labels:
    team: risk
spec:
  model: gpt-4
  prompt: |
    You check documents for compliance issues.
  tools:
    - name: scan-documents
      permissions:
        - read: compliance_docs
    - name: flag-issues
      permissions:
        - write: issue_tracker
  governance:
    maxTokensPerMinute: 8000
    requireApproval:
      - write: issue_tracker
    auditLog: true
"""


# -- Agent ------------------------------------------------------------------------------------


def test_announcement_agent_loads_every_field() -> None:
    result = check(ANNOUNCEMENT_AGENT)
    assert result.problems == ()
    agent = result.obj
    assert isinstance(agent, Agent)
    assert (agent.kind, agent.name, agent.namespace) == ("Agent", "compliance-checker", "default")
    assert agent.metadata.labels == {"team": "risk"}
    assert agent.spec.model == "gpt-4"
    assert agent.spec.model_ref is None
    assert [t.name for t in agent.spec.tools] == ["scan-documents", "flag-issues"]
    assert agent.spec.tools[0].permissions == [Permission(access=Access.READ, resource="compliance_docs")]
    assert agent.spec.tools[1].permissions == [Permission(access=Access.WRITE, resource="issue_tracker")]
    assert agent.spec.governance.max_tokens_per_minute == 8000
    assert agent.spec.governance.require_approval == [Permission(access=Access.WRITE, resource="issue_tracker")]
    assert agent.spec.governance.audit_log is True


def test_announcement_agent_normalises_to_canonical_camel_case() -> None:
    body = normalised(valid(ANNOUNCEMENT_AGENT))
    assert body["apiVersion"] == "orloj.dev/v1"
    spec = body["spec"]
    assert spec["tools"][0] == {"name": "scan-documents", "permissions": [{"read": "compliance_docs"}]}
    assert spec["governance"]["maxTokensPerMinute"] == 8000
    assert spec["governance"]["requireApproval"] == [{"write": "issue_tracker"}]
    # defaults are filled in, so a default written out never shows as a change
    assert spec["retry"] == {
        "maxAttempts": 3,
        "backoff": {"initial": "1s", "max": "5m", "multiplier": 2.0},
        "jitter": "full",
    }


@pytest.mark.parametrize(
    "permission",
    [
        "{read: compliance_docs}",
        "'read: compliance_docs'",
        "'read:compliance_docs'",
        "{access: read, resource: compliance_docs}",
    ],
)
def test_permission_spellings_are_one_model(permission: str) -> None:
    text = ANNOUNCEMENT_AGENT.replace("- read: compliance_docs", f"- {permission}")
    assert text != ANNOUNCEMENT_AGENT
    assert digest(valid(text)) == digest(valid(ANNOUNCEMENT_AGENT))


def test_unknown_access_word_is_an_error_listing_the_access_words() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("- read: compliance_docs", "- execute: compliance_docs"))
    message = errors_at(result)[("spec", "tools", 0, "permissions", 0)]
    assert "'execute'" in message
    assert all(word in message for word in ("read", "write", "delete", "admin"))


def test_permission_with_two_keys_is_an_error() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("- read: compliance_docs", "- {read: a, write: b}"))
    assert "one-key map" in errors_at(result)[("spec", "tools", 0, "permissions", 0)]


def test_agent_without_model_or_model_ref_is_an_error() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("  model: gpt-4\n", ""))
    message = errors_at(result)[("spec",)]
    assert "'model'" in message and "'modelRef'" in message


def test_agent_listing_a_tool_twice_is_an_error() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("name: flag-issues", "name: scan-documents"))
    assert "'scan-documents' is listed twice" in errors_at(result)[("spec",)]


def test_agent_governance_rejects_non_positive_budget() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("maxTokensPerMinute: 8000", "maxTokensPerMinute: 0"))
    assert ("spec", "governance", "maxTokensPerMinute") in errors_at(result)


def test_bad_object_name_is_an_error() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("name: compliance-checker", "name: 'not a name!'"))
    assert ("metadata", "name") in errors_at(result)


# -- Tool, ModelEndpoint ----------------------------------------------------------------------

TOOL = """\
apiVersion: orloj.dev/v1
kind: Tool
metadata: {name: flag-issues}
spec:
  type: builtin
  description: Open an issue in the tracker.
  riskLevel: medium
  requires:
    - write: issue_tracker
    - read: compliance_docs
"""


def test_tool_requires_loads_as_access_resource_pairs() -> None:
    tool = valid(TOOL)
    assert isinstance(tool, Tool)
    assert tool.spec.requires == [
        Permission(access=Access.WRITE, resource="issue_tracker"),
        Permission(access=Access.READ, resource="compliance_docs"),
    ]
    assert tool.spec.risk_level == "medium"
    assert normalised(tool)["spec"]["requires"] == [{"write": "issue_tracker"}, {"read": "compliance_docs"}]


def test_tool_unknown_type_is_an_error_listing_the_types() -> None:
    message = errors_at(check(TOOL.replace("type: builtin", "type: telepathy")))[("spec", "type")]
    assert "http" in message and "builtin" in message


def test_mcp_tool_needs_server_and_tool_name() -> None:
    message = errors_at(check(TOOL.replace("type: builtin", "type: mcp")))[("spec",)]
    assert "mcpServerRef" in message and "mcpToolName" in message


MODEL_ENDPOINT = """\
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata: {name: openai}
spec:
  provider: OpenAI
  defaultModel: gpt-4o
  auth:
    secretRef: openai-api-key
"""


def test_model_endpoint_loads_and_lower_cases_the_provider() -> None:
    endpoint = valid(MODEL_ENDPOINT)
    assert isinstance(endpoint, ModelEndpoint)
    assert endpoint.spec.provider == "openai"
    assert endpoint.spec.default_model == "gpt-4o"
    assert endpoint.spec.auth is not None and endpoint.spec.auth.secret_ref == "openai-api-key"


def test_model_endpoint_without_default_model_is_an_error() -> None:
    result = check(MODEL_ENDPOINT.replace("  defaultModel: gpt-4o\n", ""))
    assert errors_at(result)[("spec", "defaultModel")] == "required field 'defaultModel' is missing"


def test_openai_compatible_endpoint_needs_base_url() -> None:
    result = check(MODEL_ENDPOINT.replace("provider: OpenAI", "provider: openai-compatible"))
    assert "baseUrl" in errors_at(result)[("spec",)]
    fixed = MODEL_ENDPOINT.replace("provider: OpenAI", "provider: openai-compatible\n  baseUrl: http://127.0.0.1:8000")
    assert valid(fixed)


# -- Secret -----------------------------------------------------------------------------------

SECRET_VALUE = "hunter2-Zq8XbP7wLd"


def secret(spec: str) -> str:
    return f"apiVersion: orloj.dev/v1\nkind: Secret\nmetadata: {{name: api-key}}\nspec:\n{spec}"


@pytest.mark.parametrize(
    "source", ["  env: OPENAI_API_KEY\n", "  file: /run/secrets/openai\n", "  systemdCredential: openai-key\n"]
)
def test_secret_reference_sources_are_valid_without_warnings(source: str) -> None:
    result = check(secret(source))
    assert isinstance(result.obj, Secret)
    assert result.problems == ()
    assert not result.obj.spec.is_literal


@pytest.mark.parametrize(
    "spec",
    [
        "  {}\n",
        "  env: OPENAI_API_KEY\n  file: /run/secrets/openai\n",
        "  systemdCredential: k\n  env: OPENAI_API_KEY\n",
    ],
    ids=["none", "env+file", "credential+env"],
)
def test_secret_needs_exactly_one_source(spec: str) -> None:
    message = errors_at(check(secret(spec)))[("spec",)]
    assert "exactly one of env, file, systemdCredential" in message


def test_secret_env_must_be_a_variable_name() -> None:
    assert ("spec", "env") in errors_at(check(secret("  env: not-a-variable\n")))


LITERAL_SECRET = secret(f"  stringData:\n    value: {SECRET_VALUE}\n")


def test_literal_secret_is_valid_with_a_warning_on_string_data() -> None:
    result = check(LITERAL_SECRET)
    assert isinstance(result.obj, Secret) and result.obj.spec.is_literal
    assert messages(result) == []
    [warning] = [p for p in result.problems if p.severity is Severity.WARNING]
    assert warning.path == ("spec", "stringData")
    assert "literal secret value" in warning.message


def test_literal_secret_value_enters_digest_and_dump_only_as_sha256() -> None:
    obj = valid(LITERAL_SECRET)
    fingerprint = "sha256:" + hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    body = normalised(obj)
    assert body["spec"]["stringData"] == {"value": fingerprint}
    for dump in (
        json.dumps(body),
        obj.model_dump_json(),
        obj.model_dump_json(by_alias=True),
        repr(obj),
        str(obj),
        json.dumps(obj.model_dump(mode="json")),
    ):
        assert SECRET_VALUE not in dump
    # a changed value must still change the digest, through its fingerprint
    changed = valid(LITERAL_SECRET.replace(SECRET_VALUE, SECRET_VALUE + "x"))
    assert digest(changed) != digest(obj)


@pytest.mark.parametrize(
    "text",
    [
        LITERAL_SECRET,
        LITERAL_SECRET + "  env: OPENAI_API_KEY\n",
        LITERAL_SECRET + "  envv: OPENAI_API_KEY\n",
        LITERAL_SECRET + f"    other: [{SECRET_VALUE}]\n",
        LITERAL_SECRET + f"    value: {SECRET_VALUE}\n",
        LITERAL_SECRET.replace("name: api-key", "name: 'bad name'"),
        LITERAL_SECRET.replace("kind: Secret", "kind: Secrett"),
    ],
    ids=["valid", "two-sources", "unknown-field", "wrong-type", "duplicate-key", "bad-name", "bad-kind"],
)
def test_literal_secret_value_never_appears_in_any_diagnostic(text: str) -> None:
    desired = desired_of(text, "secret.yaml")
    assert desired.diagnostics, "each variant yields at least the literal-value warning or an error"
    for diagnostic in desired.diagnostics:
        assert SECRET_VALUE not in diagnostic.format()
        assert SECRET_VALUE not in json.dumps(diagnostic.as_json())
    for loaded in desired.objects.values():
        assert SECRET_VALUE not in json.dumps(loaded.body)
        assert SECRET_VALUE not in loaded.digest


# -- Policy -----------------------------------------------------------------------------------

POLICY = """\
apiVersion: orloj.dev/v1
kind: Policy
metadata: {name: baseline}
spec:
  selector:
    namespaces: [default]
    matchLabels: {team: risk}
  allow:
    - read: compliance_docs
    - write: issue_tracker
  deny:
    - delete: issue_tracker
  blockedTools: [shell]
  budgets:
    maxTokensPerRun: 50000
    softThreshold: 0.9
  onDeny: fail_run
"""


def test_policy_loads() -> None:
    policy = valid(POLICY)
    spec = normalised(policy)["spec"]
    assert spec["allow"] == [{"read": "compliance_docs"}, {"write": "issue_tracker"}]
    assert spec["deny"] == [{"delete": "issue_tracker"}]
    assert spec["selector"] == {"namespaces": ["default"], "agents": [], "matchLabels": {"team": "risk"}}
    assert spec["budgets"]["maxTokensPerRun"] == 50000
    assert spec["blockedTools"] == ["shell"]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("softThreshold: 0.9", "softThreshold: 1.5", ("spec", "budgets", "softThreshold")),
        ("onDeny: fail_run", "onDeny: shrug", ("spec", "onDeny")),
        ("- delete: issue_tracker", "- destroy: issue_tracker", ("spec", "deny", 0)),
        ("maxTokensPerRun: 50000", "maxTokensPerRun: many", ("spec", "budgets", "maxTokensPerRun")),
    ],
)
def test_policy_bad_values_are_errors_at_their_field(old: str, new: str, path: tuple[str | int, ...]) -> None:
    assert path in errors_at(check(POLICY.replace(old, new)))


# -- AgentSystem ------------------------------------------------------------------------------

SYSTEM = """\
apiVersion: orloj.dev/v1
kind: AgentSystem
metadata: {name: report-pipeline}
spec:
  agents: [planner, researcher, writer]
  graph:
    planner: {next: researcher}
    researcher: {edges: [{to: writer}]}
"""


def test_agent_system_graph_loads() -> None:
    system = valid(SYSTEM)
    assert isinstance(system, AgentSystem)
    assert system.spec.graph["planner"].targets() == ["researcher"]
    assert system.spec.graph["researcher"].targets() == ["writer"]


def test_agent_system_graph_node_not_in_agents_is_an_error() -> None:
    result = check(SYSTEM.replace("    researcher: {edges", "    reviewer: {edges"))
    message = errors_at(result)[("spec",)]
    assert "'reviewer'" in message and "agents" in message


def test_agent_system_graph_edge_outside_agents_is_an_error() -> None:
    result = check(SYSTEM.replace("{to: writer}", "{to: editor}"))
    assert "'editor'" in errors_at(result)[("spec",)]


def test_agent_system_needs_agents() -> None:
    assert ("spec", "agents") in errors_at(check(SYSTEM.replace("[planner, researcher, writer]", "[]")))


# -- Task, TaskSchedule -----------------------------------------------------------------------

TASK = """\
apiVersion: orloj.dev/v1
kind: Task
metadata: {name: check-q3}
spec:
  agent: compliance-checker
  input: {folder: reports/2026-q3}
  priority: 2
"""


def test_task_with_an_agent_loads() -> None:
    task = valid(TASK)
    assert isinstance(task, Task)
    assert (task.spec.agent, task.spec.system, task.spec.priority) == ("compliance-checker", None, 2)


def test_task_with_a_system_loads() -> None:
    task = valid(TASK.replace("agent: compliance-checker", "system: report-pipeline"))
    assert isinstance(task, Task) and task.spec.system == "report-pipeline" and task.spec.agent is None


@pytest.mark.parametrize(
    "target",
    ["  agent: a\n  system: s\n", ""],
    ids=["both", "neither"],
)
def test_task_names_exactly_one_of_agent_or_system(target: str) -> None:
    text = TASK.replace("  agent: compliance-checker\n", target)
    assert "exactly one of 'agent' or 'system'" in errors_at(check(text))[("spec",)]


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("high", 2),
        ("High", 2),
        ("critical", 1),
        ("urgent", 1),
        ("normal", 3),
        ("low", 4),
        ("background", 5),
        ("'4'", 4),
        ("5", 5),
    ],
)
def test_task_priority_words_map_to_numbers(written: str, number: int) -> None:
    task = valid(TASK.replace("priority: 2", f"priority: {written}"))
    assert isinstance(task, Task) and task.spec.priority == number


@pytest.mark.parametrize("written", ["whenever", "0", "6", "[1]"])
def test_task_bad_priority_is_an_error(written: str) -> None:
    assert ("spec", "priority") in errors_at(check(TASK.replace("priority: 2", f"priority: {written}")))


SCHEDULE = """\
apiVersion: orloj.dev/v1
kind: TaskSchedule
metadata: {name: nightly}
spec:
  taskRef: nightly-scan
  schedule: "0 2 * * *"
  timeZone: Europe/Prague
"""


def test_task_schedule_loads_with_defaults() -> None:
    schedule = valid(SCHEDULE)
    assert isinstance(schedule, TaskSchedule)
    assert schedule.spec.schedule == "0 2 * * *"
    assert schedule.spec.time_zone == "Europe/Prague"
    assert schedule.spec.concurrency_policy == "forbid"


def test_task_schedule_bad_cron_is_an_error_naming_field_and_line() -> None:
    desired = desired_of(SCHEDULE.replace('"0 2 * * *"', '"61 2 * * *"'))
    [error] = desired.errors
    assert (error.kind, error.name, error.field) == ("TaskSchedule", "nightly", "spec.schedule")
    assert error.message.startswith("minute:") and "61" in error.message
    assert (error.line, error.column) == (6, 3)


def test_task_schedule_bad_time_zone_is_an_error_naming_field_and_line() -> None:
    desired = desired_of(SCHEDULE.replace("Europe/Prague", "Mars/Olympus_Mons"))
    [error] = desired.errors
    assert error.field == "spec.timeZone"
    assert "'Mars/Olympus_Mons'" in error.message and "time zone" in error.message
    assert (error.line, error.column) == (7, 3)


def test_task_schedule_error_in_snake_case_points_at_the_snake_case_key() -> None:
    text = SCHEDULE.replace("taskRef", "task_ref").replace("timeZone: Europe/Prague", "time_zone: Nowhere/City")
    [error] = desired_of(text).errors
    assert error.field == "spec.timeZone"
    assert (error.line, error.column) == (7, 3)


# -- retry policy -----------------------------------------------------------------------------

ORLOJ_RETRY_TASK = """\
apiVersion: orloj.dev/v1
kind: Task
metadata: {name: weekly}
spec:
  agent: writer
  retry:
    max_attempts: 2
    backoff: 2s
"""


def test_orloj_retry_backoff_string_loads_as_backoff_initial() -> None:
    task = valid(ORLOJ_RETRY_TASK)
    assert isinstance(task, Task) and task.spec.retry is not None
    assert task.spec.retry.max_attempts == 2
    assert task.spec.retry.backoff.initial == "2s"
    assert (task.spec.retry.backoff.max, task.spec.retry.backoff.multiplier) == ("5m", 2.0)
    canonical = ORLOJ_RETRY_TASK.replace(
        "max_attempts: 2\n    backoff: 2s", "maxAttempts: 2\n    backoff:\n      initial: 2000ms"
    )
    assert digest(valid(canonical)) == digest(task)


def test_retry_attempts_are_capped() -> None:
    assert ("spec", "retry", "maxAttempts") in errors_at(
        check(ORLOJ_RETRY_TASK.replace("max_attempts: 2", "max_attempts: 1000"))
    )


# -- two dialects, one digest -----------------------------------------------------------------

DIALECT_PAIRS: dict[str, tuple[str, str]] = {
    "Agent": (
        """
kind: Agent
metadata: {name: researcher, namespace: team-a, labels: {cost_center: r_and_d}}
spec:
  model_ref: openai-default
  prompt: Research the topic.
  tools: [web_search, vector_db]
  allowed_tools: [web_search]
  limits: {max_steps: 6, timeout: 60s}
  retry: {max_attempts: 2, backoff: 2s}
""",
        """
apiVersion: orloj.dev/v1
kind: Agent
metadata: {name: researcher, namespace: team-a, labels: {cost_center: r_and_d}}
spec:
  modelRef: openai-default
  prompt: Research the topic.
  tools: [{name: web_search}, {name: vector_db, permissions: []}]
  allowedTools: [web_search]
  limits: {maxSteps: 6, timeout: 1m}
  retry: {maxAttempts: 2, backoff: {initial: 2s}}
""",
    ),
    "Tool": (
        """
kind: Tool
metadata: {name: web_search}
spec:
  type: http
  endpoint: https://search.example/api
  operation_classes: [read]
  risk_level: high
  runtime: {timeout: 10s, retry: {max_attempts: 2, backoff: 1s, max_backoff: 5s, jitter: full}}
  auth: {profile: oauth2_client_credentials, secret_ref: search-key, tokenURL: https://id.example/t}
""",
        """
kind: Tool
metadata: {name: web_search}
spec:
  type: http
  endpoint: https://search.example/api
  operationClasses: [read]
  riskLevel: high
  runtime: {timeout: 10000ms, retry: {maxAttempts: 2, backoff: 1s, maxBackoff: 5s, jitter: full}}
  auth: {profile: oauth2_client_credentials, secretRef: search-key, tokenUrl: https://id.example/t}
""",
    ),
    "ModelEndpoint": (
        """
kind: ModelEndpoint
metadata: {name: claude}
spec:
  provider: anthropic
  base_url: https://api.anthropic.com/v1
  default_model: claude-sonnet-4
  options: {anthropic_version: "2023-06-01"}
  auth: {secret_ref: anthropic-key}
""",
        """
kind: modelendpoint
metadata: {name: claude}
spec:
  provider: Anthropic
  baseUrl: https://api.anthropic.com/v1
  defaultModel: claude-sonnet-4
  options: {anthropic_version: "2023-06-01"}
  auth: {secretRef: anthropic-key}
""",
    ),
    "Task": (
        """
kind: Task
metadata: {name: weekly}
spec:
  system: report-system
  priority: high
  max_turns: 4
  input: {topic: AI, due_date: 2026-01-01}
  retry: {max_attempts: 2, backoff: 2s}
  message_retry: {max_attempts: 3, backoff: 250ms, max_backoff: 2s, non_retryable: [bad_input]}
""",
        """
kind: Task
metadata: {name: weekly}
spec:
  system: report-system
  priority: 2
  maxTurns: 4
  input: {topic: AI, due_date: "2026-01-01"}
  retry: {maxAttempts: 2, backoff: {initial: 2s}}
  messageRetry: {maxAttempts: 3, backoff: 250ms, maxBackoff: 2s, nonRetryable: [bad_input]}
""",
    ),
    "TaskSchedule": (
        """
kind: TaskSchedule
metadata: {name: weekly}
spec:
  task_ref: weekly-template
  schedule: "0 9 * * MON"
  time_zone: America/Chicago
  starting_deadline_seconds: 60
  concurrency_policy: forbid
  successful_history_limit: 5
""",
        """
kind: TaskSchedule
metadata: {name: weekly}
spec:
  taskRef: weekly-template
  schedule: "0  9 * *  mon"
  timeZone: America/Chicago
  startingDeadlineSeconds: 60
  concurrencyPolicy: forbid
  successfulHistoryLimit: 5
""",
    ),
    "AgentSystem": (
        """
kind: AgentSystem
metadata: {name: fanout}
spec:
  agents: [lead, a, b]
  graph:
    lead: {edges: [{to: a}, {to: b}]}
    b: {join: {mode: quorum, quorum_count: 1, on_failure: skip}}
""",
        """
kind: AgentSystem
metadata: {name: fanout}
spec:
  agents: [lead, a, b]
  graph:
    lead: {edges: [{to: a}, {to: b}]}
    b: {join: {mode: quorum, quorumCount: 1, onFailure: skip}}
""",
    ),
    "Policy": (
        """
kind: Policy
metadata: {name: p}
spec:
  selector: {match_labels: {team_name: risk}}
  deny: [{delete: issue_tracker}]
  blocked_tools: [shell]
  budgets: {max_tokens_per_run: 5000, on_exceeded: wait}
  on_deny: return_to_model
""",
        """
kind: Policy
metadata: {name: p}
spec:
  selector: {matchLabels: {team_name: risk}}
  deny: ["delete: issue_tracker"]
  blockedTools: [shell]
  budgets: {maxTokensPerRun: 5000, onExceeded: wait}
  onDeny: return_to_model
""",
    ),
}


@pytest.mark.parametrize("kind", sorted(DIALECT_PAIRS))
def test_both_dialects_give_the_same_digest(kind: str) -> None:
    orloj, canonical = DIALECT_PAIRS[kind]
    assert "_" in orloj and orloj != canonical
    one, other = valid(orloj), valid(canonical)
    assert one.kind == other.kind == kind
    assert normalised(one) == normalised(other)
    assert digest(one) == digest(other)


def test_digest_changes_when_a_value_changes() -> None:
    orloj, _ = DIALECT_PAIRS["Agent"]
    base = valid(orloj)
    assert digest(valid(orloj.replace("Research the topic.", "Research the topic!"))) != digest(base)
    assert digest(valid(orloj.replace("max_steps: 6", "max_steps: 7"))) != digest(base)
    assert digest(valid(orloj.replace("namespace: team-a", "namespace: team-b"))) != digest(base)


def test_free_form_maps_keep_their_keys() -> None:
    task = valid(DIALECT_PAIRS["Task"][0])
    assert isinstance(task, Task)
    assert task.spec.input == {"topic": "AI", "due_date": "2026-01-01"}
    agent = valid(DIALECT_PAIRS["Agent"][0])
    assert agent.metadata.labels == {"cost_center": "r_and_d"}
    renamed = valid(DIALECT_PAIRS["Task"][0].replace("due_date", "dueDate"))
    assert digest(renamed) != digest(task)


def test_both_spellings_of_one_field_is_an_error_on_the_stray_one() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("  model: gpt-4\n", "  model_ref: a\n  modelRef: b\n"))
    assert ("spec", "model_ref") in errors_at(result)


# -- unknown fields, kinds, apiVersion --------------------------------------------------------


def test_unknown_field_suggests_the_close_field() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("model: gpt-4", "modelRf: openai"))
    assert errors_at(result) == {("spec", "modelRf"): "unknown field 'modelRf'; did you mean 'modelRef'?"}


def test_unknown_field_is_located_in_the_file() -> None:
    desired = desired_of(ANNOUNCEMENT_AGENT.replace("maxTokensPerMinute", "maxTokensPerMinit"), "agents/a.yaml")
    [error] = desired.errors
    assert (error.file, error.line, error.column) == ("agents/a.yaml", 19, 5)
    assert (error.kind, error.name, error.field) == ("Agent", "compliance-checker", "spec.governance.maxTokensPerMinit")
    assert "did you mean 'maxTokensPerMinute'?" in error.message
    assert not desired.objects


def test_unknown_metadata_field_suggests_name() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("  name: compliance-checker", "  nmae: compliance-checker"))
    found = errors_at(result)
    assert found[("metadata", "nmae")] == "unknown field 'nmae'; did you mean 'name'?"
    assert found[("metadata", "name")] == "required field 'name' is missing"


def test_unknown_field_never_suggests_its_own_name() -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("  model: gpt-4\n", "  model: gpt-4\n  labels: {a: b}\n"))
    message = errors_at(result)[("spec", "labels")]
    assert "did you mean 'labels'" not in message


@pytest.mark.parametrize(
    ("written", "suggested"),
    [("Agnet", "Agent"), ("ModelEndpiont", "ModelEndpoint"), ("taskschedul", "TaskSchedule"), ("Polcy", "Policy")],
)
def test_unknown_kind_suggests_a_close_kind(written: str, suggested: str) -> None:
    result = check(ANNOUNCEMENT_AGENT.replace("kind: Agent", f"kind: {written}"))
    assert errors_at(result) == {("kind",): f"unknown kind {written!r}; did you mean {suggested!r}?"}


def test_kind_matches_case_insensitively() -> None:
    assert valid(ANNOUNCEMENT_AGENT.replace("kind: Agent", "kind: agent")).kind == "Agent"


def test_unknown_kind_far_from_any_lists_the_kinds() -> None:
    message = errors_at(check(ANNOUNCEMENT_AGENT.replace("kind: Agent", "kind: Spaceship")))[("kind",)]
    assert "Agent" in message and "TaskSchedule" in message


def test_missing_kind_is_an_error() -> None:
    result = validate_object({"metadata": {"name": "x"}, "spec": {}})
    assert result.obj is None and "missing 'kind'" in messages(result)[0]


@pytest.mark.parametrize("version", ["orloj.dev/v2", "v1", "orloj.dev/v1beta1", None])
def test_wrong_api_version_is_an_error(version: str | None) -> None:
    document = yaml.safe_load(ANNOUNCEMENT_AGENT)
    document["apiVersion"] = version
    result = validate_object(document)
    assert errors_at(result) == {("apiVersion",): f"unsupported apiVersion {version!r}; use orloj.dev/v1"}


def test_missing_api_version_defaults_to_v1() -> None:
    text = ANNOUNCEMENT_AGENT.replace("apiVersion: orloj.dev/v1\n", "")
    assert digest(valid(text)) == digest(valid(ANNOUNCEMENT_AGENT))


@pytest.mark.parametrize("document", [[1, 2], "just text", 42, None])
def test_a_document_that_is_not_a_mapping_is_an_error(document: object) -> None:
    result = validate_object(document)
    assert result.obj is None and messages(result)[0].startswith("a manifest is a mapping")


# -- kept but not acted on: a warning, never dropped ------------------------------------------

INERT_CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "Agent.memory": (
        ANNOUNCEMENT_AGENT + "  memory:\n    ref: shared-memory\n    allow: [read, write]\n",
        ANNOUNCEMENT_AGENT,
        ("spec", "memory"),
    ),
    "Task.message_retry": (
        TASK + "  message_retry:\n    max_attempts: 2\n    backoff: 250ms\n",
        TASK,
        ("spec", "messageRetry"),
    ),
    "Tool.isolation_mode": (
        TOOL + "  runtime:\n    isolation_mode: sandboxed\n",
        TOOL,
        ("spec", "runtime", "isolationMode"),
    ),
    "kind Memory": (
        "kind: Memory\nmetadata: {name: shared}\nspec: {type: vector, provider: in-memory}\n",
        "",
        ("kind",),
    ),
}


@pytest.mark.parametrize("case", sorted(INERT_CASES))
def test_kept_but_inert_is_a_warning_and_is_kept(case: str) -> None:
    text, without, path = INERT_CASES[case]
    result = check(text)
    assert result.obj is not None
    assert messages(result) == []
    warnings = [p for p in result.problems if p.severity is Severity.WARNING]
    assert [w.path for w in warnings] == [path]
    assert "kept" in warnings[0].message
    if without:
        # kept: in the body and in the digest, not dropped
        assert digest(result.obj) != digest(valid(without))
        body: Any = normalised(result.obj)
        for part in path:
            body = body[part]
        assert body


def test_inert_field_warning_is_located_in_the_file() -> None:
    desired = desired_of(INERT_CASES["Agent.memory"][0])
    assert desired.ok and desired.errors == []
    [warning] = desired.warnings
    assert (warning.field, warning.line, warning.column) == ("spec.memory", 23, 3)
    assert warning.format().startswith("m.yaml:23:3: Agent/compliance-checker: spec.memory: warning: ")


def test_status_is_a_warning_and_ignored() -> None:
    result = check(ANNOUNCEMENT_AGENT + "status:\n  phase: Ready\n")
    assert result.obj is not None
    assert [(p.path, p.severity) for p in result.problems] == [(("status",), Severity.WARNING)]
    assert digest(result.obj) == digest(valid(ANNOUNCEMENT_AGENT))


def test_every_problem_of_a_document_is_reported_at_once() -> None:
    text = ANNOUNCEMENT_AGENT.replace("model: gpt-4", "modelRf: x").replace("auditLog: true", "auditLog: maybe")
    found = errors_at(check(text))
    assert ("spec", "modelRf") in found and ("spec", "governance", "auditLog") in found


def test_manifest_helper_dict_validates() -> None:
    # the plain-dict path (no YAML) used by other checks
    result = validate_object(manifest("Tool", {"type": "http", "requires": [{"read": "docs"}]}))
    assert isinstance(result.obj, Tool) and result.problems == ()


def test_an_approval_requirement_no_granted_tool_can_trigger_is_an_error_at_its_line() -> None:
    text = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata: {name: clerk}
spec:
  model: gpt-4
  tools:
    - name: flag-issues
      permissions: [{write: issue_tracker}]
  governance:
    requireApproval:
      - write: issue_tracker
      - write: issue_traker
      - write: "issue_*"
"""
    desired = build_desired([("agents/clerk.yaml", text.encode())])
    errors = [d for d in desired.diagnostics if d.severity is Severity.ERROR and "requireApproval" in d.message]
    assert [(e.file, e.line) for e in errors] == [("agents/clerk.yaml", 12)]
    assert "issue_traker" in errors[0].message and "never ask for approval" in errors[0].message
