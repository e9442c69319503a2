"""Red team of issue 10's features: side files, task logs, shipped sources, total order and
process state, attacked as a hostile client, a hostile worker or a careless user would,
against real daemons. Each test is an attack that worked before its fix."""

from __future__ import annotations

import os
import time

import pytest
import zmq

from pymapreduce import Client, Job, JobFailed
from pymapreduce.patterns import protocol as P
from pymapreduce.patterns.message import Message

from .conftest import FAST, rss, wait_workers

MiB = 1 << 20


class Loud(Job):
    """Each map task prints ~60 KiB: 64 tasks fill most of a job's 4 MiB of kept logs."""

    def map(self, key, value):
        print(f"task {key} " + "x" * 60_000)
        yield key, 1


def _flood_unread(broker_pid: int, address: str, marker: str, request) -> None:
    """300 requests ``request(req)`` from a connection that reads no reply, then the
    release of job ``marker``: once the broker has handled that (it takes one
    connection's requests in order), its memory has grown by less than 150 MiB."""
    before = rss(broker_pid)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)  # reads nothing: the broker's queue holds it all
    try:
        sock.connect(address)
        for req in range(300):
            sock.send_multipart(request(req).encode())
        sock.send_multipart(Message(P.RELEASE, {"job_id": marker}).encode())
        with Client(address) as probe:
            while not probe.job(marker).status().get("released"):
                time.sleep(0.05)
            grown = rss(broker_pid) - before
            assert grown < 150 * MiB, f"the broker grew {grown >> 20} MiB"
    finally:
        sock.close()
        ctx.term()


def test_unread_logs_replies_do_not_pile_up_in_the_broker(daemons):
    """A client asks for a job's 4 MiB of logs hundreds of times and never reads the
    replies: the broker holds a bounded amount of them (the rest are answered busy), not
    a copy per request; the owner's own reader still gets every log."""
    broker, address = daemons.broker(*FAST, "--backup-after", "off")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(Loud(), [(i, i) for i in range(64)], map_tasks=64)
        handle.result(120)
        assert len(handle.logs()) == 64
        job_id = handle.job_id
        marker = client.submit(Loud(), [(0, 0)])  # released by the flooder, last
        marker.result(60)
    _flood_unread(broker.pid, address, marker.job_id,
                  lambda req: Message(P.LOGS, {"job_id": job_id, "req": req}))
    # the flooder gone, its queued replies go with it: the owner reads every log again
    with Client(address, timeout=60) as owner:
        logs = owner.job(job_id).logs()
        assert len(logs) == 64 and "x" * 60_000 in logs[0]["text"]


class Hopeless(Job):
    """Fails every attempt with a long message: each failure's event carries ~9 KB."""

    def map(self, key, value):
        raise ValueError("no " * 4000)


def test_unread_events_replies_do_not_pile_up_in_the_broker(daemons):
    """As LOGS: a client asks for a job's events (100 failures with their tracebacks,
    ~1 MiB a reply) hundreds of times and never reads the replies; the broker holds a
    bounded amount of them, and a reader still gets every event afterwards."""
    broker, address = daemons.broker(*FAST, "--backup-after", "off", "--max-attempts", "100")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(Hopeless(), [(0, 0)], map_tasks=1)
        with pytest.raises(JobFailed, match="failed 100 times"):
            handle.result(120)
        job_id = handle.job_id
        marker = client.submit(Loud(), [(0, 0)])  # released by the flooder, last
        marker.result(60)
    _flood_unread(broker.pid, address, marker.job_id,
                  lambda req: Message(P.EVENTS, {"job": job_id, "since": 0, "req": req}))
    from pymapreduce.observe.cli import follow

    class Lines(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    with Client(address, timeout=60) as reader:
        out = Lines()
        follow(reader, job_id, 0, out, keep_going=False)
    failed = [line for line in out if '"type":"failed"' in line]
    assert len(failed) == 100 and "no no no" in failed[-1]


# -- shipped sources ----------------------------------------------------------------------
def _forged_sources(job):
    import json.decoder

    return {json.decoder.__file__: "FORGED LINE\n" * 2000, 7: "x", "odd.py": b"bytes",
            "big.py": "y" * (2 << 20)}


class ForgedSources(Job):
    """Ships 'source text' for the standard library's json decoder, and odd entries: a
    forged sources attribute (as a hostile client's blob would carry; a read-only
    property, so the client cannot put the real sources in its place)."""

    _pymapreduce_sources = property(_forged_sources)

    def map(self, key, value):
        yield key, os.getpid()


class BadJson(Job):
    """Fails inside the standard library's json decoder."""

    def map(self, key, value):
        import json

        json.loads("{not json")
        yield key, value


def test_a_job_s_shipped_sources_do_not_change_another_job_s_tracebacks(daemons):
    """One job's (forged) sources name a standard-library file: the next job's traceback
    through that file shows the file's real lines, not the forged ones."""
    from pymapreduce import JobFailed

    _, address = daemons.broker(*FAST, "--backup-after", "off")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        assert client.submit(ForgedSources(), [(0, 0)]).result(60)
        with pytest.raises(JobFailed) as failed:
            client.submit(BadJson(), [(0, 0)]).result(60)
    remote = str(failed.value)
    assert "json" in remote and "FORGED LINE" not in remote
    assert "obj, end = self.raw_decode(s, idx=_w(s, 0).end())" in remote


def _pairs(result):
    return list(dict(result).items())


# -- side files ---------------------------------------------------------------------------
class Squatter(Job):
    """Runs in its job directory and makes the directories the next jobs of this worker
    process would get, as links to a directory of the attacker's choosing."""

    def __init__(self, target):
        self.target = target

    def map(self, key, value):
        root = os.path.dirname(os.getcwd())
        for n in range(1, 40):
            try:
                os.symlink(self.target, os.path.join(root, f"job-{n}"))
            except FileExistsError:
                pass
        yield os.getpid(), os.getcwd()


class Reader(Job):
    def map(self, key, value):
        with open("side.txt") as f:
            yield os.getpid(), (os.getcwd(), f.read())


def test_a_job_cannot_take_the_next_job_s_directory(daemons, tmp_path):
    """A job that pre-creates the job directories its worker process will make next does
    not stop the next job with files from running there, nor receive its files."""
    side = tmp_path / "side.txt"
    side.write_text("the side data")
    target = tmp_path / "catch"
    target.mkdir()
    _, address = daemons.broker(*FAST, "--backup-after", "off")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        ((pid, first),) = _pairs(client.submit(Squatter(str(target)), [(0, 0)],
                                        files=[str(side)]).result(60))
        ((pid2, (cwd, text)),) = _pairs(client.submit(Reader(), [(0, 0)],
                                               files=[str(side)]).result(60))
    assert pid2 == pid and text == "the side data" and cwd != first
    assert not os.path.islink(cwd) and os.listdir(target) == []


def test_a_killed_worker_process_s_job_directory_is_removed(daemons, tmp_path):
    """kill -9 of a worker process: its supervisor removes the job directories it left."""
    import signal

    from .conftest import children, wait_dead

    side = tmp_path / "side.txt"
    side.write_text("x")
    _, address = daemons.broker(*FAST, "--backup-after", "off")
    worker = daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        ((pid, (cwd, _)),) = _pairs(client.submit(Reader(), [(0, 0)],
                                           files=[str(side)]).result(60))
    assert pid in children(worker.pid) and os.path.isdir(cwd)
    os.kill(pid, signal.SIGKILL)
    assert not wait_dead([pid])
    deadline = time.monotonic() + 30
    while (pid in children(worker.pid) or not children(worker.pid)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)  # the supervisor reaps the dead process, then starts another
    assert not os.path.exists(os.path.dirname(cwd))


# -- process state ------------------------------------------------------------------------
class Umask(Job):
    """Reports the umask it finds; with ``private``, sets a private one (as a job writing
    files only its user may read would)."""

    def __init__(self, private):
        self.private = private

    def map(self, key, value):
        found = os.umask(0o077 if self.private else 0o022)
        if not self.private:
            os.umask(found)
        yield key, found


def test_a_job_s_umask_does_not_reach_the_next_job(daemons):
    _, address = daemons.broker(*FAST, "--backup-after", "off")
    daemons.worker(address, 1)  # one process: both jobs run in it
    wait_workers(address, 1)
    mine = os.umask(0o022)
    os.umask(mine)
    with Client(address) as client:
        first = client.submit(Umask(True), [(0, 0), (1, 1)], map_tasks=2).result(60)
        second = client.submit(Umask(False), [(0, 0), (1, 1)], map_tasks=2).result(60)
    assert set(dict(first).values()) | set(dict(second).values()) == {mine}


# -- total order, value_key ---------------------------------------------------------------
class ExitingValueKey(Job):
    """A value_key that ends 'the program' (sys.exit(77) is also the exit code a worker
    daemon gives when the broker refuses its key)."""

    def map(self, key, value):
        yield key % 2, value

    def value_key(self, value):
        raise SystemExit(77)

    def reduce(self, key, values):
        return sum(values)


class ForgedBounds(Job):
    """Carries key-range boundaries it did not get from the sampler (a forged pickle)."""

    def __init__(self, bounds):
        self._pmr_bounds = bounds

    def map(self, key, value):
        yield key, value

    def reduce(self, key, values):
        return sum(values)


class Plain(Job):
    def map(self, key, value):
        yield key, value * 10

    def reduce(self, key, values):
        return sum(values)


def test_user_code_that_exits_fails_its_job_and_the_worker_stays(daemons):
    """sys.exit() in user code (here value_key) fails the job, naming SystemExit; the
    worker process is not ended by it, and runs the next job."""
    from pymapreduce import JobFailed

    from .conftest import children

    _, address = daemons.broker(*FAST, "--backup-after", "off")
    worker = daemons.worker(address, 1)
    wait_workers(address, 1)
    before = children(worker.pid)
    with Client(address) as client:
        with pytest.raises(JobFailed, match="SystemExit"):
            client.submit(ExitingValueKey(), [(i, i) for i in range(6)]).result(60)
        assert dict(client.submit(Plain(), [(1, 1)]).result(60)) == {1: 10}
    assert children(worker.pid) == before and worker.poll() is None


@pytest.mark.parametrize("bounds", [5, "zz", [None, 1], {"a": 1}, [3, 1, 2], [2] * 100_000])
def test_forged_range_bounds_fail_only_their_job(daemons, bounds):
    """Boundaries that are not a sorted list of comparable keys either still partition
    (every record reaches the output once) or fail that job with BadOutput; the worker
    then runs the next job."""
    from pymapreduce import JobFailed

    _, address = daemons.broker(*FAST, "--backup-after", "off")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    records = [(i, i) for i in range(10)]
    with Client(address) as client:
        try:
            got = dict(client.submit(ForgedBounds(bounds), records, reducers=3).result(60))
        except JobFailed as exc:
            assert "BadOutput" in str(exc)
        else:
            assert got == dict(records)
        assert dict(client.submit(Plain(), [(1, 1)]).result(60)) == {1: 10}


# -- released jobs ------------------------------------------------------------------------
class Printing(Job):
    def map(self, key, value):
        print(f"mapped {key}")
        yield key, value


def test_a_released_job_keeps_its_status_and_logs_not_its_results(daemons, tmp_path):
    """Release, then fetch: a clear error, not empty results; status and logs stay. A
    broker restarted on its state directory does not bring the released job's outputs
    back (it forgets the job: JobNotFound), and its other jobs are still there."""
    from pymapreduce import JobNotFound, PyMapReduceError

    state = tmp_path / "state"
    broker, address = daemons.broker(*FAST, "--backup-after", "off", "--state-dir", str(state))
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        released = client.submit(Printing(), [(1, 1), (2, 2)])
        kept = client.submit(Printing(), [(3, 3)])
        assert dict(released.result(60)) == {1: 1, 2: 2} and dict(kept.result(60)) == {3: 3}
        released.release()
        with pytest.raises(PyMapReduceError, match="released"):
            released.result(30)
        assert client.job(released.job_id).status()["state"] == P.JOB_SUCCEEDED
        assert "mapped 1" in client.job(released.job_id).logs().text()
    broker.kill()
    broker.wait()
    daemons.broker(*FAST, "--state-dir", str(state), bind=address)
    with Client(address) as client:
        assert dict(client.job(kept.job_id).result(30)) == {3: 3}
        with pytest.raises(JobNotFound):
            client.job(released.job_id).result(30)


class LinkLeaver(Job):
    """Leaves, in its job directory, a link to a file of the worker's user, and makes the
    directory read-only (a careless cleanup-proof scratch dir)."""

    def __init__(self, target):
        self.target = target

    def map(self, key, value):
        os.symlink(self.target, "a-link")
        os.chmod(".", 0o500)
        yield os.getpid(), os.getcwd()


@pytest.mark.skipif(os.geteuid() == 0, reason="root removes from a read-only directory")
def test_removing_a_job_directory_never_changes_what_its_links_point_to(daemons, tmp_path):
    """The worker removes a job directory a task made read-only; a link in it is removed,
    and the file it pointed to keeps its permissions."""
    from .conftest import stop

    side = tmp_path / "side.txt"
    side.write_text("x")
    secret = tmp_path / "secret"
    secret.write_text("the user's own file")
    secret.chmod(0o400)
    _, address = daemons.broker(*FAST, "--backup-after", "off")
    worker = daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        ((_, cwd),) = _pairs(client.submit(LinkLeaver(str(secret)), [(0, 0)],
                                           files=[str(side)]).result(60))
    stop(worker)
    assert not os.path.exists(cwd)
    assert (secret.stat().st_mode & 0o777) == 0o400 and secret.read_text()


# -- logs from a hostile worker -----------------------------------------------------------
@pytest.fixture
def zctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_a_worker_cannot_forge_logs_of_attempts_it_does_not_hold(zctx):
    """A rogue worker's DONE and FAILED carrying logs for another worker's attempt are not
    kept; the holder's log is, bytes as sent (not UTF-8), its end when over MAX_LOG; a
    LOGS whose task is not a name gets every task's logs."""
    from pymapreduce.patterns.wire import MAX_LOG

    from .test_hostile import Peer, map_output, start_broker, stop_broker, submit

    b = start_broker(zctx)
    try:
        client = Peer(zctx, b.address, None, "client")
        submit(client, "j1", [(0, "mine")])
        owner, rogue = Peer(zctx, b.address), Peer(zctx, b.address)
        owner.send(P.READY, {"credit": 1, "name": "owner:1"})
        assert owner.recv().command == P.WELCOME
        _, index, attempt, _ = owner.recv().body["tasks"][0]
        rogue.send(P.READY, {"credit": 1, "name": "rogue:2"})
        assert rogue.recv().command == P.WELCOME
        rogue.send(P.DONE, {"results": [["j1", "map", index, attempt, {"log": b"FORGED"}, 1]]},
                   [map_output([(0, "forged")])])
        rogue.send(P.FAILED, {"job": "j1", "kind": "map", "index": index, "attempt": attempt,
                              "error": "forged", "log": b"FORGED TOO"})
        assert rogue.recv(timeout=0.5) is None
        big = b"\xff\xfe not utf-8 " + b"y" * (2 * MAX_LOG) + b" the end"
        owner.send(P.DONE, {"results": [["j1", "map", index, attempt, {"log": big}, 1]]},
                   [map_output([(0, "mine")])])
        reduce_task = owner.recv() or rogue.recv()
        assert reduce_task is not None and reduce_task.command == P.TASKS
        client.send(P.LOGS, {"job_id": "j1", "req": 2})
        reply = client.recv(want=(P.LOGS,))
        (entry,) = reply.body["logs"]
        assert entry["worker"] == "owner:1" and entry["task"] == "map-0"
        assert len(entry["log"]) == MAX_LOG and entry["log"].endswith(b" the end")
        for odd in (["a list"], 12, {"a": 1}, None):  # not a task name: all tasks
            client.send(P.LOGS, {"job_id": "j1", "req": 3, "task": odd})
            assert len(client.recv(want=(P.LOGS,)).body["logs"]) == 1
    finally:
        stop_broker(b)
