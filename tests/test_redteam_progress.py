"""A running map task's progress (tests/test_live_progress.py), attacked: the splits as a
broker holds them once submitted, a split of many files, a job that ends while a task
still reads."""

from __future__ import annotations

import time

import msgpack
import pytest

from pymapreduce.broker import submission
from pymapreduce.broker.tasks import JobState
from pymapreduce.observe.snapshot import job_row
from pymapreduce.patterns import protocol as P

from .test_ledger import T0, map_output, report, tasks_of
from .test_live_progress import SPLIT, progress, read


def add_submitted_job(ledger, ranges: list[list]) -> JobState:
    """A job of one map task per split of ``ranges``, its splits as a SUBMIT's reach the
    broker (read_splits: the ranges packed)."""
    blob = msgpack.packb([["files", r] for r in ranges], use_bin_type=True)
    splits = submission.read_splits(blob, ())
    job = JobState("j", "j", b"code", splits, 1, False, b"client", T0,
                   options={"reducers": 1, "map_only": False})
    ledger.jobs["j"] = job
    ledger.scheduler.add(job)
    return job


def test_a_submitted_split_s_bytes_bound_its_progress_and_give_the_time_left(ledger):
    job = add_submitted_job(ledger, [[["/data/in.txt", 0, SPLIT]],
                                     [["/data/in.txt", SPLIT, 2 * SPLIT]]])
    assert job.split_bytes(0) == SPLIT and job.input_bytes() == 2 * SPLIT
    ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    # the holder says it read far more than its split: its split's bytes count
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 10, progress(key, 7, 1 << 62))
    assert read(job) == (7, SPLIT)
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 11, progress(key, 7, 500))
    assert job_row(job, T0 + 10)["eta"] == 30.0  # 500 of 2000 bytes in 10 s


def test_a_split_of_many_files_is_sized_once_not_at_every_beat(ledger, monkeypatch):
    from pymapreduce.broker import tasks

    files = 1000
    job = add_submitted_job(ledger, [[[f"/data/{i}", 0, 10] for i in range(files)]])
    ledger.register(b"A", "", {"credit": 1}, T0)
    ledger.dispatch(T0)
    [key] = tasks_of(ledger)[b"A"]
    unpacked = []

    def counted(split):
        unpacked.append(split)
        return submission.file_ranges(split)

    monkeypatch.setattr(tasks, "file_ranges", counted)
    for i in range(50):  # the holder's beats, each handled (a second apart)
        ledger.heartbeat(b"A/hb", "", b"A", T0 + 1 + i, progress(key, i, i))
    assert read(job) == (49, 49)
    assert job_row(job, T0 + 50)["eta"] is not None
    assert len(unpacked) <= 1, f"the split's ranges were read {len(unpacked)} times"


@pytest.mark.parametrize("end", ["cancelled", "failed"])
def test_a_job_that_ends_counts_only_its_committed_tasks(ledger, end):
    job = add_submitted_job(ledger, [[["/data/in.txt", i * SPLIT, (i + 1) * SPLIT]]
                                     for i in range(3)])
    workers = {r: ledger.register(r, "", {"credit": 1}, T0) for r in (b"A", b"B", b"C")}
    ledger.dispatch(T0)
    held = tasks_of(ledger)
    [reading], [failing], [done] = held[b"A"], held[b"B"], held[b"C"]
    ledger.done(workers[b"C"], [report(done, {"records": 3, "bytes": SPLIT})],
                tuple(map_output()))
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 1, progress(reading, 30, 600))
    assert read(job) == (3 + 30, SPLIT + 600)
    if end == "cancelled":
        job.finish(P.JOB_CANCELLED, {"message": "cancelled"})
        ledger.end_job(job)
    else:  # another task fails twice in a way no retry can mend, while A still reads
        route = b"B"
        for _ in range(2):
            ledger.failed(workers[route], {**failing.body(), "error": "LineTooLong: ...",
                                           "final": True})
            ledger.dispatch(T0)
            route, [failing] = next(iter(tasks_of(ledger).items()), (route, [failing]))
    assert job.state == end
    # the status a client reads and the dashboard's row: the committed counts, exactly
    assert read(job) == (3, SPLIT)
    row = job_row(job, T0 + 2)
    assert (row["records"], row["bytes"]) == (3, SPLIT)
    # a beat for the ended job's attempt counts for nothing
    ledger.heartbeat(b"A/hb", "", b"A", T0 + 3, progress(reading, 40, 900))
    assert read(job) == (3, SPLIT)


def test_a_retry_that_skips_a_bad_record_never_shows_more_records_than_it_commits(
        daemons, tmp_path):
    """End to end: the first line of one map task's split fails ``map`` twice, so its
    third attempt leaves it out; that attempt, slow, shows its progress before it commits,
    and never more records than its commit counts (its statistics leave the bad one out)."""
    from pymapreduce import Job

    from .conftest import FAST, wait_workers
    from .test_live_progress import watch_one_map

    lines = 50
    path = tmp_path / "in.txt"
    path.write_text("poison\n" + "".join(f"line {i}\n" for i in range(1, lines)))

    class Poisoned(Job):
        skip_bad_records = True

        def map(self, key, line):
            if line == "poison":
                raise ValueError("cannot digest it")
            time.sleep(0.05)  # 2.5 s in all: a dozen heartbeats
            return None

    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    seen, final = watch_one_map(address, Poisoned(), str(path))
    seen = [records for records, _ in seen]
    assert final["records"] == lines - 1 and len(final["skipped"]) == 1
    assert any(seen), f"no progress seen before the task committed: {seen[-5:]}"
    assert max(seen) <= lines - 1, seen


def test_a_map_task_that_raises_or_is_stopped_mid_read_lets_its_reader_go(tmp_path):
    """The next attempt in the same process never reports the last one's counts: the
    reader of a task that raised, or that was stopped (TaskAbandoned, SIGUSR1's), is let
    go; and its counts are the records and bytes of what it read (a compressed file's
    bytes are not its split's: none counted)."""
    import gzip

    from pymapreduce import Job
    from pymapreduce.workers import runner
    from pymapreduce.workers.tasks import TaskAbandoned

    path = tmp_path / "in.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    packed = tmp_path / "in.txt.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    seen = []

    class Breaks(Job):
        def __init__(self, error):
            self.error = error

        def map(self, key, line):
            reader = runner.READING[0]
            seen.append((reader.count, reader.read))
            if line == "line 50" and self.error is not None:
                raise self.error
            return None

    for error in (ValueError("bad"), TaskAbandoned("the broker abandoned this task")):
        with pytest.raises((runner.TaskError, TaskAbandoned)):
            runner.run_task(Breaks(error), "map",
                            ["files", [[str(path), 0, path.stat().st_size]]], [], 1, True)
        assert runner.READING[0] is None
        assert seen[-1] == (100, path.stat().st_size)
    seen.clear()
    out, stats = runner.run_task(Breaks(None), "map", ["files", [[str(packed), 0, -1]]],
                                 [], 1, True)
    assert runner.READING[0] is None and stats["records"] == 100
    assert seen[-1] == (100, 0)
