"""Execution (the parsed API object) and Event (what every sink receives)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from watcher.models import EVENT_TYPES, Event, Execution, event_id_for, rfc3339

# A 200 body as the seed OpenAPI schema describes it, with fields we do not use.
API_OBJECT: dict[str, Any] = {
    "id": "ex-1",
    "workspace_id": "ws-1",
    "playbook_id": "pb-7",
    "playbook_name": "Restart pod",
    "display_name": "Restart pod #12",
    "execution_number": 12,
    "state": "Failed",
    "state_ui": "Failed",
    "duration": 1523,
    "net_runtime_ms": 1400,
    "error_details": {"step_2": "pod not found"},
    "step_results": {"Completed": 1, "Failed": 1},
    "started_at": 1764403200000,
    "finished_at": 1764403201523,
    # Ignored fields of models.PlaybookExecutionWithSubflowNames:
    "app_id": "app",
    "inputs": {"pod": "web-1"},
    "event": {"trigger": "manual"},
    "playbook_deleted": False,
    "subflows_reference_to_name_mapping": {"subflow_ref_1": "Child flow"},
    "timeout": 60000,
}

EVENT_FIELDS = {
    "event",
    "event_id",
    "execution_id",
    "workspace_id",
    "state",
    "duration",
    "error_details",
    "step_results",
    "playbook_id",
    "playbook_name",
    "display_name",
    "execution_number",
    "started_at",
    "finished_at",
    "observed_at",
    "net_runtime_ms",
    "polls",
    "discovered_by",
}


def make_event(execution: Execution | None = None, **overrides: Any) -> Event:
    values: dict[str, Any] = {
        "event": "execution.finished",
        "key": ("ws-1", "ex-1"),
        "state": "Failed",
        "execution": execution,
        "observed_at_s": 1764403202.5,
        "polls": 3,
    }
    values.update(overrides)
    return Event(**values)


# --- Execution.from_api -----------------------------------------------------------------


def test_from_api_reads_every_used_field_of_the_seed_schema() -> None:
    ex = Execution.from_api(API_OBJECT)

    assert ex == Execution(
        state="Failed",
        state_ui="Failed",
        duration_ms=1523,
        net_runtime_ms=1400,
        error_details={"step_2": "pod not found"},
        step_results={"Completed": 1, "Failed": 1},
        id="ex-1",
        workspace_id="ws-1",
        playbook_id="pb-7",
        playbook_name="Restart pod",
        display_name="Restart pod #12",
        execution_number=12,
        started_at=1764403200000,
        finished_at=1764403201523,
    )


def test_from_api_empty_object_gives_nones_and_empty_maps() -> None:
    assert Execution.from_api({}) == Execution()
    assert Execution().error_details == {}
    assert Execution().step_results == {}


def test_from_api_nulls_are_the_same_as_missing() -> None:
    nulls = dict.fromkeys(API_OBJECT)

    assert Execution.from_api(nulls) == Execution()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state", 3),
        ("state", ["Completed"]),
        ("state_ui", {"name": "Completed"}),
        ("duration", "1523"),
        ("duration", True),  # bool is an int subclass, but not a duration
        ("duration", 1.5),
        ("duration", float("inf")),
        ("execution_number", False),
        ("started_at", "2026-11-29T08:00:00Z"),
        ("finished_at", [1]),
        ("playbook_name", 7),
        ("id", None),
    ],
)
def test_from_api_wrong_type_becomes_none(field: str, value: object) -> None:
    ex = Execution.from_api({field: value})

    assert ex == Execution()


def test_from_api_whole_number_floats_are_integers() -> None:
    ex = Execution.from_api({"duration": 1523.0, "started_at": 1.7644032e12})

    assert ex.duration_ms == 1523
    assert isinstance(ex.duration_ms, int)
    assert ex.started_at == 1764403200000


@pytest.mark.parametrize("value", [["a"], "oops", 5, True])
def test_from_api_non_object_maps_become_empty(value: object) -> None:
    ex = Execution.from_api({"error_details": value, "step_results": value})

    assert ex.error_details == {}
    assert ex.step_results == {}


def test_from_api_error_details_non_string_values_are_kept_as_json_text() -> None:
    ex = Execution.from_api(
        {"error_details": {"a": "text", "b": 3, "c": None, "d": {"x": [1]}, "e": True}}
    )

    assert ex.error_details == {"a": "text", "b": "3", "c": "null", "d": '{"x": [1]}', "e": "true"}


def test_from_api_step_results_keep_only_integers() -> None:
    ex = Execution.from_api(
        {"step_results": {"ok": 2, "whole": 4.0, "half": 1.5, "flag": True, "text": "3"}}
    )

    assert ex.step_results == {"ok": 2, "whole": 4}


@pytest.mark.parametrize(
    ("state", "state_ui", "reported"),
    [
        ("failed", "Failed", "Failed"),  # state_ui wins
        ("completed", "", "completed"),  # ... when non-empty
        ("running", None, "running"),
        (None, "Running", "Running"),
        (None, None, None),
        ("", "", None),
    ],
)
def test_reported_state_prefers_non_empty_state_ui(
    state: str | None, state_ui: str | None, reported: str | None
) -> None:
    assert Execution(state=state, state_ui=state_ui).reported_state == reported


# --- Event -------------------------------------------------------------------------------


def test_event_to_dict_has_exactly_the_spec_fields() -> None:
    event = make_event(Execution.from_api(API_OBJECT))

    assert event.to_dict() == {
        "event": "execution.finished",
        "event_id": event.event_id,
        "execution_id": "ex-1",
        "workspace_id": "ws-1",
        "state": "Failed",
        "duration": 1523,
        "error_details": {"step_2": "pod not found"},
        "step_results": {"Completed": 1, "Failed": 1},
        "playbook_id": "pb-7",
        "playbook_name": "Restart pod",
        "display_name": "Restart pod #12",
        "execution_number": 12,
        "started_at": 1764403200000,
        "finished_at": 1764403201523,
        "observed_at": "2025-11-29T08:00:02.500Z",
        "net_runtime_ms": 1400,
        "polls": 3,
        "discovered_by": None,
    }


def test_event_without_execution_has_nulls_and_empty_maps() -> None:
    event = make_event(None, event="execution.not_found", state=None, polls=0)

    data = event.to_dict()

    assert set(data) == EVENT_FIELDS
    assert data["error_details"] == {}
    assert data["step_results"] == {}
    for name in EVENT_FIELDS - {
        "event",
        "event_id",
        "execution_id",
        "workspace_id",
        "observed_at",
        "polls",
        "error_details",
        "step_results",
    }:
        assert data[name] is None, name
    assert data["polls"] == 0


def test_event_id_is_stable_across_calls_and_whatever_else_changes() -> None:
    first = make_event(Execution(state="Failed"), polls=1, observed_at_s=1.0)
    retry = make_event(None, state="Completed", polls=9, observed_at_s=2.0)

    assert first.event_id == first.event_id == retry.event_id
    assert first.event_id == event_id_for(("ws-1", "ex-1"), "execution.finished")


def test_event_id_is_pinned_because_receivers_deduplicate_on_it() -> None:
    # Stored events and webhook receivers' dedup tables outlive upgrades.
    assert (
        event_id_for(("ws-1", "ex-1"), "execution.finished")
        == "evt_4cf94aad7f6eab948878e99d1fbd0724"
    )


def test_event_id_differs_per_workspace_execution_and_event() -> None:
    keys = [
        ("ws-1", "ex-1"),
        ("ws-2", "ex-1"),
        ("ws-1", "ex-2"),
        ("ws-1/ex", "1"),
        ("ws-1", "ex/1"),
    ]

    ids = {event_id_for(key, event) for key in keys for event in EVENT_TYPES}

    assert len(ids) == len(keys) * len(EVENT_TYPES)


def test_to_json_is_compact_utf8_and_keeps_non_ascii() -> None:
    ex = Execution(playbook_name="Redémarrer le pod ✓", error_details={"étape": "échec"})
    event = make_event(ex)

    body = event.to_json()

    assert "Redémarrer le pod ✓".encode() in body
    assert b"\\u" not in body
    assert b": " not in body
    assert b", " not in body
    assert json.loads(body) == event.to_dict()


def test_to_json_survives_a_lone_surrogate_from_the_api() -> None:
    # '"\ud800"' is valid JSON; Python decodes it to a str UTF-8 cannot encode.
    ex = Execution.from_api(json.loads(r'{"state_ui": "Failed", "error_details": {"x": "\ud800"}}'))

    body = make_event(ex).to_json()

    body.decode("utf-8")  # strict: the body must be valid UTF-8
    assert json.loads(body)["error_details"] == {"x": "\ud800"}


@pytest.mark.parametrize(
    ("epoch_s", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1764403200.123, "2025-11-29T08:00:00.123Z"),
        (1764403200, "2025-11-29T08:00:00.000Z"),
    ],
)
def test_rfc3339_is_utc_with_milliseconds_and_z(epoch_s: float, text: str) -> None:
    assert rfc3339(epoch_s) == text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
