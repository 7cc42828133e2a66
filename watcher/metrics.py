"""Prometheus metrics: one registry per service, every name ``blink_watcher_*``."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

API_OUTCOMES = ("ok", "transient", "auth", "not_found", "invalid")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_RESULTS = ("delivered", "retried", "dead")


class Metrics:
    """The counters the daemon moves; gauges read live values at scrape time."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.watches = Gauge(
            "blink_watcher_watches", "Watched executions by phase.", ["phase"], registry=r
        )
        self.events = Counter(
            "blink_watcher_events",
            "Events produced, by type and final state.",
            ["event", "state"],
            registry=r,
        )
        # Requests are counted per poll, so they are plain integers on the event
        # loop, turned into metrics only when scraped: prometheus_client's
        # Counter and Histogram take a lock on every update (2% of a poll's CPU).
        self._api_counts = dict.fromkeys(API_OUTCOMES, 0)
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        r.register(_ApiCollector(self))
        self.api_retries = Counter(
            "blink_watcher_api_retries", "Retries of transient API failures.", registry=r
        )
        self.rate_limit = Gauge(
            "blink_watcher_api_rate_limit",
            "Effective API request rate limit (requests/s, 0 = unlimited).",
            registry=r,
        )
        self.last_api_success = Gauge(
            "blink_watcher_api_last_success_timestamp_seconds",
            "Unix time of the last successful API response.",
            registry=r,
        )
        self.deliveries = Counter(
            "blink_watcher_deliveries",
            "Delivery attempts by sink and result.",
            ["sink", "result"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "blink_watcher_outbox_depth", "Deliveries not yet delivered or dead.", registry=r
        )
        self.oldest_pending = Gauge(
            "blink_watcher_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending delivery.",
            registry=r,
        )

        self.reloads = Counter(
            "blink_watcher_config_reloads",
            "Configuration reloads by result (ok, failed: the running configuration was kept).",
            ["result"],
            registry=r,
        )

        self.dead_letters = Gauge(
            "blink_watcher_dead_letters",
            "Dead-lettered deliveries kept in the state store, by sink (alert on > 0).",
            ["sink"],
            registry=r,
        )
        self._dead_sinks: set[str] = set()
        # Label children, looked up once each: labels() costs microseconds per call,
        # and every event and delivery moves one of these.
        self._event_children: dict[tuple[str, str], Any] = {}
        self._delivery_children: dict[tuple[str, str], Any] = {}

        self.watch_api_requests = Counter(
            "blink_watcher_watch_api_requests",
            "Requests to the daemon's own watch API (/v1), by route and status.",
            ["route", "status"],
            registry=r,
        )

    def set_dead_letters(self, counts: dict[str, int]) -> None:
        """Set the gauge from the store's counts; a sink with none shows 0."""
        for sink in self._dead_sinks - counts.keys():  # sinks that had some before
            self.dead_letters.labels(sink).set(0)
        for sink, count in counts.items():
            self.dead_letters.labels(sink).set(count)
        self._dead_sinks |= counts.keys()

    def watch_api_request(self, route: str, status: int) -> None:
        self.watch_api_requests.labels(route, str(status)).inc()

    def reload(self, result: str) -> None:
        self.reloads.labels(result).inc()

    def api_response(self, outcome: str, seconds: float) -> None:
        self._api_counts[outcome] += 1
        self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds

    def delivery(self, sink: str, result: str) -> None:
        child = self._delivery_children.get((sink, result))
        if child is None:
            child = self._delivery_children[sink, result] = self.deliveries.labels(sink, result)
        child.inc()
        if result == "dead":
            self.dead_letters.labels(sink).inc()
            self._dead_sinks.add(sink)

    def event(self, event: str, state: str | None) -> None:
        labels = (event, state or "")
        child = self._event_children.get(labels)
        if child is None:
            if len(self._event_children) >= 1000:  # states come from the API: stay bounded
                self._event_children.clear()
            child = self._event_children[labels] = self.events.labels(*labels)
        child.inc()

    def bind(
        self,
        *,
        watching: Callable[[], float],
        finished: Callable[[], float],
        rate_limit: Callable[[], float],
        last_ok: Callable[[], float],
        outbox_depth: Callable[[], float],
        oldest_pending_age: Callable[[], float],
    ) -> None:
        """Connect the gauges to the live service state."""
        self.watches.labels("watching").set_function(watching)
        self.watches.labels("finished").set_function(finished)
        self.rate_limit.set_function(rate_limit)
        self.last_api_success.set_function(last_ok)
        self.outbox_depth.set_function(outbox_depth)
        self.oldest_pending.set_function(oldest_pending_age)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ApiCollector:
    """Exposes the per-poll counters at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        requests = CounterMetricFamily(
            "blink_watcher_api_requests", "Blink API requests by outcome.", labels=["outcome"]
        )
        for outcome, count in m._api_counts.items():
            requests.add_metric([outcome], count)
        yield requests
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), m._latency_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "blink_watcher_api_request_duration_seconds",
            "Blink API request latency.",
            buckets=buckets,
            sum_value=m._latency_sum,
        )
