"""Task (run once) and TaskSchedule (cron), plus Orloj's TaskWebhook and Worker kinds."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, JsonValue, field_validator, model_validator

from orlojd.core.cron import CronError, validate_cron
from orlojd.core.durations import Duration
from orlojd.core.manifests.agents import Jitter, RetryPolicy
from orlojd.core.manifests.base import OrlojModel, RefName, ResourceKind, Spec, inert

# Orloj's priority is free text; these words map onto orlojd's 1 (first) .. 5 (last).
PRIORITY_WORDS = {"critical": 1, "urgent": 1, "high": 2, "normal": 3, "medium": 3, "low": 4, "background": 5}


class MessageRetry(OrlojModel):
    max_attempts: Annotated[int, Field(ge=1)] | None = None
    backoff: Duration | None = None
    max_backoff: Duration = "24h"
    jitter: Jitter = Jitter.FULL
    non_retryable: list[str] = Field(default_factory=list)


LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
MAX_INPUT_BYTES = 256 * 1024


class TaskRequirements(OrlojModel):
    """Worker labels a run needs: a worker runs it only if it offers every one."""

    region: str | None = None
    gpu: bool = False
    model: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="Any other worker labels, key: value")

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r}: use letters, digits and . _ / - (at most 63)")
            if key in ("region", "gpu", "model"):
                raise ValueError(f"label {key!r}: set it with requirements.{key}")
        return value

    def worker_labels(self) -> dict[str, str]:
        """The labels as a worker declares them (``--label region=eu``); gpu only when required."""
        wanted = dict(self.labels)
        if self.region is not None:
            wanted["region"] = self.region
        if self.gpu:
            wanted["gpu"] = "true"
        if self.model is not None:
            wanted["model"] = self.model
        return wanted


class TaskSpec(Spec):
    """One unit of work for an agent or an AgentSystem. ``mode: template`` never runs by itself."""

    agent: RefName | None = None
    system: RefName | None = None
    mode: Literal["run", "template"] = "run"
    input: dict[str, JsonValue] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=1, le=5)] = 3
    max_turns: Annotated[int, Field(ge=0)] = 0
    retry: RetryPolicy | None = Field(default=None, description="Overrides the agent's retry policy")
    deadline: Duration | None = Field(default=None, description="Whole-task deadline across attempts")
    message_retry: MessageRetry | None = inert("Orloj per-message retry; kept, not used yet", default=None)
    requirements: TaskRequirements = Field(default_factory=TaskRequirements)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_word(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().isdigit():
            word = value.strip().lower()
            if word not in PRIORITY_WORDS:
                raise ValueError(f"unknown priority {value!r}; use 1-5 or one of {', '.join(PRIORITY_WORDS)}")
            return PRIORITY_WORDS[word]
        return value

    @field_validator("input")
    @classmethod
    def _input_size(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_INPUT_BYTES:
            raise ValueError(
                f"input is {size:,} bytes; the limit is {MAX_INPUT_BYTES // 1024} KiB: "
                "pass a reference (a file or URL a tool reads) instead of the data"
            )
        return value

    @model_validator(mode="after")
    def _one_target(self) -> TaskSpec:
        if (self.agent is None) == (self.system is None):
            raise ValueError("a task names exactly one of 'agent' or 'system'")
        return self


class Task(ResourceKind):
    kind: Literal["Task"] = "Task"
    spec: TaskSpec


def _cron(value: str) -> str:
    """Five valid fields that fire at least once (``0 0 30 2 *`` is refused, naming the field)."""
    try:
        return validate_cron(value)
    except CronError as exc:
        raise ValueError(str(exc)) from None


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Prague") from None
    return value


class TaskScheduleSpec(Spec):
    task_ref: RefName = Field(description="A Task with mode: template")
    schedule: Annotated[
        str,
        AfterValidator(_cron),
        Field(
            description="Cron: minute hour day-of-month month day-of-week (Vixie: day-of-week 0-7, "
            "0 and 7 are Sunday; day-of-month and day-of-week both restricted means either)"
        ),
    ]
    time_zone: Annotated[str, AfterValidator(_zone)] = Field(
        default="UTC", description="IANA zone the slots are computed in; a skipped local time does not fire"
    )
    starting_deadline_seconds: Annotated[int, Field(ge=0)] = Field(
        default=300, description="A slot not started within this many seconds is skipped; missed slots never backfill"
    )
    concurrency_policy: Literal["forbid", "allow", "replace"] = Field(
        default="forbid", description="With a run of this schedule unfinished: skip (forbid), run too, or cancel it"
    )
    successful_history_limit: Annotated[int, Field(ge=0)] = 10
    failed_history_limit: Annotated[int, Field(ge=0)] = 3


class TaskSchedule(ResourceKind):
    kind: Literal["TaskSchedule"] = "TaskSchedule"
    spec: TaskScheduleSpec


class WebhookAuth(OrlojModel):
    profile: Literal["generic", "github"] = "generic"
    secret_ref: RefName
    signature_header: str | None = None
    signature_prefix: str = "sha256="
    timestamp_header: str | None = None
    max_skew_seconds: Annotated[int, Field(ge=0)] = 300


class WebhookIdempotency(OrlojModel):
    event_id_header: str | None = None
    dedupe_window_seconds: Annotated[int, Field(ge=0)] | None = None


class WebhookPayload(OrlojModel):
    mode: Literal["raw"] = "raw"
    input_key: str = "webhook_payload"


class TaskWebhookSpec(Spec):
    task_ref: RefName
    auth: WebhookAuth
    idempotency: WebhookIdempotency = Field(default_factory=WebhookIdempotency)
    payload: WebhookPayload = Field(default_factory=WebhookPayload)


class TaskWebhook(ResourceKind):
    """Orloj's webhook trigger. Kept and validated; orlojd does not serve deliveries yet."""

    kind: Literal["TaskWebhook"] = "TaskWebhook"
    spec: TaskWebhookSpec


class WorkerCapabilities(OrlojModel):
    gpu: bool = False
    supported_models: list[str] = Field(default_factory=list)


class WorkerSpec(Spec):
    region: str | None = None
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)
    max_concurrent_tasks: Annotated[int, Field(ge=0)] = 1


class Worker(ResourceKind):
    """Orloj's declared worker. orlojd workers register themselves; this kind is kept only."""

    kind: Literal["Worker"] = "Worker"
    spec: WorkerSpec
