"""One replica among several sharing PostgreSQL: renew the lease, claim, rebalance, give back.

Every ``claim_every_s`` the replica claims free watches (up to its fair share
and its room), free pending deliveries and free discovery rules; every
``renew_s`` it renews its lease (one row), checks that it still owns what it
polls, and gives back what it holds beyond its fair share so a replica that
joins gets work at once. A lease that ran out (the process froze, the
database was unreachable for a whole lease) means everything is dropped here
and the replica rejoins under a new id: another replica may have taken it
all over, and its commits are fenced anyway. docs/replicas.md has the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import structlog
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from watcher import memtrim
from watcher.config import Config
from watcher.config.shared import SharedState
from watcher.delivery import Outbox
from watcher.errors import StoreError
from watcher.metrics import Metrics
from watcher.models import ExecutionKey, WatchRow
from watcher.scheduler import Scheduler
from watcher.store.claims import Claims
from watcher.store.postgres import PostgresStore

log = structlog.get_logger("watcher.replica")

CLAIM_EVERY_S: Final = 1.0
DELIVERY_BATCH: Final = 500
DISCOVER_PREFIX: Final = "discover:"


class Replica:
    """This process's membership of the replica set. ``run()`` works until cancelled."""

    def __init__(
        self,
        store: PostgresStore,
        shared: SharedState,
        *,
        scheduler: Scheduler,
        outbox: Outbox,
        rules: Callable[[], list[str]],
        room: Callable[[], int],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert store.claims is not None
        self.store = store
        self.claims: Claims = store.claims
        self.shared = shared
        self.scheduler = scheduler
        self.outbox = outbox
        self._rules = rules
        self._room = room
        self._clock = clock
        self._claim_every_s = min(CLAIM_EVERY_S, shared.renew_s)
        self._renewed_at = clock()  # the last renewal the database confirmed
        self._renew_due = 0.0
        self._share = shared.claim_batch  # what to hold at most, from the last census
        self._wake = asyncio.Event()
        self.unreachable: str | None = None  # why the database cannot be reached, if so
        self.lease_losses = 0
        self.claim_seconds = Histogram(
            "blink_watcher_claim_seconds",
            "Time one claim round takes (watches, deliveries and rules), in seconds.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=metrics.registry,
        )
        metrics.registry.register(_ReplicaCollector(self))
        self.claims.held = scheduler.hold_claims()

    async def join(self) -> None:
        """Register this replica (at start, before anything is claimed)."""
        await self.store.using(self.claims.register)
        self._renewed_at = self._clock()
        log.info("replica.joined", replica=self.claims.me, lease_s=self.shared.lease_s)

    async def start(self, executions: Sequence[ExecutionKey]) -> dict[str, int]:
        """Join, store the config's executions, claim a first batch; counts for the log.

        The rest of the share is claimed by ``run`` right after, a batch at a
        time, while the first ones are already being polled: READY does not
        wait for 100,000 claims.
        """
        await self.join()
        synced = await sync_config(self.store, self.scheduler, executions)
        await self._renew()
        self._renew_due = self._clock() + self.shared.renew_s
        await self.store.using(lambda conn: self._claim(conn, batches=1))
        return {"watching": len(self.scheduler), **synced}

    def nudge(self) -> None:
        """Claim now rather than at the next round (new watches were stored)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                # A database that stops answering (a partition, not a refusal) must not
                # hold the round past the lease: that is when the others take over.
                async with asyncio.timeout(self.shared.lease_s / 2):
                    await self.round()
            except StoreError as exc:
                self._cut_off(str(exc))
            except TimeoutError:
                self._cut_off(f"no answer within {self.shared.lease_s / 2:g}s")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._claim_every_s)

    async def round(self) -> None:
        """One round: renew when due, then claim; StoreError when the database fails."""
        now = self._clock()
        if now >= self._renew_due:
            await self._renew()
            self._renew_due = now + self.shared.renew_s
        started = time.perf_counter()
        await self.store.using(self._claim)
        self.claim_seconds.observe(time.perf_counter() - started)
        lost = self.claims.lost_deliveries
        if lost:
            self.claims.lost_deliveries = set()
            self.outbox.drop(lost)
        if self.unreachable is not None:
            log.info("replica.database_back", replica=self.claims.me)
            self.unreachable = None

    async def _renew(self) -> None:
        if await self.store.using(self.claims.renew):
            self._renewed_at = self._clock()
            await self.store.using(self._reconcile)
            return
        await self._lease_lost("the lease ran out before it was renewed")

    async def _lease_lost(self, why: str) -> None:
        held = self._drop_everything()
        self.lease_losses += 1
        old = self.claims.me
        await self.store.using(self.claims.rejoin)
        self._renewed_at = self._clock()
        log.error(
            "replica.lease_lost",
            replica=old,
            rejoined_as=self.claims.me,
            reason=why,
            dropped_watches=held,
            action="other replicas took over or will; claiming afresh",
        )

    def _drop_everything(self) -> int:
        keys = self.scheduler.watched_keys()
        for key in keys:
            self.scheduler.drop(key)
        self.outbox.drop(self.outbox.pending_keys())
        self.claims.held.clear()
        self.claims.rules.clear()
        return len(keys)

    def _cut_off(self, reason: str) -> None:
        """The database failed: poll on while the lease may still hold, then stop."""
        if self.unreachable is None:
            log.error("replica.database_unreachable", reason=reason, action="retrying every second")
        self.unreachable = reason
        if self._clock() - self._renewed_at > self.shared.lease_s and len(self.scheduler):
            # Past the lease other replicas may poll these: stop, so the API is not
            # asked twice and no result waits on a replica that cannot store it.
            dropped = self._drop_everything()
            log.error(
                "replica.lease_expired",
                dropped_watches=dropped,
                reason="no renewal for a whole lease",
                action="rejoining once the database answers",
            )
            self._renew_due = 0.0

    async def _reconcile(self, conn: Any) -> None:
        """After a renewal: still own what is polled here; hold no more than a fair share."""
        claims = self.claims
        total, live, owned = await claims.census(conn)
        if owned != len(claims.held):
            in_db = await claims.owned(conn)
            for key in [k for k in claims.held if k not in in_db]:
                # Removed (a reload elsewhere, DELETE /v1/watches) or taken over.
                claims.held.pop(key, None)
                self.scheduler.drop(key)
            strays = [k for k in in_db if k not in claims.held]
            if strays:
                await claims.give_back(conn, strays)
        fair = math.ceil(total / max(live, 1))
        slack = max(8, fair // 20)
        self._share = fair + slack
        extra = len(claims.held) - (fair + 2 * slack)
        if extra > 0:
            keys = list(claims.held)[-(len(claims.held) - self._share) :]
            await claims.give_back(conn, keys)
            for key in keys:
                self.scheduler.drop(key)
            log.info("replica.rebalanced", gave_back=len(keys), holding=len(claims.held))
        await claims.forget_gone(conn)

    async def _claim(self, conn: Any, batches: int = 1_000_000) -> None:
        claims = self.claims
        batch = self.shared.claim_batch
        claimed = 0
        for _ in range(batches):  # bounded batches, until the share is held or none is free
            limit = min(batch, self._room(), self._share - len(claims.held))
            rows = await claims.claim(conn, limit)
            for key, state, polls, first_seen, source in rows:
                if source.startswith(DISCOVER_PREFIX):
                    self.scheduler.discovered_by[key] = source.removeprefix(DISCOVER_PREFIX)
                self.scheduler.resume(key, state, polls, first_seen)
            claimed += len(rows)
            if len(rows) < batch:
                break
        if claimed > batch:
            memtrim.trim()  # the driver's rows are garbage now: give their pages back
        sinks = [sink.name for sink in self.outbox.current_sinks()]
        deliveries = await claims.claim_deliveries(conn, DELIVERY_BATCH, sinks)
        if deliveries:
            self.outbox.restore(deliveries)
        await claims.claim_rules(conn, self._rules())

    async def leave(self) -> None:
        """Give every claim back (a clean stop): other replicas take them over at once."""
        try:
            released = await self.store.using(self.claims.release)
        except StoreError as exc:
            log.warning("replica.release_failed", reason=str(exc), effect="taken over after lease")
            return
        log.info("replica.left", replica=self.claims.me, released_watches=released)


async def sync_config(
    store: PostgresStore, scheduler: Scheduler, executions: Sequence[ExecutionKey]
) -> dict[str, int]:
    """Make the shared watch list match the config's executions; counts for the log.

    New ones are stored (and held here, so polled at once); stored ones keep
    their progress and their holder; config-listed ones the config no longer
    has are removed for every replica (their holders notice at renewal). The
    list's digest is stored with it: a replica starting with the list the
    database already has (the usual restart) skips all of this.
    """
    digest = list_digest(executions)
    if await store.setting(LISTED) == digest:
        return {"config_unchanged": 1}
    reported = await store.reported_keys(executions)
    now = time.time()
    rows = [WatchRow(k, None, 0, now, now) for k in executions if k not in reported]
    await store.add_watches(rows, "config")
    scheduler.add_many(list(executions), {})  # only those this replica holds
    gone = await store.drop_unlisted(executions)
    for key in gone:
        scheduler.drop(key)
    await store.set_setting(LISTED, digest)
    return {"already_finished": len(reported), "removed_from_config": len(gone)}


def listed_in_database(config: Config) -> Config:
    """``config`` without its execution list, once the shared database holds it.

    The watches this replica polls come from the database, with keys of their
    own; keeping the parsed list as well would cost about 120 bytes per
    execution for nothing (a reload reads the file again).
    """
    return dataclasses.replace(config, executions=())


LISTED: Final = "config_executions_sha256"


def list_digest(executions: Sequence[ExecutionKey]) -> str:
    """The config's execution list, order aside, as one SHA-256."""
    h = hashlib.sha256()
    for ws, ex in sorted(executions):
        h.update(f"{ws}/{ex}\n".encode())
    return h.hexdigest()


class _ReplicaCollector:
    """Leases held and takeovers, read at scrape time."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def collect(self) -> Iterator[Metric]:
        claims = self._replica.claims
        held = GaugeMetricFamily(
            "blink_watcher_leases_held", "Claims this replica holds, by kind.", labels=["kind"]
        )
        held.add_metric(["watches"], len(claims.held))
        held.add_metric(["deliveries"], self._replica.outbox.outstanding)
        held.add_metric(["rules"], len(claims.rules))
        yield held
        taken = CounterMetricFamily(
            "blink_watcher_lease_takeovers",
            "Watches and deliveries this replica took over from another (or from itself).",
        )
        taken.add_metric([], claims.takeovers)
        yield taken
        lost = CounterMetricFamily(
            "blink_watcher_lease_losses",
            "Times this replica's lease ran out and it dropped everything it held.",
        )
        lost.add_metric([], self._replica.lease_losses)
        yield lost
