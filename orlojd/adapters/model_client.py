"""Model calls through litellm: one attempt at one endpoint, on a long-lived event loop shared by all workers.

This module owns the edge between the agent runtime and litellm:

* ``ModelTarget``: one endpoint's model as litellm is called (``litellm_model``, ``api_base``, ``api_key``,
  ``timeout``), plus the bare model id the gate and the budget see and the endpoint's retry policy.
* ``ModelClient.complete(target, messages, tools)``: one ``litellm.acompletion`` with ``num_retries=0`` (the
  runtime retries, ``core/retry.provider_wait``) and only the function ``tools`` given (no provider-side
  tool is ever enabled). A failure is a ``ProviderError``: ``transient`` for rate limits, 5xx, connection
  errors and timeouts, with the provider's ``Retry-After`` when it sent one; anything else (bad request,
  authentication, not found) is not. Once the target's ``cancelled`` event is set (the run was cancelled, or
  its attempt timed out) the call is abandoned within ``CANCEL_POLL`` seconds: ``CallCancelled``.

litellm's logging worker (``GLOBAL_LOGGING_WORKER``) is bound to the event loop it first runs on, so every
call runs on one event loop in a daemon thread, started on first use; worker threads submit their call with
``asyncio.run_coroutine_threadsafe`` and wait for it, so calls from several workers run concurrently. The
loop lives as long as the process. An API key is never logged, and is left out of the target's repr.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from orlojd.core.manifests.agents import RetryPolicy
from orlojd.core.retry import retry_after_seconds

__all__ = ["CANCEL_POLL", "CallCancelled", "ModelClient", "ModelTarget", "ProviderError", "shared_client"]

T = TypeVar("T")
CANCEL_POLL = 0.1  # seconds between two looks at a call's cancelled event while it waits for the provider


@dataclass(frozen=True)
class ModelTarget:
    """One endpoint's model, ready to call (see the module doc)."""

    endpoint: str  # "namespace/name", for messages
    model: str  # bare id: what the gate and the budget see
    litellm_model: str  # "<provider>/<model>"
    timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    cancelled: threading.Event | None = field(default=None, repr=False, compare=False)  # the run's: abandon
    unusable: str | None = None  # a fallback that cannot be called (its key unreadable): why; it is skipped


class ProviderError(Exception):
    """A model call that failed: whether trying again may help, and how long the provider asked to wait."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class CallCancelled(Exception):
    """The call's ``cancelled`` event was set while it waited for the provider: abandoned, no answer."""


class ModelClient:
    """Runs litellm calls on one background event loop (see the module doc); safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="orlojd-model-calls", daemon=True).start()
                self._loop = loop
                atexit.register(self.close)
            return self._loop

    def close(self) -> None:
        """Flush and stop litellm's logging worker and every task left on the loop, then stop the loop (at
        exit: no "Task was destroyed but it is pending" on the way out)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None or not loop.is_running():
            return
        with contextlib.suppress(Exception):  # best effort on the way out
            asyncio.run_coroutine_threadsafe(_drain(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float, cancelled: threading.Event | None = None) -> T:
        """``coroutine`` on the shared loop; its result, ``TimeoutError`` after ``timeout`` seconds, or
        ``CallCancelled`` soon after ``cancelled`` is set (the coroutine is cancelled either way)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = max(deadline - time.monotonic(), 0.0)
                try:
                    return future.result(left if cancelled is None else min(left, CANCEL_POLL))
                except FutureTimeout:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"no answer in {timeout:g}s") from None
                    if cancelled is not None and cancelled.is_set():
                        raise CallCancelled("cancelled while waiting for the provider") from None
        finally:
            if not future.done():
                future.cancel()

    def complete(self, target: ModelTarget, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        """One call of ``target`` (see the module doc); ``ProviderError`` when it fails."""
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm
        from litellm.exceptions import (
            APIConnectionError,
            InternalServerError,
            RateLimitError,
            ServiceUnavailableError,
            Timeout,
        )

        litellm.suppress_debug_info = True  # no banners on stdout: errors are values here
        transient = (RateLimitError, APIConnectionError, ServiceUnavailableError, Timeout, InternalServerError)
        options: dict[str, Any] = {
            "model": target.litellm_model,
            "messages": messages,
            "timeout": target.timeout,
            "num_retries": 0,
        }
        if target.api_base:
            options["api_base"] = target.api_base
        if target.api_key:
            options["api_key"] = target.api_key
        if tools:
            options["tools"] = tools  # function tools only: never a provider-side tool
        where = f"model {target.model} at {target.endpoint}"
        try:
            return self.run(litellm.acompletion(**options), target.timeout + 5, target.cancelled)
        except CallCancelled:
            raise
        except TimeoutError as exc:
            raise ProviderError(f"{where}: Timeout: {exc}", transient=True) from None
        except transient as exc:
            raise ProviderError(
                f"{where}: {type(exc).__name__}: {_message(exc, target.api_key)}",
                transient=True,
                retry_after=_retry_after(exc),
            ) from None
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if isinstance(status, int) and (status == 429 or status >= 500):
                raise ProviderError(
                    f"{where}: {type(exc).__name__}: {_message(exc, target.api_key)}",
                    transient=True,
                    retry_after=_retry_after(exc),
                ) from None
            raise ProviderError(
                f"{where}: {type(exc).__name__}: {_message(exc, target.api_key)}", transient=False
            ) from None


async def _drain() -> None:
    """litellm's logging worker flushed and stopped, other tasks of the loop cancelled."""
    if "litellm" in sys.modules:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        await GLOBAL_LOGGING_WORKER.flush()
        await GLOBAL_LOGGING_WORKER.stop()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def _message(exc: Exception, secret: str | None) -> str:
    """The provider's message, capped; the API key replaced where the provider echoed it back."""
    text = str(exc)
    if secret:
        text = text.replace(secret, "[redacted]")
    return text if len(text) <= 500 else text[:497] + "..."


def _retry_after(exc: Exception) -> float | None:
    """The provider's ``Retry-After``: litellm keeps the answer's headers in ``litellm_response_headers``."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if headers is not None and headers.get("retry-after") is not None:
            return retry_after_seconds(headers.get("retry-after"), datetime.now(UTC))
    return None


_SHARED = ModelClient()


def shared_client() -> ModelClient:
    """The process's client: one event loop for every model call of every worker thread."""
    return _SHARED
