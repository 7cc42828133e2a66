"""Per-rule discovery metrics, read from the running rules at scrape time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from watcher.discovery.rule import RuleRunner


class DiscoveryCollector:
    """``blink_watcher_discovery_*``: queries, found, errors, cursor age, waiting at the cap."""

    def __init__(
        self, runners: Callable[[], dict[str, RuleRunner]], wall: Callable[[], float] = time.time
    ) -> None:
        self._runners = runners
        self._wall = wall

    def collect(self) -> Iterator[Metric]:
        labels = ["rule"]
        queries = CounterMetricFamily(
            "blink_watcher_discovery_queries", "List queries sent, by rule.", labels=labels
        )
        found = CounterMetricFamily(
            "blink_watcher_discovery_found", "Executions a rule handed over.", labels=labels
        )
        errors = CounterMetricFamily(
            "blink_watcher_discovery_errors", "Failed or rejected list queries.", labels=labels
        )
        age = GaugeMetricFamily(
            "blink_watcher_discovery_cursor_age_seconds",
            "How far behind now a rule's cursor (newest created_at taken in) is.",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            "blink_watcher_discovery_waiting",
            "1 while a rule waits at watch.max_watches with its cursor in place.",
            labels=labels,
        )
        now = self._wall()
        for name, runner in sorted(self._runners().items()):
            state = runner.state
            queries.add_metric([name], state.queries)
            found.add_metric([name], state.found)
            errors.add_metric([name], state.errors)
            if state.cursor_ms is not None:
                age.add_metric([name], max(0.0, now - state.cursor_ms / 1000))
            waiting.add_metric([name], 1.0 if state.waiting else 0.0)
        yield from (queries, found, errors, age, waiting)
