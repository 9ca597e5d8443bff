"""The offline ``scripted`` model provider: canned replies served through litellm, no network, no API key.

This module owns the ``scripted`` provider (a ModelEndpoint with ``provider: scripted``): the script
types (:class:`ScriptedTurn`, :class:`Script`), loading a script from a mapping or a YAML/JSON fixture
(:func:`load_script`), and registering named scripts with litellm (:func:`register`) so that
``await litellm.acompletion(model="scripted/<name>", messages=..., tools=...)`` answers with the
script's next turn as an ordinary litellm ``ModelResponse``. Tests and the demo run agents through it.

Replies are deterministic: the turn served is the number of assistant messages already in
``messages``, so a retried call (same messages) gets the same reply, and an agent loop that feeds
back the assistant message and its tool results gets the next turn. Past the last turn the model
answers ``"done"`` with no tool calls. Tool call ids are ``call_<turn>_<i>``, the response id is
``scripted-<name>-<turn>``.

The litellm API used (litellm 1.82.6, paths under ``site-packages/litellm``):

* ``llms/custom_llm.py:47`` ``class CustomLLM(BaseLLM)``: subclass it and override
  ``completion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
  encoding, api_key, logging_obj, optional_params, acompletion=None, litellm_params=None,
  logger_fn=None, headers={}, timeout=None, client=None)`` and ``async def acompletion(...)`` (same
  parameters); ``custom_chat_llm_router`` (line 231) picks one by call type. ``model`` arrives without
  the provider prefix (``"scripted/x"`` -> ``"x"``); ``optional_params`` carries ``tools``, ``tool_choice``.
* ``__init__.py:1311`` ``litellm.custom_provider_map: List[CustomLLMItem]``, items
  ``{"provider": str, "custom_handler": CustomLLM}`` (``types/llms/custom_llm.py:8``);
  ``utils.py:494`` ``custom_llm_setup()`` copies them into ``litellm.provider_list`` and
  ``litellm._custom_providers`` at the start of every call, and ``main.py:4323`` routes a provider in
  ``_custom_providers`` to its handler. ``litellm.acompletion`` (``main.py:377``) runs ``completion``
  in an executor thread and awaits the coroutine the handler returns (``main.py:612-620``).
* ``types/utils.py:1846`` ``ModelResponse(id=, model=, choices=[{"index", "finish_reason", "message": {"role",
  "content", "tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}]}}],
  usage={"prompt_tokens", "completion_tokens", "total_tokens"})`` builds the response; the dicts become
  ``Choices``/``Message``/``ChatCompletionMessageToolCall``/``Usage``.
* An unregistered script name raises ``exceptions.py:79`` ``NotFoundError`` (status 404), which litellm's
  ``exception_type`` passes through unchanged (a plain exception would become a retryable
  ``APIConnectionError``).

Cost: scripted models have no entry in litellm's price table, so ``litellm.completion_cost`` refuses
the response (``BadRequestError``, "LLM Provider NOT provided", after printing its provider banner to
stdout: do not call it for scripted models) and ``response._hidden_params
["response_cost"]`` is ``None``; ``orlojd.adapters.pricing.cost_of`` answers ``None``. The usage
fields are what the budget ledger settles on.

Every ``acompletion`` also schedules litellm's async success handler (a fire-and-forget task,
``utils.py:1956``) onto its background logging worker (``litellm_core_utils/logging_worker.py:527``
``GLOBAL_LOGGING_WORKER``), which is bound to the first event loop it runs on. The runtime therefore
calls litellm only on one long-lived loop (``adapters/model_client.py``: ``shared_client().run``), and so
do the tests; a caller with a loop of its own would break that binding. A caller that closes its event
loop right after a call should first ``await asyncio.sleep(0)`` (the task enqueues), then ``await
GLOBAL_LOGGING_WORKER.flush()`` and ``await GLOBAL_LOGGING_WORKER.stop()``; otherwise Python warns that
``Logging.async_success_handler`` was never awaited.

litellm is imported lazily (importing it takes seconds) with ``LITELLM_LOCAL_MODEL_COST_MAP`` set,
as in ``adapters/pricing.py``, so nothing waits on the network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DONE", "PROVIDER", "Script", "ScriptedTurn", "load_script", "register", "registered", "turn_number"]

PROVIDER = "scripted"
DONE = "done"

_TURN_KEYS = frozenset({"content", "tool_calls", "usage"})
_CALL_KEYS = frozenset({"name", "arguments"})
_USAGE_KEYS = frozenset({"prompt", "completion"})


@dataclass(frozen=True)
class ScriptedTurn:
    """One reply of the scripted model."""

    content: str | None = None  # the assistant's text
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()  # (tool name, arguments)
    usage: tuple[int, int] = (10, 5)  # (prompt_tokens, completion_tokens) it reports


_FINAL = ScriptedTurn(content=DONE)


def _role(message: Any) -> Any:
    if isinstance(message, Mapping):
        return message.get("role")
    return getattr(message, "role", None)  # a litellm Message fed back as is


def turn_number(messages: Sequence[Any]) -> int:
    """The turn a call with these messages is at: the number of assistant messages already in it."""
    return sum(1 for message in messages if _role(message) == "assistant")


@dataclass(frozen=True)
class Script:
    """The replies of one scripted model, in order."""

    turns: tuple[ScriptedTurn, ...]

    def reply(self, messages: Sequence[Mapping[str, Any]]) -> ScriptedTurn:
        """The reply to ``messages``: turn N after N assistant messages; past the end, a final ``"done"``."""
        turn = turn_number(messages)
        return self.turns[turn] if turn < len(self.turns) else _FINAL


# -- loading -----------------------------------------------------------------------------------------


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def _unknown_keys(where: str, data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(str(key) for key in data.keys() - allowed)
    if extra:
        raise _fail(where, f"unknown field(s) {', '.join(map(repr, extra))} (allowed: {', '.join(sorted(allowed))})")


def _count(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(where, f"must be a non-negative integer, got {value!r}")
    return value


def _tool_call(turn: str, path: str, data: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(data, Mapping):
        raise _fail(
            f"{turn}: field '{path}'", f"must be a mapping with 'name' and 'arguments', got {type(data).__name__}"
        )
    _unknown_keys(f"{turn}: field '{path}'", data, _CALL_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"{turn}: field '{path}.name'", f"must be a non-empty string, got {name!r}")
    arguments = data.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise _fail(f"{turn}: field '{path}.arguments'", f"must be a mapping, got {type(arguments).__name__}")
    try:
        json.dumps(arguments)
    except (TypeError, ValueError) as error:
        raise _fail(f"{turn}: field '{path}.arguments'", f"must be JSON-serialisable ({error})") from None
    return name, dict(arguments)


def _turn(index: int, data: Any) -> ScriptedTurn:
    where = f"turn {index}"
    if not isinstance(data, Mapping):
        raise _fail(where, f"must be a mapping with 'content' and/or 'tool_calls', got {type(data).__name__}")
    _unknown_keys(where, data, _TURN_KEYS)
    content = data.get("content")
    if content is not None and not isinstance(content, str):
        raise _fail(f"{where}: field 'content'", f"must be a string, got {type(content).__name__}")
    raw_calls = data.get("tool_calls") or []
    if not isinstance(raw_calls, Sequence) or isinstance(raw_calls, str | bytes):
        raise _fail(f"{where}: field 'tool_calls'", f"must be a list, got {type(raw_calls).__name__}")
    calls = tuple(_tool_call(where, f"tool_calls[{i}]", call) for i, call in enumerate(raw_calls))
    if content is None and not calls:
        raise _fail(where, "needs 'content' or 'tool_calls'")
    usage = ScriptedTurn.usage
    if "usage" in data:
        raw_usage = data["usage"]
        if not isinstance(raw_usage, Mapping):
            raise _fail(f"{where}: field 'usage'", "must be a mapping with 'prompt' and 'completion'")
        _unknown_keys(f"{where}: field 'usage'", raw_usage, _USAGE_KEYS)
        usage = (
            _count(f"{where}: field 'usage.prompt'", raw_usage.get("prompt", usage[0])),
            _count(f"{where}: field 'usage.completion'", raw_usage.get("completion", usage[1])),
        )
    return ScriptedTurn(content=content, tool_calls=calls, usage=usage)


def _script(data: Any) -> Script:
    if not isinstance(data, Mapping):
        raise ValueError(f"script: must be a mapping with 'turns', got {type(data).__name__}")
    _unknown_keys("script", data, frozenset({"turns"}))
    turns = data.get("turns")
    if not isinstance(turns, Sequence) or isinstance(turns, str | bytes):
        raise ValueError(f"script: field 'turns' must be a list of turns, got {type(turns).__name__}")
    return Script(turns=tuple(_turn(index, turn) for index, turn in enumerate(turns)))


def load_script(source: Mapping[str, Any] | Path) -> Script:
    """A script from ``{"turns": [...]}`` or a YAML/JSON fixture file; ``ValueError`` names the turn and field.

    A turn is ``{"content": str}``, ``{"tool_calls": [{"name": str, "arguments": {...}}]}`` or both, with an
    optional ``"usage": {"prompt": int, "completion": int}`` (default 10 and 5).
    """
    if isinstance(source, Path):
        try:
            data = yaml.safe_load(source.read_text(encoding="utf-8"))  # JSON is YAML
        except yaml.YAMLError as error:
            raise ValueError(f"{source}: not valid YAML/JSON: {error}") from None
        try:
            return _script(data)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
    return _script(source)


# -- the litellm provider ----------------------------------------------------------------------------

_SCRIPTS: dict[str, Script] = {}


def unregister(name: str) -> None:
    """Forget the script registered under ``name`` (a run's own inline script, once the run ends)."""
    _SCRIPTS.pop(name, None)


def _response(name: str, messages: Sequence[Any]) -> Any:
    from litellm.exceptions import NotFoundError
    from litellm.types.utils import ModelResponse

    script = _SCRIPTS.get(name)
    if script is None:
        known = ", ".join(sorted(_SCRIPTS)) or "none"
        raise NotFoundError(
            message=(
                f"no script registered for model '{PROVIDER}/{name}' (registered: {known}); "
                "register one with orlojd.adapters.scripted_model.register({'"
                f"{name}': load_script(...)}})"
            ),
            model=f"{PROVIDER}/{name}",
            llm_provider=PROVIDER,
        )
    turn = turn_number(messages)
    reply = script.reply(messages)
    tool_calls = [
        {"id": f"call_{turn}_{i}", "type": "function", "function": {"name": tool, "arguments": json.dumps(args)}}
        for i, (tool, args) in enumerate(reply.tool_calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    prompt, completion = reply.usage
    return ModelResponse(
        id=f"scripted-{name}-{turn}",
        model=f"{PROVIDER}/{name}",
        choices=[{"index": 0, "finish_reason": "tool_calls" if tool_calls else "stop", "message": message}],
        usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    )


def _handler() -> Any:
    """The ``scripted`` CustomLLM in ``litellm.custom_provider_map``, added on first use."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm.llms.custom_llm import CustomLLM

    for item in litellm.custom_provider_map:
        if item["provider"] == PROVIDER:
            return item["custom_handler"]

    class ScriptedLLM(CustomLLM):
        def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            return _response(model, messages)

        async def acompletion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            return _response(model, messages)

    handler = ScriptedLLM()
    litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": PROVIDER, "custom_handler": handler}]
    return handler


def register(scripts: Mapping[str, Script]) -> None:
    """Serve each script as model ``scripted/<name>`` through litellm; a name registered again is replaced."""
    for name, script in scripts.items():
        if not isinstance(script, Script):
            raise TypeError(f"script for '{name}' must be a Script (see load_script), got {type(script).__name__}")
        if not name or "/" in name:
            raise ValueError(f"script name must be non-empty without '/', got {name!r}")
    _handler()
    _SCRIPTS.update(scripts)


def registered() -> frozenset[str]:
    """The names of the registered scripts."""
    return frozenset(_SCRIPTS)
