"""The state directory keeps its promise: damage is an error naming the file, never a
wrong or empty answer; a full disk refuses new work but the broker goes on; --fsync commit
puts every output file on disk before the commit row that names it.

Real ``pymapreduce broker --state-dir`` processes, killed and restarted; the journal and
output files are damaged by hand in between, as a bad disk or a power loss would.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile

import msgpack
import pytest

from pymapreduce import Client, JobFailed, PyMapReduceError, run_sequential
from pymapreduce.broker.journal import _crc

from .conftest import FAST, READY, ROOT, children, pmr, read_line, stop, wait_workers
from .jobs import WordCount
from .test_faults import Logged, executions
from .test_restart import Waiter, committed, wait_for

EXIT_STATE = 6
RECORDS = [(i, f"a b{i % 4} c{i % 3}") for i in range(40)]


def finished_job(daemons, state, records=RECORDS, *extra: str) -> tuple[str, str]:
    """Run one word count to the end on a broker with ``state``; kill -9 that broker.
    Returns (its address, the job id)."""
    broker, address = daemons.broker(*FAST, "--state-dir", str(state), *extra)
    daemons.worker(address, 1)
    with Client(address) as client:
        job_id = client.submit(WordCount(), records, map_tasks=4, reducers=2).job_id
        assert client.job(job_id).result(60) == run_sequential(WordCount(), records)
    broker.kill()
    broker.wait()
    return address, job_id


def refused_start(state) -> subprocess.CompletedProcess:
    """A broker started on ``state`` that is expected to refuse (it times out otherwise)."""
    return subprocess.run(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--state-dir",
                              str(state), "--parent-pid", str(os.getpid())),
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def flip_byte(path) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)


# -- output files -------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["flipped byte", "emptied"])
def test_a_damaged_result_file_fails_the_job_naming_the_file(daemons, tmp_path, damage):
    state = tmp_path / "state"
    address, job_id = finished_job(daemons, state)
    result = state / "outputs" / "1" / "o1"
    if damage == "emptied":  # what a power loss does to a file not yet written back
        result.write_bytes(b"")
    else:
        flip_byte(result)
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    with Client(address) as client:
        handle = client.job(job_id)
        with pytest.raises(JobFailed, match=re.escape(str(result))):
            handle.result(30)
        assert handle.status()["state"] == "failed"


def test_a_result_file_damaged_while_the_broker_runs_is_an_error_not_a_wrong_count(
        daemons, tmp_path):
    state = tmp_path / "state"
    # no memory budget: results are served from their files
    _, address = daemons.broker(*FAST, "--state-dir", str(state), "--memory-budget-mb", "0")
    daemons.worker(address, 1)
    with Client(address) as client:
        handle = client.submit(WordCount(), RECORDS, map_tasks=4, reducers=2)
        handle.wait(60)
        result = state / "outputs" / "1" / "o0"
        flip_byte(result)
        with pytest.raises(PyMapReduceError, match=re.escape(str(result))):
            handle.result(30)
        status = handle.status()
        assert status["state"] == "failed"
        assert str(result) in status["error"]["message"]


def test_a_damaged_map_output_of_a_running_job_makes_that_task_run_again(daemons, tmp_path):
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 2)
    wait_workers(address, 2)
    log = tmp_path / "runs"
    records = [(i, f"w{i % 7} x{i % 3}") for i in range(40)]
    waiter = Waiter(address, Logged(str(log), delay=0.08), records, map_tasks=40, reducers=2)
    waiter.start()
    wait_for(lambda: len(committed(state)) >= 10, what="10 committed map tasks")
    broker.kill()
    broker.wait()
    before = committed(state)
    ran_before = len(executions(log))
    outputs = sorted(p for p in (state / "outputs" / "1").iterdir()
                     if p.name.startswith("m") and int(p.name[1:].split("-")[0]) in before)
    damaged = outputs[0]
    index = int(damaged.name[1:].split("-")[0])
    flip_byte(damaged)

    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    waiter.join(120)
    assert waiter.error is None, waiter.error
    assert waiter.result == run_sequential(WordCount(), records)  # not a wrong count
    rerun = set(executions(log)[ran_before:])
    assert index in rerun  # the damaged output was computed again
    assert not (rerun & before) - {index}, "sound committed map tasks ran again"
    waiter.client.close()


# -- the journal ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated to half", "garbage header"])
def test_a_damaged_journal_stops_the_broker_with_an_error_naming_it(daemons, tmp_path,
                                                                    damage):
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 1)
    with Client(address) as client:
        client.submit(WordCount(), RECORDS, map_tasks=4).result(60)
    stop(broker)  # a clean stop: everything is in journal.sqlite itself
    journal = state / "journal.sqlite"
    assert not (state / "journal.sqlite-wal").exists() or \
        (state / "journal.sqlite-wal").stat().st_size == 0
    if damage == "truncated to half":
        os.truncate(journal, journal.stat().st_size // 2)
    else:
        with open(journal, "r+b") as f:
            f.write(b"this is not sqlite at all")
    proc = refused_start(state)
    assert proc.returncode == EXIT_STATE, proc.stderr
    assert str(journal) in proc.stderr
    assert "damaged" in proc.stderr and "Move the state directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_journal_that_lost_its_jobs_stops_the_broker_instead_of_starting_empty(
        daemons, tmp_path):
    state = tmp_path / "state"
    finished_job(daemons, state)  # killed: the job's rows are in the WAL only
    wal = state / "journal.sqlite-wal"
    assert wal.stat().st_size > 32
    os.truncate(wal, 32)  # the WAL keeps its header, loses every transaction
    proc = refused_start(state)
    assert proc.returncode == EXIT_STATE, proc.stderr
    assert "lost jobs" in proc.stderr
    assert str(state / "outputs" / "1") in proc.stderr
    # the operator's way out, as the message says: delete what the journal lost
    shutil.rmtree(state / "outputs" / "1")
    _, address = daemons.broker("--state-dir", str(state))
    with Client(address) as client:
        assert client.info()["jobs"] == 0


def test_a_damaged_journal_row_fails_its_job_and_the_others_carry_on(daemons, tmp_path):
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 1)
    other = [(i, f"x y{i % 2}") for i in range(10)]
    with Client(address) as client:
        first = client.submit(WordCount(), RECORDS, map_tasks=4).job_id
        second = client.submit(WordCount(), other, map_tasks=2).job_id
        client.job(first).wait(60)
        client.job(second).wait(60)
    broker.kill()
    broker.wait()
    db = sqlite3.connect(state / "journal.sqlite")
    # (a finished job's row keeps its options, not its code: see Journal.finish)
    options = bytearray(db.execute("SELECT options FROM jobs WHERE id=?",
                                   (first,)).fetchone()[0])
    options[len(options) // 2] ^= 0x01  # a bit flipped inside a row: SQLite sees nothing
    db.execute("UPDATE jobs SET options=? WHERE id=?", (bytes(options), first))
    db.commit()
    db.close()
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    with Client(address) as client:
        with pytest.raises(JobFailed, match="journal.sqlite is damaged"):
            client.job(first).result(30)
        assert client.job(second).result(30) == run_sequential(WordCount(), other)


def test_whatever_a_worker_reported_the_broker_restarts(daemons, tmp_path):
    """A counter named by an int (``self.count(1)``) used to stop every later restart: the
    journal could not read it back. Anything in a row loads back, or its job fails."""
    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--state-dir", str(state))
    daemons.worker(address, 1)
    other = [(i, f"x y{i % 2}") for i in range(10)]
    with Client(address) as client:
        ints = client.submit(WordCount(), RECORDS, map_tasks=2, reducers=1).job_id
        junk = client.submit(WordCount(), other, map_tasks=2, reducers=1).job_id
        client.job(ints).wait(60)
        client.job(junk).wait(60)
    broker.kill()
    broker.wait()
    db = sqlite3.connect(state / "journal.sqlite")
    for job_id, counters in ((ints, {1: 5, "words": 2}), (junk, {"n": "not a number"})):
        seq, step, kind, index, stats, parts, sums = db.execute(
            "SELECT c.seq, step, kind, idx, stats, parts, sums FROM commits c JOIN jobs j "
            "ON c.seq = j.seq WHERE j.id=? AND kind='map' AND idx=0", (job_id,)).fetchone()
        stats = msgpack.packb({**msgpack.unpackb(stats), "counters": counters})
        db.execute("UPDATE commits SET stats=?, crc=? WHERE seq=? AND kind='map' AND idx=0",
                   (stats, _crc(seq, step, kind, index, stats, parts, sums), seq))
    db.commit()
    db.close()
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)  # it starts
    with Client(address) as client:
        assert client.job(ints).result(30) == run_sequential(WordCount(), RECORDS)
        assert client.job(ints).status()["counters"][1] == 5
        with pytest.raises(JobFailed, match="could not be recovered"):
            client.job(junk).result(30)


# -- a full disk ---------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(size: str = "4m"):
    """A tmpfs of ``size`` mounted for the test (skipped where mounting is not allowed);
    always unmounted."""
    where = tempfile.mkdtemp(prefix="pmr-small-disk-")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        os.rmdir(where)
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True)
        os.rmdir(where)


def fill(path: str) -> None:
    """Write ``path`` until the disk has no room left."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    assert os.statvfs(os.path.dirname(path)).f_bavail == 0


def test_a_full_disk_refuses_new_jobs_and_the_broker_keeps_serving(daemons, tmp_path):
    with small_disk() as disk:
        state = os.path.join(disk, "state")
        broker, address = daemons.broker(*FAST, "--state-dir", state)
        daemons.worker(address, 1)
        done_records = [(i, f"d e{i % 5}") for i in range(20)]
        log = tmp_path / "runs"
        with Client(address) as client:
            done = client.submit(WordCount(), done_records, map_tasks=2)
            done.wait(60)
            running = Waiter(address, Logged(str(log), delay=0.05), RECORDS, map_tasks=20)
            running.start()
            wait_for(lambda: os.path.exists(log), what="the running job's first map")
            filler = os.path.join(disk, "filler")
            fill(filler)

            with pytest.raises(PyMapReduceError, match="disk .* is full"):
                client.submit(WordCount(), RECORDS, map_tasks=2)
            assert broker.poll() is None  # still serving
            assert done.result(30) == run_sequential(WordCount(), done_records)
            running.join(120)  # the job under way goes on (its outputs kept in memory)
            assert running.error is None, running.error
            assert running.result == run_sequential(WordCount(), RECORDS)

            os.unlink(filler)  # room again: new work is accepted
            again = client.submit(WordCount(), RECORDS, map_tasks=2)
            assert again.result(60) == run_sequential(WordCount(), RECORDS)
            assert broker.poll() is None
            running.client.close()
        stop(broker)
        assert broker.returncode == 0


# -- fsync policy ----------------------------------------------------------------------------
@contextlib.contextmanager
def traced_broker(trace: str, *extra: str):
    """A broker under ``strace``, recording its fsync calls (with the files' paths)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    proc = subprocess.Popen(["strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync",
                             "-e", "signal=none", "-o", trace,
                             # (no --parent-pid: its parent is strace; the finally
                             # below stops it)
                             *pmr("broker", "--bind", "tcp://127.0.0.1:0", "--log-level",
                                  "WARNING", *extra)],
                            stdout=subprocess.PIPE, cwd=ROOT)
    try:
        try:
            address = read_line(proc, READY).group(1)
        except RuntimeError:
            pytest.skip("strace cannot trace here (ptrace not permitted)")
        yield address
    finally:
        for pid in children(proc.pid):  # the broker, under strace
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        stop(proc)


def fsyncs(trace: str) -> list[str]:
    """The paths fsynced, in order."""
    return re.findall(r"f(?:data)?sync\(\d+<([^>]*)>\)", open(trace).read())


@pytest.mark.parametrize("policy", ["commit", "never"])
def test_fsync_policy_puts_outputs_on_disk_before_their_commit_row(daemons, tmp_path, policy):
    state = tmp_path / "state"
    trace = str(tmp_path / "trace")
    with traced_broker(trace, "--state-dir", str(state), "--fsync", policy) as address:
        daemons.worker(address, 1)
        with Client(address) as client:
            handle = client.submit(WordCount(), RECORDS, map_tasks=2, reducers=1)
            assert handle.result(60) == run_sequential(WordCount(), RECORDS)
    synced = fsyncs(trace)
    result = str(state / "outputs" / "1" / "o0")
    wal = str(state / "journal.sqlite-wal")
    if policy == "never":  # nothing is forced to disk as the job runs
        assert result not in synced
        return
    assert result in synced
    first = synced.index(result)
    # the job's directory entry, then the journal, after the file: its commit row
    assert str(state / "outputs" / "1") in synced[first:]
    assert wal in synced[first:]
    # and the job was on disk before its first output: ACCEPTED after the WAL's fsync
    assert wal in synced[:first]
