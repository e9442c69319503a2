"""Bounded memory: map-side sort-and-spill, reduce-side streaming merge (docs/memory.md).

Kernel layer: tasks run in this process through the runner with a budget that is always
over (every check spills), so every job shape goes through runs on disk, and each result
must equal the sequential reference. Daemon layer: real workers with ``--memory``: a
job many times the budget is exact and each worker's peak RSS stays bounded; a hot key
larger than the budget reaches reduce; runs are removed after success and after a kill.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from pymapreduce import Job
from pymapreduce.errors import BadOutput, ConfigError
from pymapreduce.job import emits
from pymapreduce.kernels import run_sequential
from pymapreduce.patterns.records import pack, unpack
from pymapreduce.spill import Budget, ValuesStream, mapside, parse_size, reduceside
from pymapreduce.workers.runner import SPILL_COUNTER, TaskError, run_task

from .jobs import WordCount

pytestmark = pytest.mark.timeout(300)


class Tight(Budget):
    """A budget that is always over: every check spills."""

    def __init__(self, spill_dir: str, room: int = 0) -> None:
        super().__init__(1 << 30, spill_dir)
        self.limit = room  # the room a segment must fit to be decoded whole
        self.every = 4  # records or pairs between checks

    def over(self) -> bool:
        return True

    def used(self) -> int:
        return 0


@pytest.fixture
def spilly(monkeypatch):
    """A hot key's values checked every 4."""
    monkeypatch.setattr(reduceside, "CHECK_EVERY", 4)


def distributed(job: Job, records: list, reducers: int, maps: int, budget, counters=None):
    """Map tasks over ``maps`` splits, then each partition's reduce, all through the
    runner with ``budget``; the result as a job returns it."""
    size = -(-len(records) // maps)
    outs = []
    for m in range(maps):
        split = pack(records[m * size:(m + 1) * size])
        out, stats = run_task(job, "map", ["mem", 0], [split], reducers, False, budget=budget)
        outs.append(out)
        _add(counters, stats)
    keys, values = [], []
    for r in range(reducers):
        blobs = [o[r] for o in outs if o[r]]
        out, stats = run_task(job, "reduce", ["segs", 0, len(blobs)], blobs, reducers, False,
                              budget=budget)
        _add(counters, stats)
        if out[0]:
            k, v = unpack(out[0], allow_pickle=True)
            keys += k
            values += v
    pairs = list(zip(keys, values))
    return pairs if emits(job) else dict(pairs)


def _add(counters, stats):
    if counters is not None:
        for name, n in stats.get("counters", {}).items():
            counters[name] = counters.get(name, 0) + n


def words(n: int, vocabulary: int = 300, seed: int = 1) -> list:
    rng = random.Random(seed)
    return [(i, " ".join(f"w{rng.randrange(vocabulary)}" for _ in range(8)))
            for i in range(n)]


class Combined(WordCount):
    def combine(self, word, counts):
        self.count("combines")
        return sum(counts)


class Ordered(WordCount):
    """Values in order (no combiner): the reduce sees map-task then input order."""

    def map(self, key, line):
        for word in line.split()[:2]:
            yield word, key

    def reduce(self, word, keys):
        return list(keys)


class Secondary(Ordered):
    def value_key(self, v):
        return -v


class CombinedSecondary(Secondary):
    """A combiner that sees its values sorted by value_key (largest first) and keeps the
    first; reduce checks the order it is given too."""

    def combine(self, word, keys):
        keys = list(keys)
        assert keys == sorted(keys, reverse=True)
        return keys[0]

    def reduce(self, word, keys):
        keys = list(keys)
        assert keys == sorted(keys, reverse=True)
        return keys[0]


class ListKeys(WordCount):
    def map(self, key, line):
        a, b = line.split()[:2]
        yield [a, [b]], 1


class Mixed(WordCount):
    """Keys of mixed types: ints, strs, None, tuples holding both."""

    def map(self, key, line):
        w = line.split()[0]
        yield (key % 7 if key % 3 else w), 1
        yield (None if key % 5 == 0 else (key % 4, w)), 1


class Sort(Job):
    total_order = True

    def map(self, key, line):
        yield line.split()[1], key


class SortReduce(Sort):
    def reduce(self, k, vs):
        yield k, sorted(vs)


class Emitting(WordCount):
    def reduce(self, word, counts):
        yield word, sum(counts)
        yield word + "!", 1


def _ordered(job: Job, records: list, reducers: int) -> Job:
    from pymapreduce.sampling import cut_boundaries

    keys = sorted({k for r in records for k, _ in job.map(*r)})
    job.__dict__["_pmr_bounds"] = cut_boundaries(type(job).__name__, keys, reducers)
    return job


@pytest.mark.parametrize("room", [0, 1 << 40], ids=["streamed", "decoded-whole"])
@pytest.mark.parametrize("make", [WordCount, Combined, Ordered, Secondary, CombinedSecondary,
                                  ListKeys, Mixed, Emitting])
def test_spilled_jobs_equal_the_reference(tmp_path, spilly, make, room):
    records = words(600)
    job = make()
    expected = run_sequential(make(), records)
    got = distributed(job, records, reducers=3, maps=4, budget=Tight(str(tmp_path), room))
    if isinstance(got, list):  # (pairs of 3 partitions, one after the other)
        assert sorted(got) == sorted(expected)
    else:
        assert got == expected


@pytest.mark.parametrize("room", [0, 1 << 40], ids=["streamed", "decoded-whole"])
@pytest.mark.parametrize("make", [Sort, SortReduce])
def test_total_order_spilled_is_sorted_and_exact(tmp_path, spilly, make, room):
    records = words(500, vocabulary=5000)
    job = _ordered(make(), records, 3)
    expected = run_sequential(_ordered(make(), records, 3), records)
    got = distributed(job, records, reducers=3, maps=4, budget=Tight(str(tmp_path), room))
    assert got == expected
    keys = [k for k, _ in got] if isinstance(got, list) else list(got)
    assert keys == sorted(keys)


def test_combiner_runs_on_each_spill(tmp_path, spilly):
    records = words(400, vocabulary=20)
    counters: dict = {}
    got = distributed(Combined(), records, 2, 1, Tight(str(tmp_path)), counters)
    assert got == run_sequential(WordCount(), records)
    # one map task spilled many runs, each combined: the combiner ran far more often than
    # the 20 keys' one combine each it would run with no spill
    assert counters[SPILL_COUNTER] >= 10
    assert counters["combines"] > 20 * 5


def test_task_files_are_removed_after_success_and_failure(tmp_path, spilly):
    budget = Tight(str(tmp_path))
    distributed(WordCount(), words(300), 2, 2, budget)
    assert os.listdir(budget.dir) == []  # (the process's directory stays, empty)

    class Fails(WordCount):
        def reduce(self, word, counts):
            raise RuntimeError("boom")

    with pytest.raises(TaskError):
        distributed(Fails(), words(300), 2, 2, budget)
    assert os.listdir(budget.dir) == []


class HotKey(Job):
    """One key takes every value; reduce reads them once."""

    def map(self, key, line):
        yield "hot", len(line)
        yield f"cold{key % 1000}", 1

    def reduce(self, key, values):
        kind = "stream" if isinstance(values, ValuesStream) else type(values).__name__
        return [kind, sum(values)]


def test_hot_key_reaches_reduce_as_a_stream(tmp_path, spilly):
    records = words(2000)
    got = distributed(HotKey(), records, 2, 3, Tight(str(tmp_path)))
    total = sum(len(line) for _, line in records)
    assert got["hot"] == ["stream", total]
    assert got["cold0"] == ["list", 2]  # a key that fits: a list, as always


def test_hot_key_values_not_read_are_skipped(tmp_path, spilly):
    class First(HotKey):
        def reduce(self, key, values):
            return next(iter(values))

    records = words(500)
    got = distributed(First(), records, 1, 2, Tight(str(tmp_path)))
    assert got["hot"] == len(records[0][1]) and got["cold1"] == 1


def test_keys_that_do_not_compare_fail_clearly(tmp_path, spilly):
    class Thing:
        def __init__(self, n):
            self.n = n

        def __eq__(self, other):
            return isinstance(other, Thing) and other.n == self.n

        def __hash__(self):
            return self.n

    class Objects(WordCount):
        def map(self, key, line):
            yield Thing(key % 50), 1

    with pytest.raises(TaskError) as info:
        distributed(Objects(), words(300), 1, 1, Tight(str(tmp_path)))
    assert isinstance(info.value.cause, BadOutput)
    assert "memory budget" in str(info.value.cause)


def test_sizes():
    assert parse_size("256MB") == 256 * 10**6
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("300m") == 300 * 10**6
    assert parse_size(64 << 20) == 64 << 20
    for bad in ("lots", "12 parsecs", "1KB", True, "-5MB"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_fitting_task_output_is_unchanged(tmp_path):
    """Under a budget it does not reach, a map task's output is byte for byte today's."""
    records = pack(words(300))
    for make in (WordCount, Combined, Secondary):
        plain, _ = run_task(make(), "map", ["mem", 0], [records], 3, False)
        budgeted, _ = run_task(make(), "map", ["mem", 0], [records], 3, False,
                               budget=Budget(1 << 30, str(tmp_path)))
        assert budgeted == plain


# -- real daemons -------------------------------------------------------------------------

def _wait_file(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


def _process_dir(spill, pid: int):
    """A worker process's spill directory: in its daemon's private one, named by pid."""
    (root,) = os.listdir(spill)
    assert root.startswith("pymapreduce-spill-") and os.stat(spill / root).st_mode & 0o077 == 0
    return spill / root / str(pid)


def _peak(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class Distinct(Job):
    """Every line its own key: a map task's groups grow with its input."""

    def map(self, key, line):
        yield line, 1

    def reduce(self, line, counts):
        return sum(counts)


class Hot(Job):
    """Every line's value under one key."""

    def map(self, key, line):
        yield "hot", line

    def reduce(self, key, values):
        n = size = 0
        for v in values:
            n += 1
            size += len(v)
        return [type(values).__name__, n, size]


class SpillThenHang(Job):
    """Spills (big values under many keys), then its first map task to end hangs in
    map_final (a task to kill or cancel); the others, and a retry, go on."""

    marker = ""

    def map(self, key, line):
        for i in range(20):
            yield f"{key}-{i}", line + str(i)

    def map_final(self):
        if not os.path.exists(self.marker):
            note(self.marker, "spilled")
            time.sleep(600)
        return ()

    def reduce(self, key, values):
        return len(values)


def note(path, *words):
    with open(path, "a") as f:
        f.write(" ".join(map(str, words)) + "\n")


def _lines(path, n: int, width: int = 100, seed: int = 7) -> list:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    lines = ["".join(rng.choices(alphabet, k=width - 1)) for _ in range(n)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def _worker_pids(proc) -> list:
    from tests.conftest import children

    deadline = time.monotonic() + 20
    while not children(proc.pid):
        assert time.monotonic() < deadline, "no worker process"
        time.sleep(0.02)
    return children(proc.pid)


BUDGET = 48 << 20


def test_job_many_times_the_budget_is_exact_in_bounded_memory(daemons, tmp_path):
    """600k distinct 100-byte lines in one map task: grouped in memory they take about
    5x the budget (a worker's peak without --memory: ~280 MiB over its start); with
    --memory the worker spills on both sides and its peak stays near the budget."""
    from pymapreduce import Client, read_text
    from tests.conftest import wait_workers

    lines = _lines(tmp_path / "in.txt", 600_000)
    _, address = daemons.broker("--heartbeat", "0.5", "--liveness", "30")
    spill = tmp_path / "spill"
    worker = daemons.worker(address, 1, "--memory", str(BUDGET), "--spill-dir", str(spill))
    wait_workers(address, 1)
    pid = _worker_pids(worker)[0]
    base = _peak(pid)
    with Client(address, timeout=60) as client:
        handle = client.submit(Distinct(), read_text(str(tmp_path / "in.txt"),
                                                     split_bytes=1 << 30), reducers=2)
        result = handle.result(timeout=240)
        counters = handle.counters
    expected: dict = {}
    for line in lines:
        expected[line] = expected.get(line, 0) + 1
    assert result == expected
    assert counters.get(SPILL_COUNTER, 0) >= 4  # the map task and the reduces spilled
    peak = _peak(pid)
    # the bar: the budget plus the process's start size plus slack (run merge buffers,
    # the task's encoded output, the allocator's rounding); unbounded, this map task's
    # groups alone take ~200 MiB
    assert peak - base < BUDGET + (150 << 20), (base >> 20, peak >> 20)
    assert list(spill.rglob("task-*")) == []  # runs removed
    assert list(spill.rglob(str(pid))), "the worker never spilled"


def test_hot_key_larger_than_the_budget_reaches_reduce(daemons, tmp_path):
    from pymapreduce import Client, read_text
    from tests.conftest import wait_workers

    lines = _lines(tmp_path / "in.txt", 300_000, width=200)
    _, address = daemons.broker("--heartbeat", "0.5", "--liveness", "30")
    daemons.worker(address, 2, "--memory", str(BUDGET), "--spill-dir", str(tmp_path / "s"))
    wait_workers(address, 2)
    with Client(address, timeout=60) as client:
        result = client.submit(Hot(), read_text(str(tmp_path / "in.txt")), map_tasks=4,
                               reducers=1).result(timeout=240)
    # ~60 MB of values for one key, decoded ~1.5x the budget: a stream, and exact
    assert result == {"hot": ["ValuesStream", len(lines), sum(len(x) for x in lines)]}


def _spilling_worker(daemons, tmp_path) -> tuple:
    """A broker and one worker process under a 24 MiB budget, an input that makes a map
    task spill, and the job that then hangs: (address, worker daemon, worker pid, spill
    directory, job)."""
    from tests.conftest import wait_workers

    _lines(tmp_path / "in.txt", 2000, width=1000)
    _, address = daemons.broker("--heartbeat", "0.5", "--liveness", "30")
    spill = tmp_path / "spill"
    worker = daemons.worker(address, 1, "--memory", "24MiB", "--spill-dir", str(spill))
    wait_workers(address, 1)
    job = SpillThenHang()
    job.marker = str(tmp_path / "marker")
    return address, worker, _worker_pids(worker)[0], spill, job


def test_runs_of_a_killed_task_are_removed(daemons, tmp_path):
    from pymapreduce import Client, read_text
    from tests.conftest import wait_dead

    address, worker, pid, spill, job = _spilling_worker(daemons, tmp_path)
    with Client(address, timeout=60) as client:
        handle = client.submit(job, read_text(str(tmp_path / "in.txt")), map_tasks=1,
                               reducers=2)
        _wait_file(job.marker, 120)
        mine = _process_dir(spill, pid)
        runs = [f for d in os.listdir(mine) for f in os.listdir(mine / d)]
        assert any(f.startswith("run-") for f in runs), runs  # it spilled, then hung
        os.kill(pid, signal.SIGKILL)
        assert not wait_dead([pid])
        deadline = time.monotonic() + 30
        while mine.exists():  # the supervisor reaps it and removes its runs
            assert time.monotonic() < deadline, os.listdir(mine)
            time.sleep(0.05)
        # the task runs again on the process that replaced the killed one: exact
        result = handle.result(timeout=120)
    assert result == {f"{i * 1000}-{j}": 1 for i in range(2000) for j in range(20)}


class Abandoned(BaseException):
    """Stands for the worker's TaskAbandoned: raised in user code by a signal handler."""


def test_runs_of_an_abandoned_task_are_removed(tmp_path):
    class Stopped(WordCount):
        def map(self, key, line):
            if key == 300:  # (after several spills)
                assert os.listdir(budget.dir) and os.listdir(
                    os.path.join(budget.dir, os.listdir(budget.dir)[0]))
                raise Abandoned()
            yield from super().map(key, line)

    budget = Tight(str(tmp_path))
    with pytest.raises(Abandoned):
        run_task(Stopped(), "map", ["mem", 0], [pack(words(400))], 2, False, budget=budget)
    assert os.listdir(budget.dir) == []


@pytest.mark.parametrize("forge", ["truncated", "short-values", "five-items", "not-array",
                                   "cut-at-an-item", "trailing"])
def test_forged_segments_fail_the_reduce_clearly(tmp_path, forge):
    """Segments come from other workers: bytes that are not what a map task writes fail
    the reduce task with an error (retried elsewhere, then the job fails), never a hang
    or a wrong result."""
    good = pack([[f"k{i}" for i in range(100)], [[i] for i in range(100)]])
    blob = {"truncated": good[:len(good) // 2],
            "short-values": pack([["a", "b", "c"], [[1]]]),
            "five-items": pack([["a"], [[1]], 1, 2, 3]),
            "not-array": pack({"a": 1}),
            # headers saying 3 keys and 3 values, the bytes ending after the 2nd value
            "cut-at-an-item": pack([["a", "b", "c"], [[1], [2], [3]]])[:-2],
            "trailing": good + pack("more")}[forge]
    for room in (0, 1 << 40):  # streamed, and decoded whole
        with pytest.raises(TaskError):
            run_task(WordCount(), "reduce", ["segs", 0, 2], [good, blob], 1, False,
                     budget=Tight(str(tmp_path), room))


def test_worker_refuses_a_bad_memory_budget(tmp_path):
    import subprocess

    from tests.conftest import pmr

    for args, says in ((("--memory", "lots"), "memory budget"),
                       (("--memory", "1KB"), "memory budget"),
                       (("--spill-dir", str(tmp_path)), "give --memory too")):
        proc = subprocess.run(pmr("worker", "--connect", "tcp://127.0.0.1:9", *args),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert says in proc.stderr and "Traceback" not in proc.stderr


def test_job_run_takes_a_memory_budget():
    records = words(2000)
    assert WordCount().run(records, workers=1, memory="32MB") == run_sequential(WordCount(),
                                                                                 records)
    with pytest.raises(ConfigError):
        WordCount().run(records, memory="a lot")


def test_map_only_output_streams_past_the_budget(tmp_path):
    class Upper(Job):
        def map(self, key, line):
            for word in line.split()[:3]:
                yield word.upper(), key

    records = words(500)
    expected = run_sequential(Upper(), records)
    for budget in (None, Tight(str(tmp_path))):
        (blob,), stats = run_task(Upper(), "map", ["mem", 0], [pack(records)], 0, True,
                                  budget=budget)
        assert list(zip(*unpack(blob, allow_pickle=True))) == expected
        assert (SPILL_COUNTER in stats.get("counters", {})) == (budget is not None)


def test_a_later_steps_input_is_read_pair_by_pair(tmp_path):
    """A multi-step job's step reads the step before's output (``cols``); past the room
    left in the budget it is decoded one pair at a time, with the same result."""

    class Swap(Job):
        def map(self, key, value):
            yield value, key

    blob = pack([[f"k{i}" for i in range(300)], list(range(300))])
    outs = []
    for budget in (None, Tight(str(tmp_path))):
        (out,), stats = run_task(Swap(), "map", ["cols", 0], [blob], 0, True, budget=budget)
        assert stats["records"] == 300
        outs.append(list(zip(*unpack(out, allow_pickle=True))))
    assert outs[0] == outs[1] == [(i, f"k{i}") for i in range(300)]


def test_runs_of_a_cancelled_task_are_removed_by_the_live_worker(daemons, tmp_path):
    """Cancelling the job abandons its running task (TaskAbandoned, raised in the user's
    code): the worker process removes the task's runs and lives on."""
    from pymapreduce import Client, read_text
    from tests.conftest import alive, stop

    address, worker, pid, spill, job = _spilling_worker(daemons, tmp_path)
    with Client(address, timeout=60) as client:
        handle = client.submit(job, read_text(str(tmp_path / "in.txt")), map_tasks=1,
                               reducers=2)
        _wait_file(job.marker, 120)
        mine = _process_dir(spill, pid)
        assert any(f.startswith("run-") for d in os.listdir(mine)
                   for f in os.listdir(mine / d))
        handle.cancel()
        deadline = time.monotonic() + 30
        while os.listdir(mine):
            assert time.monotonic() < deadline, os.listdir(mine)
            time.sleep(0.05)
    assert alive(pid)
    stop(worker)  # a daemon that stops removes its whole spill directory
    assert os.listdir(spill) == []


class KeySort(Job):
    """A plain sort (total_order, no reduce): each line under its first 10 characters."""

    total_order = True

    def map(self, offset, line):
        yield line[:10], line[10:]


def test_a_plain_sort_beyond_the_budget_is_sorted_and_exact(daemons, tmp_path):
    from pymapreduce import Client, read_text
    from tests.conftest import wait_workers

    lines = _lines(tmp_path / "in.txt", 300_000)
    _, address = daemons.broker("--heartbeat", "0.5", "--liveness", "30")
    daemons.worker(address, 2, "--memory", "24MiB", "--spill-dir", str(tmp_path / "s"))
    wait_workers(address, 2)
    with Client(address, timeout=60) as client:
        handle = client.submit(KeySort(), read_text(str(tmp_path / "in.txt"),
                                                    split_bytes=1 << 30), reducers=2)
        got = list(handle.results(timeout=240))
        assert handle.counters.get(SPILL_COUNTER, 0) >= 2
    # keys in order; equal keys in input order (a stable sort), every record once
    assert got == sorted(((x[:10], x[10:]) for x in lines), key=lambda kv: kv[0])


@pytest.mark.parametrize("make", [Ordered, Secondary, HotKey])
def test_hot_values_read_and_spilled_in_chunks(tmp_path, spilly, monkeypatch, make):
    """A key's values list of over CHUNK_PAIRS values is read from a segment in chunks,
    and written to a map task's run in chunks: same result, same order."""
    from pymapreduce.spill import runs

    monkeypatch.setattr(runs, "CHUNK_PAIRS", 3)
    monkeypatch.setattr(mapside, "CHUNK_PAIRS", 3)
    records = words(600, vocabulary=5)
    got = distributed(make(), records, 2, 3, Tight(str(tmp_path)))
    expected = run_sequential(make(), records)
    if make is HotKey:
        assert {k: v[1] for k, v in got.items()} == {k: v[1] for k, v in expected.items()}
    else:
        assert got == expected


class SpillThenFail(Job):
    """Spills (big values under many keys) on both sides, and its reduce fails halfway,
    while the runs it merges are open, every attempt."""

    def map(self, key, line):
        for i in range(20):
            yield f"{key}-{i}", line + str(i)

    def reduce_init(self):
        self.seen = 0

    def reduce(self, key, values):
        self.seen += 1
        if self.seen == 1000:
            raise RuntimeError("after spilling")
        return len(values)


def test_a_task_that_fails_after_spilling_leaves_no_spill_file_open(daemons, tmp_path):
    """Its runs are deleted as it fails, and closed too: a deleted file held open keeps
    its space (on a full disk the next task would fail as well)."""
    from pymapreduce import Client, JobFailed, read_text
    from tests.conftest import wait_workers

    _lines(tmp_path / "in.txt", 2000, width=1000)
    _, address = daemons.broker("--heartbeat", "0.5", "--liveness", "30",
                                "--max-attempts", "1")
    spill = tmp_path / "spill"
    worker = daemons.worker(address, 1, "--memory", "24MiB", "--spill-dir", str(spill))
    wait_workers(address, 1)
    (pid,) = _worker_pids(worker)
    with Client(address, timeout=60) as client:
        handle = client.submit(SpillThenFail(), read_text(str(tmp_path / "in.txt")),
                               map_tasks=1, reducers=1)
        with pytest.raises(JobFailed, match="after spilling"):
            handle.wait(120)
        deadline = time.monotonic() + 10  # (the worker lets go as it reports)
        while True:
            held = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(str(spill)) and not target.endswith("/.owner"):
                    held.append(target)  # (.owner: the daemon's lock, held by design)
            if not held or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert held == []
    assert os.listdir(_process_dir(spill, pid)) == []  # (its task directory went too)
