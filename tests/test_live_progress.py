"""A running map task's progress: its worker's heartbeats carry the records and bytes its
task has read so far, and the job's status counts them before the task commits.

The broker counts a heartbeat's progress only for an attempt the beating worker holds, of a
task still running, with counts that are 64-bit non-negative integers; it never counts more
bytes than the split has, nor a task twice when a backup runs beside it."""

from __future__ import annotations

import time

import pytest

from pymapreduce.broker.tasks import JobState
from pymapreduce.patterns import protocol as P

from .test_ledger import T0, map_output, report, tasks_of

SPLIT = 1000  # bytes of each file split below


def add_file_job(ledger, maps: int = 2) -> JobState:
    splits = [["files", [["/data/in.txt", i * SPLIT, (i + 1) * SPLIT]]] for i in range(maps)]
    job = JobState("j", "j", b"code", splits, 1, False, b"client", T0,
                   options={"reducers": 1, "map_only": False})
    ledger.jobs["j"] = job
    ledger.scheduler.add(job)
    return job


def progress(key, records, nbytes) -> list:
    return [*key, records, nbytes]


def read(job) -> tuple[int, int]:
    status = job.status(T0)
    return status["records"], status["bytes"]


def test_a_running_task_s_progress_counts_until_it_commits_and_then_its_report_does(ledger):
    job = add_file_job(ledger, maps=1)
    w = ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    assert read(job) == (0, 0)
    assert ledger.heartbeat(b"A/hb", "", b"A", T0 + 1, progress(key, 10, 300)) == P.HEARTBEAT
    assert read(job) == (10, 300)
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 2, progress(key, 25, 700))
    assert read(job) == (25, 700)
    # the split's bytes at most, as its commit counts them
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 3, progress(key, 40, 5 * SPLIT))
    assert read(job) == (40, SPLIT)
    ledger.done(w, [report(key, {"records": 42, "bytes": SPLIT})], tuple(map_output()))
    assert job.done_maps == 1 and read(job) == (42, SPLIT)
    # a beat that crossed the report counts for nothing more
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 4, progress(key, 41, SPLIT))
    assert read(job) == (42, SPLIT)


@pytest.mark.parametrize("bad", [
    lambda key: progress(key, -1, 10),  # negative
    lambda key: progress(key, 1 << 63, 10),  # past int64
    lambda key: progress(key, 1, 1.5),  # not an int
    lambda key: progress(key, True, 10),  # a bool is not a count
    lambda key: [*key, 1],  # too short
    lambda key: [*key, 1, 2, 3],  # too long
    lambda key: {"records": 1},  # not a list
    lambda key: progress([key[0], "reduce", key[2], key[3]], 1, 1),  # not a map attempt
    lambda key: progress([key[0], key[1], key[2] + 7, key[3]], 1, 1),  # no such task
    lambda key: progress([key[0], key[1], key[2], key[3] + 1], 1, 1),  # no such attempt
    lambda key: progress(["other", *key[1:]], 1, 1),  # no such job
    lambda key: progress([[key[0]], *key[1:]], 1, 1),  # an unhashable job
])
def test_malformed_or_foreign_progress_is_ignored_and_the_beat_still_counts(ledger, bad):
    job = add_file_job(ledger, maps=1)
    w = ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    assert ledger.heartbeat(b"A/hb", "", b"A", T0 + 0.5, bad(key)) == P.HEARTBEAT
    assert w.last_seen == T0 + 0.5 and read(job) == (0, 0)


def test_only_the_holder_s_progress_counts(ledger):
    job, held = two_holders(ledger)
    [key_a], [key_b] = held[b"A"], held[b"B"]
    ledger.heartbeat(b"B/hb", "", b"B", T0 + 1, progress(key_a, 99, 999))  # A's attempt
    assert read(job) == (0, 0)
    ledger.heartbeat(b"B/hb", "", b"A", T0 + 1, progress(key_a, 99, 999))  # not B's to say
    assert read(job) == (0, 0)
    ledger.heartbeat(b"B/hb", "", b"B", T0 + 2, progress(key_b, 5, 50))  # (its next beat)
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 2, progress(key_a, 7, 70))
    assert read(job) == (12, 120)


def test_a_backup_does_not_count_its_split_twice_and_a_lost_attempt_stops_counting(ledger):
    job = add_file_job(ledger, maps=2)
    a = ledger.register(b"A", "", {"credit": 1}, T0)
    b = ledger.register(b"B", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    [key_a], [key_b] = held[b"A"], held[b"B"]
    ledger.done(b, [report(key_b, {"records": 3, "bytes": SPLIT})], tuple(map_output()))
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 1, progress(key_a, 30, 600))
    job.maps[key_a[2]].started = T0 - 10.0  # A straggles: B gets a backup
    ledger.dispatch(T0 + 10.0)
    [backup] = tasks_of(ledger)[b"B"]
    assert backup[:3] == key_a[:3]
    ledger.heartbeat(b"B/hb", "", b"B", T0 + 11, progress(backup, 10, 200))  # behind A
    assert read(job) == (3 + 30, SPLIT + 600)
    ledger.heartbeat(b"B/hb", "", b"B", T0 + 12, progress(backup, 40, 800))  # past A
    assert read(job) == (3 + 40, SPLIT + 800)
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 12, progress(key_a, 35, 700))  # A, behind
    assert read(job) == (3 + 40, SPLIT + 800)
    ledger.purge(b, "test: B is lost")  # the backup goes: A's word counts again
    assert read(job) == (3, SPLIT)
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 13, progress(key_a, 36, 720))
    assert read(job) == (3 + 36, SPLIT + 720)
    assert a.running


def watch_one_map(address: str, job, path: str) -> tuple[list, dict]:
    """Run ``job`` as one map-only task over ``path``: the ``(records, bytes)`` its status
    showed while the task ran, and its final status."""
    from pymapreduce import Client, read_text

    with Client(address) as client:
        handle = client.submit(job, read_text(path, split_bytes=1 << 30), reducers=0)
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = handle.status()
            if status["state"] != "running":
                break
            if status["maps"][0] == 0:
                seen.append((status["records"], status["bytes"]))
            time.sleep(0.1)
        handle.wait(60)
        return seen, handle.status()


def two_holders(ledger, maps: int = 2) -> tuple[JobState, dict]:
    """A job of file splits, and a worker A and a worker B holding one map each: the
    job, and the attempts handed to each (route -> [AttemptKey])."""
    job = add_file_job(ledger, maps=maps)
    ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.register(b"B", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    return job, tasks_of(ledger)


def test_a_single_long_map_task_shows_its_progress_before_it_commits(daemons, tmp_path):
    """End to end: one map task over a file, slow enough to span a few heartbeats; the
    job's status shows records and bytes read while the task runs, and the exact totals
    after it commits."""
    from pymapreduce import Job

    from .conftest import FAST, wait_workers

    path = tmp_path / "in.txt"
    lines = 200_000
    with open(path, "w") as f:
        for i in range(lines):
            f.write(f"line {i} of the input\n")
    size = path.stat().st_size

    class Slow(Job):
        def map(self, key, line):
            if key % 2000 < 10:  # about a line in two hundred: 2 s in all
                time.sleep(0.002)
            return None

    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    seen, final = watch_one_map(address, Slow(), str(path))
    moving = [s for s in seen if s[0] > 0]
    assert moving, f"no progress seen before the task committed: {seen[-5:]}"
    # (counted a block of lines at a time: the last block's count may show before its
    # lines are all mapped, but never more than the split)
    assert all(0 < r <= lines and 0 < b <= size for r, b in moving)
    assert any(r < lines for r, _ in moving), moving
    assert moving == sorted(moving)  # one attempt: its counts only grow
    assert (final["records"], final["bytes"]) == (lines, size)


def test_before_a_first_task_is_done_the_time_left_comes_from_the_bytes_read(ledger):
    from pymapreduce.observe.snapshot import job_row

    job, held = two_holders(ledger)
    assert job.input_bytes() == 2 * SPLIT
    assert job_row(job, T0 + 10)["eta"] is None  # nothing read yet
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 10, progress(held[b"A"][0], 40, 300))
    ledger.heartbeat(b"B/hb", "", b"B", T0 + 10, progress(held[b"B"][0], 60, 200))
    row = job_row(job, T0 + 10)  # 500 of 2000 bytes in 10 s: 1500 more take 30 s
    assert (row["records"], row["bytes"], row["eta"]) == (100, 500, 30.0)
    mem = add_file_job(ledger, maps=1)
    mem.splits = [["mem", b""]]  # records in memory: no byte count to go by
    assert mem.input_bytes() is None


def test_a_map_run_again_for_a_lost_sink_does_not_show_its_records_twice(ledger):
    """A committed map that runs again to rebuild a lost sink's segments was counted at
    its first commit (and is not at its second): its attempt's reading is not counted on
    top (the job showed more records than it has, then went back when the map committed)."""
    from .test_sink_ledger import SINK_A, SINK_B, hand_out, run_maps, with_sinks

    with_sinks(ledger, SINK_A, SINK_B)
    job = add_file_job(ledger, maps=2)
    job.reducers, job.map_parts = 2, [[], []]
    w = ledger.register(b"W", "", {"credit": 8}, T0)
    run_maps(ledger, w, job)
    assert read(job) == (2, 0) and job.done_maps == 2
    ledger.lose_sink(ledger.sinks[b"sink1"], "test: killed")
    assert job.redone == {0, 1}
    again = [key for key, _ in hand_out(ledger, w, 3) if key.kind == "map"]
    assert len(again) == 2 and all(key in w.running for key in again)
    for key in again:
        ledger.heartbeat(b"W/hb", "", b"W", T0 + 1, progress(key, 1, 300))
    assert read(job) == (2, 0)
    ledger.done(w, [report(key, {"records": 1, "sunk": [0, 1]}, nblobs=0)
                    for key in again], ())
    assert read(job) == (2, 0)
