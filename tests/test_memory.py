"""What the process tree holds: sent reduce segments leave the broker's memory but are
still served to a retried attempt, a reduce task lets each segment go once decoded, and the
daemons' allocator setting does not leak into what tasks start."""

from __future__ import annotations

import glob
import os
import platform
import signal
import subprocess
import sys

from pymapreduce import Client, Job, LocalCluster, run_sequential
from pymapreduce.broker.sink import MAP_MIN, Store
from pymapreduce.patterns import allocator
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
    store.discard_where(lambda k: k[0] == "j")  # the job ended: its files go
    assert not glob.glob(str(tmp_path / "spill" / "*" / "*.bin"))
    assert store.memory_bytes == 0 and store.spilled_bytes == 0
    store.close()


def test_an_output_discarded_before_its_release_is_settled_leaves_no_file(tmp_path):
    store = Store(1 << 30, str(tmp_path / "spill"))
    store.put(("j", "map", 0, 0), BIG)
    store.release([("j", "map", 0, 0)])
    store.discard_where(lambda k: k[0] == "j")  # the job failed before the broker settled
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


def test_the_daemons_allocator_setting_does_not_reach_what_tasks_start():
    class Env(Job):
        def map(self, key, value):
            out = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get("
                                  f"{allocator.ENV!r}, '-'), os.environ.get("
                                  f"{allocator.MARKER!r}, '-'))"],
                                 capture_output=True, text=True, check=True).stdout
            yield key, out.strip()

    with LocalCluster(workers=1) as cluster, Client(cluster.address) as client:
        assert client.submit(Env(), [(0, "")]).result(60) == [(0, "- -")]


def test_daemon_env_asks_for_the_pin_for_broker_and_sinks_unless_the_user_chose():
    env: dict[str, str] = {}
    allocator.daemon_env(env, "broker")
    assert env == {allocator.ENV: str(allocator.MMAP_THRESHOLD), allocator.MARKER: "1"}
    workers: dict[str, str] = {}
    allocator.daemon_env(workers, "worker")  # (map tasks' own buffers: see allocator.py)
    assert workers == {}
    mine = {allocator.ENV: "4096"}
    allocator.daemon_env(mine, "sink")
    assert mine == {allocator.ENV: "4096"}  # the user's own value, untouched
    tuned = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}
    allocator.daemon_env(tuned, "broker")
    assert allocator.ENV not in tuned


def test_a_daemon_started_by_hand_pins_the_threshold_itself():
    code = ("import os; os.environ.pop('MALLOC_MMAP_THRESHOLD_', None); "
            "from pymapreduce.patterns.allocator import pin_mmap_threshold as p; print(p())")
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout.strip()
    assert out == ("True" if platform.libc_ver()[0] == "glibc" else "False")
