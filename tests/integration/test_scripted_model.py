"""The offline ``scripted`` model provider, driven through the real ``litellm.acompletion`` (no mocks, no network).

Async calls run on the process's long-lived model-call event loop (``model_client.shared_client``, no
pytest-asyncio), through :func:`run`: litellm's background logging worker is bound to the first loop it runs
on, so a test that ran its own ``asyncio.run`` after an agent loop's call would break it. Every test blocks
outgoing sockets, so a call that tried the network would fail.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orlojd.adapters import pricing
from orlojd.adapters.model_client import shared_client
from orlojd.adapters.scripted_model import DONE, Script, ScriptedTurn, load_script, register, registered

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"the {name} tool",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    for name in ("search", "fetch", "summarise")
]

SCRIPT = {
    "turns": [
        {"tool_calls": [{"name": "search", "arguments": {"q": "orloj"}}], "usage": {"prompt": 100, "completion": 7}},
        {
            "content": "two at once",
            "tool_calls": [
                {"name": "fetch", "arguments": {"url": "https://example.invalid/a"}},
                {"name": "summarise", "arguments": {"text": "ä ✓", "max": 3}},
            ],
            "usage": {"prompt": 150, "completion": 20},
        },
        {"content": "The answer is 42."},
    ]
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine`` on the process's one model-call event loop (``model_client.shared_client``), where the agent
    loop runs its calls too: litellm's logging worker is bound to one loop, so no test may run it on another."""
    return shared_client().run(coroutine, 30)


async def call(model: str, messages: list[dict[str, Any]]) -> Any:
    import litellm

    return await litellm.acompletion(model=model, messages=messages, tools=TOOLS, tool_choice="auto")


def test_agent_loop_gets_each_turn_with_tool_calls_finish_reasons_and_usage() -> None:
    name = unique("loop")
    register({name: load_script(SCRIPT)})
    assert name in registered()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a test agent."},
        {"role": "user", "content": "What is the answer?"},
    ]

    async def loop() -> list[Any]:
        replies = []
        while True:
            response = await call(f"scripted/{name}", messages)
            replies.append(response)
            message = response.choices[0].message
            calls = message.tool_calls or []
            messages.append(
                {
                    "role": "assistant",
                    "content": message.content,
                    **({"tool_calls": [c.model_dump() for c in calls]} if calls else {}),
                }
            )
            if not calls:
                return replies
            for c in calls:
                messages.append({"role": "tool", "tool_call_id": c.id, "content": f"result of {c.function.name}"})

    first, second, third = run(loop())

    m = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert m.content is None
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in m.tool_calls] == [
        ("call_0_0", "function", "search", {"q": "orloj"})
    ]
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (100, 7, 107)

    m = second.choices[0].message
    assert second.choices[0].finish_reason == "tool_calls"
    assert m.content == "two at once"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in m.tool_calls] == [
        ("call_1_0", "fetch", {"url": "https://example.invalid/a"}),
        ("call_1_1", "summarise", {"text": "ä ✓", "max": 3}),
    ]
    assert isinstance(m.tool_calls[1].function.arguments, str)
    assert (second.usage.prompt_tokens, second.usage.completion_tokens, second.usage.total_tokens) == (150, 20, 170)

    m = third.choices[0].message
    assert third.choices[0].finish_reason == "stop"
    assert m.content == "The answer is 42."
    assert not m.tool_calls
    assert (third.usage.prompt_tokens, third.usage.completion_tokens, third.usage.total_tokens) == (10, 5, 15)
    assert [r.id for r in (first, second, third)] == [f"scripted-{name}-{t}" for t in range(3)]

    # past the end: a final content-only "done"
    after = run(call(f"scripted/{name}", messages))
    assert after.choices[0].message.content == DONE
    assert after.choices[0].finish_reason == "stop"
    assert not after.choices[0].message.tool_calls


def test_the_same_messages_twice_give_the_same_reply() -> None:
    name = unique("retry")
    register({name: load_script(SCRIPT)})
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "call_0_0", "content": "ok"},
    ]

    async def twice() -> tuple[Any, Any]:
        return await call(f"scripted/{name}", messages), await call(f"scripted/{name}", messages)

    one, two = run(twice())
    for response in (one, two):
        assert response.id == f"scripted-{name}-1"
        assert [c.id for c in response.choices[0].message.tool_calls] == ["call_1_0", "call_1_1"]
    assert one.choices[0].message.model_dump() == two.choices[0].message.model_dump()
    assert one.usage.model_dump() == two.usage.model_dump()


def test_sync_completion_and_a_litellm_message_fed_back_as_is() -> None:
    import litellm

    name = unique("sync")
    register({name: load_script(SCRIPT)})
    messages: list[Any] = [{"role": "user", "content": "go"}]
    first = litellm.completion(model=f"scripted/{name}", messages=messages, tools=TOOLS)
    messages.append(first.choices[0].message)  # a litellm Message object, as many agent loops do
    messages.append({"role": "tool", "tool_call_id": "call_0_0", "content": "found"})
    second = litellm.completion(model=f"scripted/{name}", messages=messages, tools=TOOLS)
    assert first.choices[0].message.tool_calls[0].function.name == "search"
    assert second.choices[0].message.content == "two at once"
    assert second.id == f"scripted-{name}-1"


def test_reply_counts_assistant_messages() -> None:
    script = Script(turns=(ScriptedTurn(content="a"), ScriptedTurn(tool_calls=(("t", {}),))))
    assert script.reply([]).content == "a"
    assert script.reply([{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}]).tool_calls == (
        ("t", {}),
    )
    assert script.reply([{"role": "assistant"}] * 2) == ScriptedTurn(content=DONE)
    assert Script(turns=()).reply([]) == ScriptedTurn(content=DONE)


def test_fixture_files_load(tmp_path: Path) -> None:
    yaml_file = tmp_path / "script.yaml"
    yaml_file.write_text(
        """\
turns:
  - tool_calls:
      - name: search
        arguments: {q: orloj}
    usage: {prompt: 100, completion: 7}
  - content: "The answer is 42."
""",
        encoding="utf-8",
    )
    script = load_script(yaml_file)
    assert script == Script(
        turns=(
            ScriptedTurn(tool_calls=(("search", {"q": "orloj"}),), usage=(100, 7)),
            ScriptedTurn(content="The answer is 42."),
        )
    )
    json_file = tmp_path / "script.json"
    json_file.write_text(json.dumps(SCRIPT), encoding="utf-8")
    assert load_script(json_file) == load_script(SCRIPT)
    assert len(load_script(json_file).turns) == 3


@pytest.mark.parametrize(
    ("turns", "expected"),
    [
        ([{"content": "ok"}, {}], "turn 1: needs 'content' or 'tool_calls'"),
        ([{"content": 3}], "turn 0: field 'content'"),
        ([{"content": "ok"}, {"content": "x", "tool_call": []}], "turn 1: unknown field(s) 'tool_call'"),
        ([{"tool_calls": [{"arguments": {}}]}], "turn 0: field 'tool_calls[0].name'"),
        (
            [{"content": "a"}, {"tool_calls": [{"name": "t"}, {"name": "u", "arguments": [1]}]}],
            "turn 1: field 'tool_calls[1].arguments'",
        ),
        ([{"tool_calls": [{"name": "t", "arguments": {"x": object()}}]}], "turn 0: field 'tool_calls[0].arguments'"),
        ([{"tool_calls": "search"}], "turn 0: field 'tool_calls'"),
        ([{"content": "a", "usage": {"prompt": -1}}], "turn 0: field 'usage.prompt'"),
        ([{"content": "a", "usage": {"prompt": 1, "completion": "5"}}], "turn 0: field 'usage.completion'"),
        ([{"content": "a", "usage": {"input": 1}}], "turn 0: field 'usage': unknown field(s) 'input'"),
        (["just text"], "turn 0: must be a mapping"),
    ],
)
def test_malformed_scripts_name_the_turn_and_field(turns: list[Any], expected: str) -> None:
    with pytest.raises(ValueError) as raised:
        load_script({"turns": turns})
    assert expected in str(raised.value)


def test_malformed_script_shapes_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="field 'turns' must be a list"):
        load_script({"turns": "none"})
    with pytest.raises(ValueError, match="unknown field"):
        load_script({"turns": [], "steps": []})
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns:\n  - content: ok\n  - tool_calls: [{name: ''}]\n", encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        load_script(bad)
    assert str(bad) in str(raised.value) and "turn 1: field 'tool_calls[0].name'" in str(raised.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("turns: [\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML/JSON"):
        load_script(broken)
    with pytest.raises(TypeError, match="must be a Script"):
        register({"x": SCRIPT})  # type: ignore[dict-item]


def test_an_unregistered_model_gives_a_clear_error() -> None:
    from litellm.exceptions import NotFoundError

    register({unique("known"): load_script(SCRIPT)})
    name = unique("missing")
    with pytest.raises(NotFoundError) as raised:
        run(call(f"scripted/{name}", [{"role": "user", "content": "hi"}]))
    message = str(raised.value)
    assert f"scripted/{name}" in message and "register" in message


def test_usage_is_what_a_scripted_response_is_settled_on() -> None:
    name = unique("cost")
    register({name: load_script(SCRIPT)})
    response = run(call(f"scripted/{name}", [{"role": "user", "content": "hi"}]))
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 7, 107)
    # scripted models have no price: litellm reports no response cost, the project's pricing says None
    assert response._hidden_params.get("response_cost") is None
    assert pricing.cost_of(f"scripted/{name}", usage.prompt_tokens, usage.completion_tokens) is None
