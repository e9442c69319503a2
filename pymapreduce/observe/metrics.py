"""Prometheus metrics of a broker, computed when scraped (``/metrics``).

Nothing is updated on the hot path for the metrics' sake except two kinds of plain
integers: the event log's counters (bumped under the lock it takes anyway to append an
event) and :class:`Traffic`'s byte and message counts (one addition per message, on the
broker loop only). Gauges (tasks by state, queue depths, heartbeat lag, per-worker load)
are read from the latest snapshot at scrape time by a custom collector, in a registry of
the broker's own (no global state: two brokers in one process keep apart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from .events import DURATION_BUCKETS, EventLog
from .traffic import Traffic

# event-log counter name -> (metric name without _total, help, label name or "")
COUNTERS = {
    "jobs_submitted": ("pymapreduce_jobs_submitted", "Jobs accepted.", ""),
    "jobs_ended": ("pymapreduce_jobs_finished", "Jobs that ended, by final state.", "state"),
    "attempts": ("pymapreduce_task_attempts", "Task attempts handed to workers.", "kind"),
    "tasks_done": ("pymapreduce_tasks_completed", "Tasks committed.", "kind"),
    "attempts_failed": ("pymapreduce_task_attempts_failed",
                        "Attempts that raised (or whose report was malformed).", "kind"),
    "attempts_lost": ("pymapreduce_task_attempts_lost",
                      "Attempts lost with their worker.", "kind"),
    "attempts_abandoned": ("pymapreduce_task_attempts_abandoned",
                           "Attempts stopped: their job ended or a backup won.", "kind"),
    "retries": ("pymapreduce_task_retries", "Tasks queued again after a failed attempt.",
                "kind"),
    "backups": ("pymapreduce_backup_attempts", "Backup attempts for stragglers.", "kind"),
    "records": ("pymapreduce_records", "Input records read by committed tasks.", "kind"),
    "skipped_records": ("pymapreduce_skipped_records", "Bad records skipped.", ""),
    "workers_joined": ("pymapreduce_workers_joined", "Worker registrations.", ""),
    "workers_lost": ("pymapreduce_workers_lost", "Workers removed (lost or left).", ""),
}


class BrokerCollector:
    """Yields the broker's metrics from the event log, the traffic and a snapshot."""

    def __init__(self, events: EventLog, traffic: Traffic, snapshot: Callable[[], Any]) -> None:
        self.events = events
        self.traffic = traffic
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        counts, buckets, total = self.events.totals()
        families: dict[str, CounterMetricFamily] = {}
        for (name, label), value in sorted(counts.items()):
            spec = COUNTERS.get(name)
            if spec is None:
                continue
            metric, doc, label_name = spec
            fam = families.get(metric)
            if fam is None:
                fam = families[metric] = CounterMetricFamily(
                    metric, doc, labels=[label_name] if label_name else None)
            fam.add_metric([label] if label_name else [], value)
        for metric, doc, label_name in COUNTERS.values():  # present even when zero
            if metric not in families and not label_name:
                families[metric] = CounterMetricFamily(metric, doc, value=0)
        yield from families.values()
        t = self.traffic
        for name, doc, attr in (
                ("pymapreduce_received_bytes", "Bytes received, by plane.", "in"),
                ("pymapreduce_received_messages", "Messages received, by plane.", "msgs")):
            fam = CounterMetricFamily(name, doc, labels=["plane"])
            fam.add_metric(["control"], t.control_in if attr == "in" else t.msgs_control_in)
            fam.add_metric(["data"], t.data_in if attr == "in" else t.msgs_data_in)
            yield fam
        yield _one("pymapreduce_sent_bytes", "Blob bytes sent on the control plane "
                   "(tasks' inputs, fetched results).", "plane", "control", t.control_out)
        yield _one("pymapreduce_sent_messages", "Messages sent.", "plane", "control",
                   t.msgs_control_out)
        yield CounterMetricFamily("pymapreduce_events", "Events recorded.",
                                  value=self.events.seq)
        hist = HistogramMetricFamily("pymapreduce_job_duration_seconds",
                                     "Seconds from submission to the end, of finished jobs.")
        hist.add_metric([], [("+Inf" if b == float("inf") else repr(float(b)), c)
                             for b, c in zip(DURATION_BUCKETS, buckets)], total)
        yield hist
        yield from self._gauges(self.snapshot())

    @staticmethod
    def _gauges(snap: Any) -> Iterator[Any]:
        tasks = GaugeMetricFamily("pymapreduce_tasks", "Tasks of running jobs, by state "
                                  "(running: attempts out).", labels=["state"])
        for state, n in sorted(snap.tasks.items()):
            tasks.add_metric([state], n)
        yield tasks
        queue = GaugeMetricFamily("pymapreduce_queued_tasks", "Tasks waiting for a worker.",
                                  labels=["kind"])
        for kind, n in sorted(snap.pending.items()):
            queue.add_metric([kind], n)
        yield queue
        jobs = GaugeMetricFamily("pymapreduce_jobs", "Jobs held, by state.", labels=["state"])
        states: dict[str, int] = {}
        for row in snap.jobs.values():
            states[row["state"]] = states.get(row["state"], 0) + 1
        for state, n in sorted(states.items()):
            jobs.add_metric([state], n)
        yield jobs
        workers = snap.cluster.get("workers", [])
        yield GaugeMetricFamily("pymapreduce_workers", "Registered worker processes.",
                                value=len(workers))
        lag = GaugeMetricFamily("pymapreduce_worker_heartbeat_age_seconds",
                                "Seconds since each worker was last heard.", labels=["worker"])
        load = GaugeMetricFamily("pymapreduce_worker_tasks", "Attempts each worker holds.",
                                 labels=["worker"])
        done = CounterMetricFamily("pymapreduce_worker_tasks_completed",
                                   "Tasks each worker committed.", labels=["worker"])
        for w in workers:
            lag.add_metric([w["name"]], w["heartbeat_age"])
            load.add_metric([w["name"]], w["held"])
            done.add_metric([w["name"]], w["done"])
        yield lag
        yield load
        yield done
        broker = snap.cluster.get("broker", {})
        stored = GaugeMetricFamily("pymapreduce_stored_bytes", "Task outputs the broker "
                                   "holds, in memory or spilled to disk.", labels=["where"])
        stored.add_metric(["memory"], broker.get("stored_bytes", 0))
        stored.add_metric(["disk"], broker.get("spilled_bytes", 0))
        yield stored


def _one(name: str, doc: str, label: str, value_label: str, value: float) -> Any:
    fam = CounterMetricFamily(name, doc, labels=[label])
    fam.add_metric([value_label], value)
    return fam


def registry(events: EventLog, traffic: Traffic, snapshot: Callable[[], Any]
             ) -> CollectorRegistry:
    """A registry of the broker's own holding its collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(BrokerCollector(events, traffic, snapshot))
    return reg
