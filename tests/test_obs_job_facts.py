"""What the HTTP API says a job wrote and how its attempts ended, over a real cluster.

A job's ``bytes_out`` (``/api/jobs``, ``/api/jobs/ID``, ``/api/history``) is what it wrote
as its result: its last phase's bytes out, of its last step; not its map outputs (the
shuffle) added to them. Its failures tell an attempt that failed from one lost with its
worker, and count them as the engine counted them.
"""

from __future__ import annotations

from pymapreduce import Client, LocalCluster

from .jobs import Lengths, WordCount
from .test_dashboard import CountTwice
from .test_observe import get_json, wait_for


def _ended(http: str, job: str) -> dict:
    return wait_for(lambda: (row := get_json(f"{http}api/jobs/{job}")["job"])["state"]
                    == "succeeded" and row)


def _history(http: str, job: str) -> dict:
    return wait_for(lambda: next((r for r in get_json(f"{http}api/history")["jobs"]
                                  if r["id"] == job), None))


def _written_by_step(http: str, job: str) -> dict:
    """(step, kind) -> the bytes its committed attempts wrote, from the job's events
    (``done`` events after each ``phase`` event say which step they are of)."""
    events = get_json(f"{http}api/events?job={job}&since=0&format=json")["events"]
    step, out = 1, {}
    for e in events:
        if e["type"] == "phase":
            step = e["step"]
        elif e["type"] == "done":
            out[step, e["kind"]] = out.get((step, e["kind"]), 0) + e["bytes_out"]
    return out


def test_a_job_s_bytes_out_is_its_result_not_its_shuffle_too():
    records = [(i, f"w{i % 7} w{i % 3} x{i}") for i in range(60)]
    with LocalCluster(workers=2, http=True) as cluster, Client(cluster.address) as client:
        http = cluster.http_url
        counted = client.submit(WordCount(), records, map_tasks=4, reducers=2)
        lengths = client.submit(Lengths(), records, map_tasks=3)
        twice = client.submit(CountTwice(), records, map_tasks=4, reducers=2)
        for handle in (counted, lengths, twice):
            handle.result(60)

        # a job with a reduce phase: its reduce tasks' bytes, not the shuffle's too
        row = _ended(http, counted.job_id)
        flow = row["flow"]
        assert flow["map"]["bytes_out"] > 0 and flow["reduce"]["bytes_out"] > 0
        assert row["bytes_out"] == flow["reduce"]["bytes_out"]
        listed = {r["id"]: r for r in get_json(f"{http}api/jobs")["jobs"]}
        assert listed[counted.job_id]["bytes_out"] == row["bytes_out"]
        assert _history(http, counted.job_id)["bytes_out"] == row["bytes_out"]

        # a map-only job: its map tasks' output is its result
        row = _ended(http, lengths.job_id)
        assert row["bytes_out"] == row["flow"]["map"]["bytes_out"] > 0
        assert _history(http, lengths.job_id)["bytes_out"] == row["bytes_out"]

        # a job of two steps: its second step's reduce output; the flow sums both steps
        row = _ended(http, twice.job_id)
        written = _written_by_step(http, twice.job_id)
        assert written[2, "reduce"] > 0 and written[1, "reduce"] > 0
        assert row["bytes_out"] == written[2, "reduce"]
        assert row["flow"]["reduce"]["bytes_out"] == written[1, "reduce"] + written[2, "reduce"]
        assert _history(http, twice.job_id)["bytes_out"] == row["bytes_out"]
