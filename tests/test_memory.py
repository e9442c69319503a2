"""What the process tree holds: sent reduce segments leave the broker's memory but are
still served to a retried attempt, and a reduce task lets each segment go once decoded.
(How much memory that gives back is measured in benchmarks/bench_tree_memory.py.)"""

from __future__ import annotations

import glob
import os
import signal

from pymapreduce import Client, Job, run_sequential
from pymapreduce.broker.sink import MAP_MIN, Store
from pymapreduce.patterns.records import pack, unpack
from pymapreduce.workers.runner import run_task

from .conftest import FAST, wait_workers
from .jobs import WordCount, WordCountCombined, note

BIG = bytes(range(256)) * ((MAP_MIN // 256) + 16)  # over MAP_MIN: released to a file
SMALL = b"x" * 100  # under it: stays in memory


def test_released_outputs_leave_memory_and_are_served_again_from_a_file(tmp_path):
    store = Store(1 << 30, str(tmp_path / "spill"))
    store.put(("j", "map", 0, 0), BIG)
    store.put(("j", "map", 1, 0), SMALL)
    assert store.memory_bytes == len(BIG) + len(SMALL)
    store.release([("j", "map", 0, 0), ("j", "map", 1, 0), ("j", "map", 9, 0)])
    assert store.memory_bytes == len(BIG) + len(SMALL)  # until the messages have gone
    store.settle()
    assert store.memory_bytes == len(SMALL)  # the small one is not worth a file
    assert store.spilled_bytes == len(BIG)
    files = glob.glob(str(tmp_path / "spill" / "*" / "*.bin"))
    assert len(files) == 1
    assert ("j", "map", 0, 0) in store
    assert bytes(store.get(("j", "map", 0, 0))) == BIG  # a retried attempt's read
    assert bytes(store.get(("j", "map", 1, 0))) == SMALL
    store.release([("j", "map", 0, 0)])  # (released twice: nothing more happens)
    store.settle()
    assert len(glob.glob(str(tmp_path / "spill" / "*" / "*.bin"))) == 1
    store.discard_job("j")  # the job ended: its files go
    assert not glob.glob(str(tmp_path / "spill" / "*" / "*.bin"))
    assert store.memory_bytes == 0 and store.spilled_bytes == 0
    store.close()


def test_an_output_discarded_before_its_release_is_settled_leaves_no_file(tmp_path):
    store = Store(1 << 30, str(tmp_path / "spill"))
    store.put(("j", "map", 0, 0), BIG)
    store.release([("j", "map", 0, 0)])
    store.discard_job("j")  # the job failed before the broker settled
    store.settle()
    assert not glob.glob(str(tmp_path / "spill" / "*" / "*.bin"))
    assert ("j", "map", 0, 0) not in store and store.spilled_bytes == 0
    store.close()


def test_a_durable_output_released_keeps_its_own_file_and_crc(tmp_path):
    store = Store(1 << 30, str(tmp_path / "spill"))
    path = str(tmp_path / "state" / "m0-0")
    store.put(("j", "map", 0, 0), BIG, path)
    store.release([("j", "map", 0, 0)])
    store.settle()
    assert store.memory_bytes == 0
    assert not glob.glob(str(tmp_path / "spill" / "*" / "*.bin"))  # no second copy
    assert bytes(store.get(("j", "map", 0, 0))) == BIG
    with open(path, "r+b") as f:  # damaged after the release: an error, not a wrong answer
        f.write(b"\xff\xff")
    store._maps.clear()
    try:
        store.get(("j", "map", 0, 0))
    except Exception as exc:
        assert "damaged" in str(exc)
    else:
        raise AssertionError("a damaged file was served")
    store.close()


def test_a_reduce_task_lets_each_segment_go_once_decoded():
    segments = [[["a", "b"], [1, 2]], [["a", "c"], [3, 4]]]  # combined: a value per key
    blobs = [b"code", *(pack(s) for s in segments)]
    out, _ = run_task(WordCountCombined(), "reduce", ["segs", 1, 2], blobs, 1, False)
    keys, values = unpack(out[0])
    assert dict(zip(keys, values)) == {"a": 4, "b": 2, "c": 4}
    assert blobs == [b"code", b"", b""]  # the task's own slots, and only those


class ManyWords(Job):
    """Many distinct words per map task (segments well over MAP_MIN); the first reduce
    attempt to run notes what the broker's spill directory holds, then kills its process."""

    def __init__(self, marker: str, spill: str) -> None:
        self.marker = marker
        self.spill = spill

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def combine(self, word, counts):
        return sum(counts)

    def reduce(self, word, counts):
        try:  # the first call of all, in either reducer, and only that one
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            files = glob.glob(os.path.join(self.spill, "**", "*.bin"), recursive=True)
            os.write(fd, f"{len(files)} {sum(os.path.getsize(f) for f in files)}".encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        note(self.marker + ".runs", os.getpid())
        return sum(counts)


def test_a_reduce_killed_after_its_segments_left_broker_memory_reruns_exactly(
        daemons, tmp_path):
    spill = tmp_path / "spill"
    _, address = daemons.broker(*FAST, "--spill-dir", str(spill))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    records = [(i, " ".join(f"w{i}-{j}" for j in range(400)) + " common") for i in range(400)]
    marker = str(tmp_path / "killed")
    with Client(address) as client:
        result = client.submit(ManyWords(marker, str(spill)), records, map_tasks=4,
                               reducers=2).result(60)
    assert result == run_sequential(WordCount(), records)
    files, nbytes = map(int, open(marker).read().split())
    # the killed attempt ran while its segments were on disk, not in the broker's memory
    assert files >= 1 and nbytes >= MAP_MIN
    assert os.path.exists(marker + ".runs")  # the retried attempt ran to its end


def test_a_job_s_end_frees_its_outputs_without_going_over_other_jobs(tmp_path):
    """The store finds a job's keys by its id: freeing one job's outputs (or some of
    them) leaves every other job's as they were, in memory and in files."""
    store = Store(1 << 20, str(tmp_path / "spill"))
    try:
        for job in ("a", "b"):
            for i in range(3):
                store.put((job, "map", i, 0), b"m" * 100)
                store.put((job, "s", 1, i), b"s" * 100)
            store.put((job, "out", 0), b"o" * (2 << 20))  # over the budget: a file
        store.discard_job("a", lambda k: k[1] == "map")
        assert not any((("a", "map", i, 0) in store) for i in range(3))
        assert all((("a", "s", 1, i) in store) for i in range(3))
        assert ("a", "out", 0) in store
        store.discard_job("a")
        assert not any(k[0] == "a" for k in (*store._mem, *store._files))
        assert sorted(store._by_job) == ["b"] and len(store._by_job["b"]) == 7
        assert bytes(store.get(("b", "out", 0))) == b"o" * (2 << 20)
        store.discard_job("nobody")  # nothing of it: nothing happens
        store.discard(("b", "out", 0))
        assert len(store._by_job["b"]) == 6 and store.spilled_bytes == 0
    finally:
        store.close()
