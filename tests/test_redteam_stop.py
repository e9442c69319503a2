"""Red team of the stop-and-clean-up changes since 55c8dbd: ``JobHandle.cancel()`` removing
``_temporary/<job>`` (store/commit.py ``abort_output``), ``Job.run`` cancelling on its
timeout, a stopped attempt removing its own part file (store/output.py ``discard_attempt``,
called from workers/tasks.py), the mrjob adapter's side-file directories and their atexit
hook, and the dashboard snapshot's cache of ended jobs' rows (observe/snapshot.py).

Attacks as a hostile client, a buggy task or an unlucky user would make them. Real daemons
on 127.0.0.1 with OS-chosen ports (tests/conftest.py); an object store is moto's S3 server,
reached through a relay that the test cuts to make the store unreachable mid-job.

Tests that fail on the code as it is name the defect in their docstring ("DEFECT"); the
others are attacks the code withstands, kept so that it goes on withstanding them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pymapreduce import Client, Job, JobFailed, JobTimeout
from pymapreduce.store.commit import abort_output
from pymapreduce.store.output import (
    SUCCESS,
    TEMPORARY,
    discard_attempt,
    job_temporary,
    temp_name,
    write_attempt,
)

from .conftest import FAST, alive, children, wait_workers

RECORDS = [(i, 1) for i in range(40)]


class Sum(Job):
    def map(self, key, value):
        yield key % 4, value

    def reduce(self, key, values):
        return sum(values)


class SlowReduce(Job):
    """Its reduce takes 30 s: long enough to be stopped while it runs."""

    def map(self, key, value):
        yield key, value

    def reduce(self, key, values):
        time.sleep(30)
        return sum(values)


class SwallowingReduce(Job):
    """A reduce that, like much user code, has a bare ``except:`` around a wait (a retry
    loop, a "best effort" call): it swallows whatever is raised in it for 2 s, then
    returns."""

    def map(self, key, value):
        yield key, value

    def reduce(self, key, values):
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except:  # noqa: E722 - the point of the test
                pass
        return sum(values)


def files_under(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def reduce_running(client: Client) -> bool:
    return any(" reduce-" in t for w in client.workers() for t in w["tasks"])


# -- abort_output and discard_attempt: paths (no daemons) ----------------------------------

HOSTILE_IDS = ["..", ".", "...", "../victim", "../../victim", "/victim", "a/../../victim",
               "..\\victim", "_temporary/../..", "victim/..", "~", "$HOME", " ", "é/..",
               "x" * 200, "." * 200, "-rf /"]


@pytest.mark.parametrize("job_id", HOSTILE_IDS)
def test_hostile_job_ids_never_reach_outside_the_job_s_temporary(tmp_path, job_id):
    """Withstood: a job id a hostile client chose (printable, up to 200 characters) is one
    sanitized path component; abort_output and discard_attempt of it remove nothing but
    that job's own attempt files: not the committed part files next to them, not another
    job's attempts, not a sibling directory named like the id."""
    from pymapreduce.patterns.records import pack

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    (victim / "victim").mkdir()
    (victim / "victim" / "keep.txt").write_text("mine too")
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000").write_text('["a", 1]\n')
    (out / SUCCESS).write_text("")
    spec = {"url": str(out)}
    write_attempt(spec, "other-job", 0, 7, pack([["b"], [2]]))  # another job's attempt
    write_attempt(spec, job_id, 0, 5, pack([["c"], [3]]))
    write_attempt(spec, job_id, 1, 6, pack([["d"], [4]]))
    assert (out / temp_name(job_id, 5, 0)).is_file()
    discard_attempt(spec, job_id, 0, 5)
    assert not (out / temp_name(job_id, 5, 0)).exists()
    assert (out / temp_name(job_id, 6, 1)).is_file()
    abort_output(spec, job_id)
    assert not (out / job_temporary(job_id)).exists()
    assert files_under(out) == sorted([SUCCESS, "part-00000",
                                       os.path.relpath(temp_name("other-job", 7, 0))])
    assert files_under(victim) == ["keep.txt", os.path.join("victim", "keep.txt")]


def test_a_symlink_planted_as_the_job_s_temporary_is_not_followed(tmp_path):
    """Withstood: someone who can write in the output directory replaces the job's
    ``_temporary/<job>`` by a link to a directory of theirs' victim: cancel's clean-up
    does not delete through it, and a stopped attempt's clean-up only removes names its
    attempt would have written."""
    victim = tmp_path / "victim"
    (victim / "1").mkdir(parents=True)
    (victim / "keep.txt").write_text("data")
    (victim / "1" / "part-00000").write_text("data")  # (attempt 1's name, via the link)
    out = tmp_path / "out"
    (out / TEMPORARY).mkdir(parents=True)
    os.symlink(victim, out / job_temporary("job-1"))
    abort_output({"url": str(out)}, "job-1")
    assert files_under(victim) == [os.path.join("1", "part-00000"), "keep.txt"]
    discard_attempt({"url": str(out)}, "job-1", 0, 2)  # (another attempt's name)
    assert files_under(victim) == [os.path.join("1", "part-00000"), "keep.txt"]


# -- cancel after success, Job.run with a timeout that does not pass ------------------------

def test_cancel_after_success_never_costs_committed_or_uncommitted_part_files(daemons,
                                                                            tmp_path):
    """Withstood: a job that succeeded keeps its output whoever cancels it and when:
    Job.run with a timeout that does not pass leaves the job succeeded (not cancelled);
    the submitting handle cancelling after the job succeeded but before it committed
    (a cancel that raced the end) removes nothing, and its wait() then commits; another
    client (no keys: one tenant) cancelling a committed job removes nothing."""
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    expected = {0: 10, 1: 10, 2: 10, 3: 10}

    out1 = tmp_path / "run"
    assert Sum().run(RECORDS, address=address, reducers=2, output_dir=out1,
                     timeout=30) == expected
    assert sorted(os.listdir(out1)) == [SUCCESS, "part-00000", "part-00001"]
    with Client(address) as client:
        assert [j["state"] for j in client.jobs() if j["name"] == "Sum"] == ["succeeded"]

        out2 = tmp_path / "raced"
        handle = client.submit(Sum(), RECORDS, reducers=2, output_dir=out2)
        other = client.job(handle.job_id)
        wait_for(lambda: other.status()["state"] == "succeeded", 30, "the job never ended")
        handle.cancel()  # after the end, before this handle committed
        assert files_under(out2) and all(f.startswith(TEMPORARY) for f in files_under(out2))
        handle.wait(30)
        assert sorted(os.listdir(out2)) == [SUCCESS, "part-00000", "part-00001"]

        with Client(address) as stranger:
            stranger.job(handle.job_id).cancel()
        handle.cancel()
        assert handle.status()["state"] == "succeeded"
        assert sorted(os.listdir(out2)) == [SUCCESS, "part-00000", "part-00001"]
        assert handle.result(10) == expected


# -- a stopped attempt that does not stop ----------------------------------------------------

def test_an_abandoned_attempt_whose_task_swallows_the_stop_leaves_its_file(daemons, tmp_path):
    """DEFECT: the stop of an attempt is an exception (TaskAbandoned, a BaseException)
    raised inside the user's reduce by SIGUSR1; a reduce with a bare ``except:`` around a
    wait swallows it and goes on. The attempt then writes its part file under
    ``_temporary/<job>/<attempt>/`` after the cancelling client removed that directory
    (workers/tasks.py ``_run_one`` calls ``write_attempt`` without asking whether the
    broker abandoned the attempt, though both of the worker's sockets were told), and the
    broker ignores its DONE: the file stays for good, against docs/store.md ("a stopped
    job leaves no attempt files")."""
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    out = tmp_path / "out"
    with Client(address) as client:
        handle = client.submit(SwallowingReduce(), [(1, 1)], map_tasks=1, reducers=1,
                               output_dir=out)
        wait_for(lambda: reduce_running(client), 30, "the reduce never ran")
        time.sleep(0.2)
        handle.cancel()
        with pytest.raises(JobFailed, match="cancelled"):
            handle.wait(10)
        time.sleep(3.5)  # the reduce returns 2 s after it began
    assert files_under(out) == [], "an attempt file outlived the cancel"


# -- an object store that cannot be reached when the job is stopped ---------------------------

@pytest.fixture(scope="module")
def moto_port(s3):
    """moto's S3 server (tests/conftest.py) with a bucket for these tests: its port."""
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True).mkdir("redteam")
    return int(s3.rsplit(":", 1)[1])


@pytest.fixture
def store_link(moto_port):
    """A relay to the S3 server: the job's endpoint. ``close()`` it to make the store
    unreachable (a network partition, the store down) while the job runs."""
    from .delayproxy import DelayProxy

    proxy = DelayProxy(("127.0.0.1", moto_port), 0.0)
    closed = []

    def cut() -> None:
        if not closed:
            closed.append(True)
            proxy.close()

    proxy.cut = cut
    # one attempt per request: the store's absence is known in about a second
    proxy.storage = {"endpoint_url": f"http://127.0.0.1:{proxy.port}",
                     "config_kwargs": {"retries": {"max_attempts": 1}}}
    yield proxy
    cut()


def test_a_worker_process_survives_a_stop_while_the_store_is_unreachable(daemons, store_link):
    """DEFECT: an attempt stopped by the broker (its job cancelled) while the object store
    cannot be reached: ``discard_attempt`` (store/output.py), "best effort", catches only
    OSError, ValueError, KeyError and TypeError, but s3fs raises botocore's
    EndpointConnectionError (NoCredentialsError where the worker has no credentials;
    NotImplementedError for an http:// output). It escapes the ``except TaskAbandoned``
    of workers/tasks.py ``_run_one``, and the worker process dies ("worker process
    crashed"), with whatever else it held; each running reduce of the job kills its
    process the same way."""
    _, address = daemons.broker(*FAST)
    worker = daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(SlowReduce(), [(1, 1)], map_tasks=1, reducers=1,
                               output_dir="s3://redteam/crash",
                               storage_options=store_link.storage)
        wait_for(lambda: reduce_running(client), 30, "the reduce never ran")
        [pid] = children(worker.pid)
        store_link.cut()
        client.job(handle.job_id).cancel()  # (a handle without the output: no clean-up here)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert alive(pid), "the worker process died cleaning up after the stopped attempt"
            time.sleep(0.05)


def test_job_run_times_out_with_jobtimeout_while_the_store_is_unreachable(daemons,
                                                                         store_link):
    """DEFECT: Job.run(timeout=) over a job whose output store stopped answering (why it
    hangs, often): the timeout passes, Job.run cancels the job, and ``cancel()`` now calls
    ``abort_output`` (store/commit.py), which swallows only OSError and PyMapReduceError:
    botocore's EndpointConnectionError escapes cancel(), past Job.run's
    ``contextlib.suppress(PyMapReduceError)`` (job.py), and the caller gets it instead of
    the JobTimeout that Job.run documents (``pymapreduce run`` the same: a botocore error
    instead of its timeout exit code)."""
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)

    def cut_when_reducing() -> None:
        with Client(address) as watcher:
            deadline = time.monotonic() + 20
            while not reduce_running(watcher) and time.monotonic() < deadline:
                time.sleep(0.02)
        store_link.cut()

    cutter = threading.Thread(target=cut_when_reducing, daemon=True)
    cutter.start()
    try:
        with pytest.raises(JobTimeout):
            SlowReduce().run([(1, 1)], address=address, map_tasks=1, reducers=1,
                             output_dir="s3://redteam/timeout",
                             storage_options=store_link.storage, timeout=5)
    finally:
        cutter.join(30)
    with Client(address) as client:  # and the job was cancelled, not left running
        assert [j["state"] for j in client.jobs()] == ["cancelled"]


# -- the mrjob adapter's side-file directories ----------------------------------------------

def test_the_mrjob_atexit_hook_of_a_forked_child_leaves_its_parent_s_directories(tmp_path):
    """Withstood: a process with side-file directories forks; the child makes one of its
    own and exits normally (its atexit hooks run, with a copy of the parent's table): it
    removes its own directory only. The parent's stays while the parent runs, and goes
    when the parent exits."""
    pytest.importorskip("mrjob")
    script = textwrap.dedent("""
        import os, sys
        from pymapreduce.adapters.mrjob import task
        mine = task.working_dir("parent-token", {"f.txt": b"x"})
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            theirs = task.working_dir("child-token", {"g.txt": b"y"})
            print("child", theirs, flush=True)
            sys.exit(0)
        os.waitpid(child, 0)
        print("parent", mine, os.path.isdir(mine), sorted(os.listdir(sys.argv[1])), flush=True)
    """)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-c", script, str(tmp)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    parent = lines["parent"].split(" ", 2)
    assert parent[1] == "True", done.stdout  # the child's exit left it
    assert os.path.basename(lines["child"]) not in parent[2]  # the child's own went
    assert os.path.basename(parent[0]) in parent[2]
    assert os.listdir(tmp) == []  # and the parent's went at its exit


# -- the dashboard snapshot's kept rows -------------------------------------------------------

def test_an_ended_job_s_kept_row_follows_damage_release_and_forgetting():
    """Withstood: an ended job's row, kept from snapshot to snapshot, is rebuilt when the
    job changes after its end: a succeeded job whose result is found damaged turns
    failed (with the error), is released, then forgotten; at every build the kept row is
    the one a build from scratch makes."""
    from pymapreduce.broker.config import BrokerConfig
    from pymapreduce.broker.ledger import Ledger
    from pymapreduce.broker.sink import Store
    from pymapreduce.observe import snapshot as snap
    from pymapreduce.patterns import protocol as P

    from .test_ledger import T0, add_job

    store = Store(1 << 30)
    try:
        ledger = Ledger(BrokerConfig(bind="tcp://127.0.0.1:0"), store)
        job = add_job(ledger, "j", maps=1)
        ledger.events.job_submitted(job)
        job.counters["c"] = 3
        job.finish(P.JOB_SUCCEEDED)
        ledger.end_job(job)
        cache: dict = {}
        now = [T0]

        def both() -> tuple[dict, dict]:
            now[0] += 1
            return (snap.build(ledger, {}, now[0], cache).jobs.get("j"),
                    snap.build(ledger, {}, now[0]).jobs.get("j"))

        kept, fresh = both()
        assert kept == fresh and kept["state"] == "succeeded" and kept["counters"] == {"c": 3}
        ledger._output_damaged(("j", "out", 0), "output o0 does not match its CRC")
        kept, fresh = both()
        assert kept == fresh and kept["state"] == "failed"
        assert "CRC" in kept["error"]["message"]
        ledger.release_job(job)
        kept, fresh = both()
        assert kept == fresh and kept["released"]
        ledger.drop_job(job)
        kept, fresh = both()
        assert kept is None and fresh is None and "j" not in cache
    finally:
        store.close()
