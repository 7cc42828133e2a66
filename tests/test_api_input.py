"""What the watch API accepts: checked whole, with a reason for each refusal."""

from __future__ import annotations

import pytest

from watcher.api_input import InputError, parse_key, parse_watches


def test_one_execution_or_a_list_each_once_in_the_default_workspace() -> None:
    assert parse_watches({"execution_id": "ex-1"}, "ws") == ([("ws", "ex-1")], True)
    body = {
        "executions": [
            {"execution_id": "ex-1"},
            {"execution_id": "ex-2", "workspace_id": "ops"},
            {"execution_id": "ex-1", "workspace_id": "ws"},
        ]
    }
    assert parse_watches(body, "ws") == ([("ws", "ex-1"), ("ops", "ex-2")], False)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"execution_id": "ex-1"}, "workspace_id is missing"),
        ({"executions": []}, "executions is empty"),
        ({"executions": "ex-1"}, "must be a list"),
        ({"executions": [], "more": 1}, "unknown field(s) 'more'"),
        ({"executions": ["ex-1"]}, "executions[0] must be an object"),
        ({"workspace_id": "ws"}, "execution_id is missing"),
        ({"execution_id": "é" * 129, "workspace_id": "ws"}, "over 256 bytes"),
    ],
)
def test_refusals_say_what_is_wrong(body: object, reason: str) -> None:
    with pytest.raises(InputError) as info:
        parse_watches(body, None)
    assert reason in str(info.value)


def test_a_url_key_is_checked_like_a_body_one() -> None:
    assert parse_key("ws", "ex-1") == ("ws", "ex-1")
    with pytest.raises(InputError, match="cannot be in an ID"):
        parse_key("ws", "01J9?x=1")
