"""How ``deliveries`` (and ``status``) show the outbox to people and to scripts."""

from __future__ import annotations

from watcher.cli.deliveries import delivery_dict, delivery_table
from watcher.models import DeliveryRow

NOW_S = 1_800_000_000.0


def row(sink: str, status: str, last_error: str | None, updated_ago_s: float) -> DeliveryRow:
    return DeliveryRow(
        event_id="evt_1",
        sink=sink,
        status=status,  # type: ignore[arg-type]
        attempts=3,
        next_attempt_at=NOW_S + 5,
        last_error=last_error,
        updated_at=NOW_S - updated_ago_s,
        body=b"{}",
        key=("ws-main", "ex-1"),
        event="execution.finished",
    )


def test_the_table_shows_one_line_per_delivery_with_its_age_and_last_error() -> None:
    text = delivery_table(
        [row("chatops", "pending", "HTTP 503", 42), row("log", "dead", None, 600)], NOW_S
    )
    assert text.split("\n") == [
        "EXECUTION     SINK     STATUS   ATTEMPTS  UPDATED  LAST ERROR",
        "ws-main/ex-1  chatops  pending  3         42s ago  HTTP 503",
        "ws-main/ex-1  log      dead     3         10m ago",
    ]


def test_a_long_last_error_is_cut_to_80_characters_and_marked() -> None:
    error = "HTTP 400 from receiver: " + "x" * 100 + "\nsecond line"
    header, line = delivery_table([row("siem", "dead", error, 1)], NOW_S).split("\n")
    shown = line[header.index("LAST ERROR") :]
    assert len(shown) == 80
    assert shown.startswith("HTTP 400 from receiver: xxx")
    assert shown.endswith("...")


def test_the_json_form_keeps_the_whole_error_and_a_next_attempt_only_while_pending() -> None:
    error = "e" * 200
    pending = delivery_dict(row("chatops", "pending", error, 1))
    assert pending["last_error"] == error
    assert pending["next_attempt_at"] is not None
    assert (pending["workspace_id"], pending["execution_id"]) == ("ws-main", "ex-1")
    assert delivery_dict(row("chatops", "dead", error, 1))["next_attempt_at"] is None


def test_on_a_narrow_terminal_the_last_error_gives_way_with_an_ellipsis() -> None:
    error = "HTTP 503 from https://hooks.example.net:443: service unavailable, retrying"
    lines = delivery_table([row("chatops", "pending", error, 42)], NOW_S, width=80).split("\n")
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("ws-main/ex-1  chatops  pending")
    assert lines[1].endswith("...")
