"""A first run from a clean install, as a new user types it: the mistakes they make and
what each one should say (one line naming the way out), each pinned by a test with the
real CLI in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from pymapreduce import Job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TWO_JOBS = """
from pymapreduce import Job
from pymapreduce import Job as Imported  # (a name for Job itself is not a job)


class WordCount(Job):
    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


class LineCount(Job):
    def map(self, key, line):
        yield "lines", 1

    def reduce(self, key, counts):
        return sum(counts)
"""

ONE_JOB = """
from collections import Counter  # (a class, not a job)

from pymapreduce import Job


class WordCount(Job):
    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)
"""


def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pymapreduce", *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ROOT})


def _last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def test_a_job_file_without_a_class_runs_its_only_job(tmp_path):
    # as `pymapreduce run mr_job.py` does for an mrjob file that defines one MRJob
    (tmp_path / "wc.py").write_text(ONE_JOB)
    (tmp_path / "in.txt").write_text("a b a\n")
    proc = _cli(tmp_path, "run", "wc.py", "in.txt", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ['["a", 2]', '["b", 1]']


def test_a_job_file_with_several_jobs_and_no_class_names_them(tmp_path):
    (tmp_path / "jobs.py").write_text(TWO_JOBS)
    (tmp_path / "in.txt").write_text("a b a\n")
    proc = _cli(tmp_path, "run", "jobs.py", "in.txt", "--workers", "1")
    assert proc.returncode == 2
    assert _last_line(proc) == (
        "pymapreduce: error: jobs.py defines 2 jobs (WordCount, LineCount): name one, "
        "as jobs.py:WordCount")


def test_a_misspelt_job_class_is_answered_with_the_jobs_the_file_defines(tmp_path):
    (tmp_path / "jobs.py").write_text(TWO_JOBS)
    (tmp_path / "in.txt").write_text("a b a\n")
    proc = _cli(tmp_path, "run", "jobs.py:WordCont", "in.txt", "--workers", "1")
    assert proc.returncode == 2
    assert _last_line(proc) == (
        "pymapreduce: error: jobs.py defines no 'WordCont' (its jobs: WordCount, LineCount)")
    # module:Class too
    proc = _cli(tmp_path, "run", "jobs:Wordcount", "in.txt", "--workers", "1")
    assert proc.returncode == 2
    assert _last_line(proc) == (
        "pymapreduce: error: jobs defines no 'Wordcount' (its jobs: WordCount, LineCount)")


def test_a_file_that_defines_no_job_says_so(tmp_path):
    (tmp_path / "helpers.py").write_text("def f():\n    return 1\n")
    (tmp_path / "in.txt").write_text("a\n")
    proc = _cli(tmp_path, "run", "helpers.py", "in.txt", "--workers", "1")
    assert proc.returncode == 2
    assert _last_line(proc) == (
        "pymapreduce: error: helpers.py defines no pymapreduce.Job subclass")
    proc = _cli(tmp_path, "run", "helpers.py:Count", "in.txt", "--workers", "1")
    assert proc.returncode == 2
    assert _last_line(proc) == (
        "pymapreduce: error: helpers.py defines no 'Count' (and no pymapreduce.Job subclass)")


# -- `pymapreduce logs JOB TASK` for a task the job does not have ---------------------------
def test_logs_of_a_task_beyond_the_jobs_tasks_is_an_error_not_silence(tmp_path, cluster):
    from pymapreduce import Client

    from .jobs import WordCount

    with Client(cluster) as client:
        handle = client.submit(WordCount(), {1: "a b", 2: "b c"}, map_tasks=2, reducers=1)
        handle.result(60)
    proc = _cli(tmp_path, "logs", "--connect", cluster, handle.job_id, "map-7")
    assert proc.returncode == 2, proc.stderr
    assert _last_line(proc) == (
        f"pymapreduce: error: job {handle.job_id} has no task map-7: its map tasks are "
        "map-0 to map-1")
    proc = _cli(tmp_path, "logs", "--connect", cluster, handle.job_id, "reduce-1")
    assert proc.returncode == 2, proc.stderr
    assert _last_line(proc) == (
        f"pymapreduce: error: job {handle.job_id} has no task reduce-1: its reduce task is "
        "reduce-0")
    # a task that exists and printed nothing is still not an error
    proc = _cli(tmp_path, "logs", "--connect", cluster, handle.job_id, "map-1")
    assert proc.returncode == 0, proc.stderr
    assert f"no logs for task map-1 of job {handle.job_id}" in proc.stderr


def test_logs_of_a_reduce_task_of_a_map_only_job_says_it_has_none(tmp_path, cluster):
    from pymapreduce import Client

    from .jobs import Lengths

    with Client(cluster) as client:
        handle = client.submit(Lengths(), {1: "a"}, map_tasks=1)
        handle.result(60)
    proc = _cli(tmp_path, "logs", "--connect", cluster, handle.job_id, "reduce-0")
    assert proc.returncode == 2, proc.stderr
    assert _last_line(proc) == (
        f"pymapreduce: error: job {handle.job_id} has no task reduce-0: it is a map-only job")


# -- a broker address whose host name does not resolve --------------------------------------
# (.invalid never resolves: RFC 2606; ZeroMQ would retry it silently until the timeout)
UNKNOWN_HOST = "tcp://no-such-broker.invalid:5555"


def test_a_client_refuses_a_host_name_that_does_not_resolve_at_once():
    from pymapreduce import Client, ConfigError

    with pytest.raises(ConfigError, match=r"no host named 'no-such-broker.invalid' is known"):
        Client(UNKNOWN_HOST, timeout=60)


@pytest.mark.parametrize("command", [
    ["status"], ["events"], ["logs", "Any-123"], ["cancel", "Any-123"],
    ["run", "wc.py:WordCount", "in.txt"],
])
def test_commands_name_a_host_that_does_not_resolve(tmp_path, command):
    (tmp_path / "wc.py").write_text(ONE_JOB)
    (tmp_path / "in.txt").write_text("a b a\n")
    # --timeout 60: the answer must not be the wait for a broker's greeting
    proc = _cli(tmp_path, *command, "--connect", UNKNOWN_HOST, "--timeout", "60")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _last_line(proc) == (
        f"pymapreduce: error: address '{UNKNOWN_HOST}': no host named "
        "'no-such-broker.invalid' is known here (a typo? give a name this machine "
        "resolves, or an IP address)")


def test_a_worker_for_a_host_that_does_not_resolve_says_so_as_it_keeps_trying(tmp_path):
    # a worker keeps trying (a broker's name may appear later), but its warning says why
    import signal

    worker = subprocess.Popen(
        [sys.executable, "-m", "pymapreduce", "worker", "--connect", UNKNOWN_HOST,
         "--processes", "1", "--parent-pid", str(os.getpid())],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT})
    try:
        for line in worker.stderr:  # (one warning per worker process, after the liveness)
            if "no answer from a broker" in line:
                break
        assert re.search(
            rf"no answer from a broker at {re.escape(UNKNOWN_HOST)} after \d+s, and no host "
            r"named 'no-such-broker\.invalid' is known here; still trying$", line), line
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        worker.stderr.close()


# -- the error lines docs/cli.md shows are the ones the commands print -----------------------
NEEDS_N = """
from pymapreduce import Job


class Count(Job):
    def __init__(self, n):
        self.n = n

    def map(self, key, line):
        yield line, 1
"""


def test_the_error_lines_in_the_cli_doc_are_what_the_commands_print(tmp_path, cluster):
    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        doc = f.read()
    shown = doc[doc.index("## When a command fails"):]
    shown = shown[:shown.index("```", shown.index("```") + 3)]
    work = tmp_path / "work"
    work.mkdir()
    (work / "count.py").write_text(NEEDS_N)
    (work / "in.txt").write_text("a\n")
    (work / "out").mkdir()
    (work / "out" / "_SUCCESS").write_text("")
    (work / "out" / "part-00000").write_text("")
    printed = []
    for args in (["run", "count.py:Count", "in.txt", "-p", "n=1", "--output", "out"],
                 ["run", "jobs:Count", "in.txt"],
                 ["run", "count.py:Count", "in.txt"],
                 ["status", "--connect", cluster, "Count-1234"],
                 ["status", "--connect", "tcp://brokr.invalid:5555"]):
        proc = _cli(work, *args, "--workers", "1") if args[0] == "run" else _cli(work, *args)
        assert proc.returncode == 2, proc.stderr
        # (the doc's host is "brokr"; the test's never resolves anywhere: RFC 2606)
        printed.append(_last_line(proc).replace("brokr.invalid", "brokr"))
    for line in printed:
        assert line in shown.splitlines(), line


# -- a map that returns a value instead of yielding pairs ---------------------------------
class ReturnsCount(Job):
    def map(self, key, line):
        return len(line.split())  # meant: yield "words", len(...)

    def reduce(self, key, values):
        return sum(values)


class MapOnlyReturnsCount(Job):  # (map-only jobs keep map's output in another loop)
    def map(self, key, line):
        return len(line.split())


class FinalReturnsTotal(Job):
    def map_init(self):
        self.total = 0

    def map(self, key, line):
        self.total += 1
        return ()

    def map_final(self):
        return self.total  # meant: return [("lines", self.total)]

    def reduce(self, key, values):
        return sum(values)


class MapOnlyFinalReturnsTotal(FinalReturnsTotal):
    reduce = None


@pytest.mark.parametrize("job, method", [
    (ReturnsCount(), "map"), (MapOnlyReturnsCount(), "map"),
    (FinalReturnsTotal(), "map_final"), (MapOnlyFinalReturnsTotal(), "map_final"),
])
def test_a_map_that_returns_no_pairs_fails_saying_so(cluster, job, method):
    from pymapreduce import Client, JobFailed

    name = type(job).__name__
    with Client(cluster) as client:
        handle = client.submit(job, {1: "a b", 2: "c d"}, map_tasks=1)
        with pytest.raises(JobFailed) as failed:
            handle.result(60)
    message = str(failed.value).splitlines()[0]
    assert message.endswith(
        f"last error: BadOutput: {name}.{method} returned a value (of type int), not an "
        "iterable of (key, value) pairs: yield the pairs, or return a list of them"), message
    # (in the failure's position, its owner's, which says what the value is)
    assert f"{method}'s return value 2" in str(failed.value)
    # no retry can mend it: failed on a second attempt, not after --max-attempts
    assert "failed 2 times" in message, message


# -- an input directory whose files are all skipped -------------------------------------------
def test_a_directory_of_skipped_names_says_why_it_holds_no_file(tmp_path):
    (tmp_path / "wc.py").write_text(ONE_JOB)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / ".hidden.txt").write_text("a\n")
    (tmp_path / "in" / "_part.txt").write_text("a\n")
    proc = _cli(tmp_path, "run", "wc.py:WordCount", "in", "--workers", "1")
    assert proc.returncode == 2, proc.stderr
    assert _last_line(proc) == (
        "pymapreduce: error: input directory 'in' holds no file to read: names starting "
        "with '.' or '_' are skipped (.hidden.txt, _part.txt); give a file's own path to "
        "read it")
    proc = _cli(tmp_path, "run", "wc.py:WordCount", "in/_part.txt", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['["a", 1]']
    (tmp_path / "empty").mkdir()  # nothing at all: as before
    proc = _cli(tmp_path, "run", "wc.py:WordCount", "empty", "--workers", "1")
    assert _last_line(proc) == "pymapreduce: error: input directory 'empty' holds no file"


def test_an_embedded_run_of_one_worker_says_one_worker_process(tmp_path):
    (tmp_path / "wc.py").write_text(ONE_JOB)
    (tmp_path / "in.txt").write_text("a\n")
    for workers, said in (("1", "1 worker process\n"), ("2", "2 worker processes\n")):
        proc = _cli(tmp_path, "run", "wc.py:WordCount", "in.txt", "--workers", workers)
        assert proc.returncode == 0, proc.stderr
        assert f"running on an embedded cluster of {said}" in proc.stderr, proc.stderr


ANNOTATED = """
from pymapreduce import Job


class Ranks(Job):
    def __init__(self, nodes: int, iterations: int = 10) -> None:
        self.nodes = nodes
        self.iterations = iterations

    def map(self, key, line):
        yield line, 1
"""


def test_a_missing_parameter_shows_the_constructor_as_p_names_it(tmp_path):
    # the annotations (nodes: 'int', -> 'None') are not what -p name=value gives
    (tmp_path / "ranks.py").write_text(ANNOTATED)
    (tmp_path / "in.txt").write_text("a\n")
    proc = _cli(tmp_path, "run", "ranks.py:Ranks", "in.txt", "--workers", "1")
    assert proc.returncode == 2, proc.stderr
    assert _last_line(proc) == (
        "pymapreduce: error: Ranks(nodes, iterations=10): missing a required argument: "
        "'nodes' (parameters given with -p name=value: none)")


def test_the_brokers_help_names_its_default_address(tmp_path):
    proc = _cli(tmp_path, "broker", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "(default tcp://127.0.0.1:5555;" in " ".join(proc.stdout.split())


# -- an mrjob job on a shared broker, interrupted or timed out -------------------------------
MR_JOB = """
from mrjob.job import MRJob


class MRCount(MRJob):
    def mapper(self, _, line):
        yield line, 1

    def reducer(self, key, values):
        yield key, sum(values)
"""


def _jobs_of(address: str) -> list[dict]:
    from pymapreduce import Client

    with Client(address, timeout=20) as client:
        return client.jobs()


def _said_job_id(proc: subprocess.Popen) -> str:
    """The job's id, once `pymapreduce run` has said it on stderr (lines before it kept
    for the message of a failure)."""
    said = []
    for line in proc.stderr:
        said.append(line)
        match = re.match(r"pymapreduce: job (\S+) (submitted|running)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no job id said (exit {proc.wait()}): {''.join(said)}")


@pytest.mark.parametrize("how", ["interrupt", "timeout"])
def test_an_mrjob_job_the_command_stops_waiting_for_is_cancelled(daemons, tmp_path, how):
    pytest.importorskip("mrjob")
    import signal

    _, address = daemons.broker()  # no worker: the job stays queued until cancelled
    (tmp_path / "mr_count.py").write_text(MR_JOB)
    (tmp_path / "in.txt").write_text("a\nb\na\n")
    extra = ["--timeout", "0.5"] if how == "timeout" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymapreduce", "run", "mr_count.py", "in.txt",
         "--connect", address, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT})
    try:
        job_id = _said_job_id(proc)
        if how == "interrupt":
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == (130 if how == "interrupt" else 5), err
    assert f"pymapreduce: job {job_id} cancelled, so that it does not go on unwatched" in err
    assert [(j["job_id"], j["state"]) for j in _jobs_of(address)] == [(job_id, "cancelled")]


# -- SIGTERM to `pymapreduce run` (a scheduler's timeout, `kill PID`) --------------------------
SLEEPS = """
import time

from pymapreduce import Job


class WordCount(Job):
    def map(self, key, line):
        time.sleep(3600)  # (until its run is stopped)
        yield line, 1
"""


def _run_until_submitted(tmp_path, source: str, *args: str) -> tuple[subprocess.Popen, str]:
    """`pymapreduce run` of the job in ``source``, once it has said its job's id."""
    (tmp_path / "wc.py").write_text(source)
    (tmp_path / "in.txt").write_text("a b a\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymapreduce", "run", "wc.py:WordCount", "in.txt", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT})
    return proc, _said_job_id(proc)


def test_sigterm_to_run_cancels_its_job_on_a_shared_broker(daemons, tmp_path):
    import signal

    _, address = daemons.broker()  # no worker: the job stays queued until cancelled
    proc, job_id = _run_until_submitted(tmp_path, ONE_JOB, "--connect", address)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert f"pymapreduce: job {job_id} cancelled, so that it does not go on unwatched" in err
    assert err.rstrip().endswith("pymapreduce: terminated"), err
    assert [(j["job_id"], j["state"]) for j in _jobs_of(address)] == [(job_id, "cancelled")]


def test_sigterm_to_an_embedded_run_stops_its_cluster(tmp_path):
    import signal

    from .conftest import children, wait_dead

    proc, _ = _run_until_submitted(tmp_path, SLEEPS, "--workers", "1")
    try:
        family = children(proc.pid)
        family += [kid for pid in family for kid in children(pid)]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        left = wait_dead(family, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert err.rstrip().endswith("pymapreduce: terminated"), err
    assert left == [], left


# -- --connect given the data address or the http port of the broker's ready line -----------
def test_a_client_given_another_address_of_the_ready_line_says_so(tmp_path):
    from .conftest import READY, pmr, read_line, stop

    broker = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--http",
                                  "127.0.0.1:0", "--log-level", "WARNING", "--parent-pid",
                                  str(os.getpid())), stdout=subprocess.PIPE, cwd=ROOT)
    try:
        line = read_line(broker, READY).string
        data = re.search(r"\(data (tcp://\S+?);", line).group(1)
        http = re.search(r"http http://([\d.:]+)/", line).group(1)
        for wrong in (data, f"tcp://{http}"):
            proc = _cli(tmp_path, "status", "--connect", wrong, "--timeout", "2")
            assert proc.returncode == 3, proc.stderr
            assert _last_line(proc) == (
                f"pymapreduce: error: the broker at {wrong} did not answer a request for the "
                "job listing within 2s; something listens there, but not a broker's address "
                "for clients and workers (the first address of its ready line; not its data "
                "address or its http port), or a broker that is stopped")
        proc = _cli(tmp_path, "status", "--connect", READY.search(line).group(1))
        assert proc.returncode == 0, proc.stderr
    finally:
        stop(broker)


def test_a_client_of_a_stopped_broker_is_told_the_broker_may_be_stopped(tmp_path):
    """A broker frozen by SIGSTOP: its kernel accepts the connection and nothing answers,
    as at an address that is not a broker's; the message names both."""
    from .conftest import READY, pmr, read_line, stop

    broker = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--log-level",
                                  "WARNING", "--parent-pid", str(os.getpid())),
                              stdout=subprocess.PIPE, cwd=ROOT)
    try:
        address = READY.search(read_line(broker, READY).string).group(1)
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            proc = _cli(tmp_path, "status", "--connect", address, "--timeout", "2")
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        assert proc.returncode == 3, proc.stderr
        assert _last_line(proc).endswith(", or a broker that is stopped"), proc.stderr
        proc = _cli(tmp_path, "status", "--connect", address)  # thawed: it answers
        assert proc.returncode == 0, proc.stderr
    finally:
        stop(broker)


def test_a_client_given_a_closed_port_still_asks_whether_the_broker_runs(tmp_path):
    import socket

    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
        proc = _cli(tmp_path, "status", "--connect", address, "--timeout", "1")
    assert proc.returncode == 3, proc.stderr
    assert _last_line(proc).endswith(
        "within 1s (is it running, and is this the right address?)"), proc.stderr


# -- Ctrl-C while submit() waits for the broker's answer ------------------------------------
INTERRUPTED_SUBMIT = """
import sys

from pymapreduce import Client, Job
from pymapreduce.client import client as client_module
from pymapreduce.patterns import protocol as P


class Count(Job):
    def map(self, key, line):
        yield line, 1


original = client_module.Client._try_send


def said(self, request):  # (the test interrupts once the SUBMIT has left)
    sent = original(self, request)
    if sent and request.command == P.SUBMIT:
        print("submitted", request.body["job_id"], flush=True)
    return sent


client_module.Client._try_send = said
with Client(sys.argv[1], timeout=30) as client:
    client.submit(Count(), [(0, "a"), (1, "b")])
"""


def test_an_interrupted_submit_leaves_no_job_running(daemons, tmp_path):
    """Ctrl-C while ``submit()`` waits for the broker's answer (a slow link) raises
    KeyboardInterrupt without a handle to stop the job with: the client cancels the job
    itself, so nothing it submitted goes on unwatched."""
    import signal

    from .delayproxy import DelayProxy

    _, address = daemons.broker()  # no worker: a job stays queued until cancelled
    host, port = address.rsplit("//", 1)[1].rsplit(":", 1)
    # the SUBMIT reaches the broker at once, its answer comes back a second later
    proxy = DelayProxy((host, int(port)), 0.0, back=1.0)
    (tmp_path / "submit.py").write_text(INTERRUPTED_SUBMIT)
    proc = subprocess.Popen([sys.executable, "submit.py", f"tcp://127.0.0.1:{proxy.port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        line = proc.stdout.readline()
        assert line.startswith("submitted "), (line, proc.stderr.read())
        job_id = line.split()[1]
        proc.send_signal(signal.SIGINT)  # (the broker has the job, or soon will)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        proxy.close()
    assert "KeyboardInterrupt" in err
    assert [(j["job_id"], j["state"]) for j in _jobs_of(address)] == [(job_id, "cancelled")]


def test_a_failing_line_read_with_its_file_name_is_placed_at_its_byte():
    """A text record whose key is ``(path, offset)`` (``read_text(with_path=True)``, and
    every mrjob job) fails at "the line at byte N", as a plain text record does, on the
    command line and on the dashboard; other keys are still shown as keys."""
    from pymapreduce.errors import describe_position
    from pymapreduce.observe.events import safe_position

    path = "/data/in.txt"
    for key in ("4", repr((path, 4))):
        where = {"path": path, "key": key, "split": 0}
        assert describe_position(where) == f"file {path}, the line at byte 4 (map split 0)"
        assert safe_position(where) == {"split": 0, "path": path, "offset": 4}
    for key in (repr(("/other.txt", 4)), repr((path, "4")), "(x, 4)", "-4"):
        where = {"path": path, "key": key, "split": 0}
        assert describe_position(where) == f"file {path}, record key {key} (map split 0)"
        assert "offset" not in safe_position(where)


def test_logs_of_a_task_numbered_past_any_job_is_an_error_naming_the_tasks():
    from pymapreduce.cli import check_task_exists
    from pymapreduce.errors import ConfigError

    status = {"job_id": "j", "maps": [2, 2], "reduces": [0, 1], "step": [1, 1]}
    check_task_exists(status, "map-1")
    for task in ("map-2", "map-" + "9" * 5000):
        with pytest.raises(ConfigError, match="its map tasks are map-0 to map-1"):
            check_task_exists(status, task)


# -- a total-order job's map, run on a sample in the client -------------------------------------
SORTED_RETURNS_COUNT = """
from pymapreduce import Job


class Sorted(Job):
    total_order = True

    def map(self, key, line):
        return len(line.split())  # meant: yield line, 1
"""


def test_a_total_order_map_that_returns_no_pairs_is_bad_output_not_an_internal_error(
        tmp_path):
    """A total-order job's map runs first in the client, on a sample of the inputs (to cut
    the key ranges): one that returns a number there is the job's BadOutput, as on the
    workers, not a TypeError the command takes for a bug in pymapreduce (exit 70)."""
    (tmp_path / "sorted.py").write_text(SORTED_RETURNS_COUNT)
    (tmp_path / "in.txt").write_text("a b\nc\n")
    proc = _cli(tmp_path, "run", "sorted.py", "in.txt", "--workers", "1")
    assert proc.returncode == 2, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert _last_line(proc) == (
        "pymapreduce: error: Sorted.map returned 2 (of type int), not an iterable of (key, "
        "value) pairs: yield the pairs, or return a list of them")


def test_the_sample_of_a_total_order_job_reads_map_s_output_as_the_workers_do():
    """``None`` is no pairs; any other value that cannot be iterated, ``0`` too, is
    BadOutput naming the method (``map_final`` as well); an iterable whose truth value
    cannot be asked (an array) is read as what it yields."""
    from pymapreduce.errors import BadOutput
    from pymapreduce.sampling import sample_keys

    class Pairs:  # (no __len__, and a truth value that raises, as an array's)
        def __init__(self, pairs):
            self.pairs = pairs

        def __iter__(self):
            return iter(self.pairs)

        def __bool__(self):
            raise ValueError("the truth value of an array is ambiguous")

    class Sorted(Job):
        total_order = True
        out = None
        final = None

        def map(self, key, line):
            return self.out if self.out != "pairs" else Pairs([(line, 1)])

        def map_final(self):
            return self.final

    records = [(0, "b"), (1, "a")]
    job = Sorted()
    assert sample_keys(job, None, records) == []
    job.out = "pairs"
    assert sample_keys(job, None, records) == ["b", "a"]
    for method, value in (("map", 0), ("map", 5), ("map_final", 7)):
        job.out, job.final = (value, None) if method == "map" else (None, value)
        with pytest.raises(BadOutput) as bad:
            sample_keys(job, None, records)
        assert str(bad.value).startswith(f"Sorted.{method} returned {value} (of type int), "
                                         "not an iterable of (key, value) pairs"), bad.value


# -- a Python without pymapreduce's dependencies (a service account's, a venv not active) ----
def test_a_python_without_pyzmq_is_told_to_install_it_not_to_fix_a_job_module(tmp_path):
    # python -S leaves site-packages out, as a Python without pymapreduce's dependencies
    for args in (["status", "--connect", "tcp://127.0.0.1:1"],
                 ["worker", "--connect", "tcp://127.0.0.1:1"]):
        proc = subprocess.run([sys.executable, "-S", "-m", "pymapreduce", *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": ROOT})
        assert proc.returncode == 2, proc.stderr
        line = _last_line(proc)
        assert line.startswith("pymapreduce: error: No module named 'zmq': pymapreduce "
                               "needs the package 'pyzmq'"), line
        assert f"{sys.executable} -m pip install pyzmq" in line, line
        assert "module:Class" not in line, line
