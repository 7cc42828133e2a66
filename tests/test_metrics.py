"""Metrics counted on the event loop come out right at scrape time."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from watcher.metrics import Metrics


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_api_responses_are_counted_by_outcome_with_a_latency_histogram() -> None:
    metrics = Metrics()
    metrics.api_response("ok", 0.004)
    metrics.api_response("ok", 0.005)  # on a bucket's bound: counted in it (le)
    metrics.api_response("auth", 30.0)
    m = scrape(metrics)
    assert m[("blink_watcher_api_requests_total", (("outcome", "ok"),))] == 2
    assert m[("blink_watcher_api_requests_total", (("outcome", "auth"),))] == 1
    assert m[("blink_watcher_api_requests_total", (("outcome", "invalid"),))] == 0
    bucket = "blink_watcher_api_request_duration_seconds_bucket"
    assert m[(bucket, (("le", "0.005"),))] == 2
    assert m[(bucket, (("le", "10.0"),))] == 2
    assert m[(bucket, (("le", "+Inf"),))] == 3
    assert m[("blink_watcher_api_request_duration_seconds_count", ())] == 3
    assert abs(m[("blink_watcher_api_request_duration_seconds_sum", ())] - 30.009) < 1e-9


def test_no_created_series_are_exported() -> None:
    metrics = Metrics()
    metrics.event("execution.finished", "Completed")
    assert "_created" not in metrics.render().decode()
