"""When things go wrong, show where: task logs per attempt, tracebacks with the user's
source, the input position in JobFailed, counters that are current; against real
daemons (and the log store's bounds without sockets)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pymapreduce import Client, Job, JobFailed, JobNotFound, read_text
from pymapreduce.broker.logstore import ENTRY_OVERHEAD, LogStore
from pymapreduce.client.logs import printable
from pymapreduce.patterns import security
from pymapreduce.workers.capture import HEAD, TAIL, TaskLog
from pymapreduce.workers.supervisor import CAPTURE_FDS_ENV

from .conftest import FAST, ROOT, pmr, wait_workers
from .test_security import other_keys, wait_workers_secured

RECORDS = [(i, f"w{i % 5} x{i % 3}") for i in range(40)]
# no backup attempts: on a busy machine they would add attempts (and their logs, rightly)
# to tests that count attempts
STEADY = [*FAST, "--backup-after", "off"]


@pytest.fixture
def steady(daemons):
    """A broker without backup attempts and one worker daemon with two processes."""
    _, address = daemons.broker(*STEADY)
    daemons.worker(address, 2)
    wait_workers(address, 2)
    return address


class Chatty(Job):
    """Prints a line per record in map and per key in reduce, and logs through logging."""

    def map(self, key, line):
        print(f"map saw record {key}")
        logging.getLogger("chatty").warning("warned at record %s", key)
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        print(f"reduce saw {word}", file=sys.stderr)
        self.count("keys")
        return sum(counts)


class FailsLoudly(Job):
    def map(self, key, line):
        print(f"about to look at record {key}")
        if key == 7:
            raise ValueError(f"record {key} is bad")
        yield key, line


class Flood(Job):
    """Prints far more than a task log keeps."""

    def map(self, key, line):
        print(f"first line of task {key}")
        for i in range(20_000):
            print(f"line {i} of a flood of output from record {key}")
        print(f"last line of task {key}")
        yield key, 1


class Counting(Job):
    def map(self, key, line):
        self.count("records")
        for word in line.split():
            self.count("words")
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


def test_logs_of_a_printing_job_are_kept_per_attempt_and_per_task(steady):
    with Client(steady) as client:
        handle = client.submit(Chatty(), RECORDS, map_tasks=4, reducers=2)
        assert handle.result(60)["w0"] == 8
        logs = handle.logs()
        by_task = {e["task"]: e for e in logs}
        assert set(by_task) == {"map-0", "map-1", "map-2", "map-3", "reduce-0", "reduce-1"}
        for entry in logs:
            assert entry["state"] == "done" and entry["attempt"] == 1 and entry["step"] == 1
            assert entry["worker"]  # the process that ran it (host:pid)
        seen = "".join(by_task[f"map-{i}"]["text"] for i in range(4))
        for key, _ in RECORDS:  # every record's line, each in exactly one map task's log
            assert seen.count(f"map saw record {key}\n") == 1
            assert f"WARNING chatty: warned at record {key}\n" in seen
        reduced = by_task["reduce-0"]["text"] + by_task["reduce-1"]["text"]
        for word in ("w0", "w4", "x2"):
            assert f"reduce saw {word}\n" in reduced  # stderr is kept too
        only = handle.logs("map-2")
        assert [e["task"] for e in only] == ["map-2"]
        assert only[0]["text"] == by_task["map-2"]["text"]
        assert "=== map-2 attempt 1 on " in only.text()
        handle.release()  # frees the outputs; the status row and the logs stay until the TTL
        assert handle.logs("map-2")[0]["text"] == by_task["map-2"]["text"]


def test_a_failed_attempt_keeps_its_output_and_its_traceback(daemons):
    _, address = daemons.broker(*STEADY, "--max-attempts", "2")
    daemons.worker(address, 2)
    wait_workers(address, 2)
    with Client(address) as client:
        handle = client.submit(FailsLoudly(), RECORDS[:10], map_tasks=2, reducers=1)
        with pytest.raises(JobFailed):
            handle.result(60)
        failed = [e for e in handle.logs() if e["state"] == "failed"]
        assert [e["attempt"] for e in failed] == [1, 2]
        for entry in failed:
            assert entry["task"] == "map-1"
            assert "about to look at record 7\n" in entry["text"]
            assert "[the attempt failed]" in entry["text"]
            assert "Traceback (most recent call last)" in entry["text"]
            assert "ValueError: record 7 is bad" in entry["text"]
        assert [e["state"] for e in handle.logs("map-0")] == ["done"]


class FailsInMap(Counting):
    def map(self, key, line):
        if key == 7:
            raise ValueError(f"record {key} is bad")
        yield from super().map(key, line)


def test_logs_of_a_task_that_never_ran_say_so_not_that_it_printed_nothing(daemons):
    """reduce-0 of a job that failed in its map phase never ran: `pymapreduce logs` says
    so, where it said the task "printed and logged nothing"; a task that ran silent still
    gets that line."""
    _, address = daemons.broker(*STEADY, "--max-attempts", "2")
    daemons.worker(address, 2)
    wait_workers(address, 2)
    with Client(address) as client:
        handle = client.submit(FailsInMap(), RECORDS[:10], map_tasks=2, reducers=1)
        with pytest.raises(JobFailed):
            handle.result(60)
        assert handle.logs("reduce-0") == [] and handle.logs("reduce-0").attempts == 0
        assert handle.logs("map-1").attempts is None  # (it has logs: its traceback)
        quiet = client.submit(Counting(), RECORDS[:10], map_tasks=2, reducers=1)
        quiet.result(60)
        assert quiet.logs("map-0") == [] and quiet.logs("map-0").attempts == 1

    def logs(job_id: str, task: str) -> subprocess.CompletedProcess:
        return subprocess.run(pmr("logs", "--connect", address, job_id, task),
                              capture_output=True, text=True, timeout=60, cwd=ROOT)

    never = logs(handle.job_id, "reduce-0")
    assert never.returncode == 0 and never.stdout == ""
    assert never.stderr == (f"pymapreduce: no logs for task reduce-0 of job {handle.job_id}: "
                            "it never ran (the job failed before it could run)\n")
    silent = logs(quiet.job_id, "reduce-0")
    assert silent.returncode == 0 and "printed and logged nothing" in silent.stderr


def test_a_flood_of_output_is_kept_bounded_with_its_ends(steady):
    with Client(steady) as client:
        handle = client.submit(Flood(), [(k, "") for k in range(3)], map_tasks=3)
        handle.result(120)
        logs = handle.logs()
        assert len(logs) == 3
        for entry in logs:
            data = entry["text"].encode()
            # each task printed ~1 MB; its log is its first and last 32 KiB and a marker
            assert len(data) <= HEAD + TAIL + 200
            assert "bytes of this attempt's output left out" in entry["text"]
            key = entry["text"].split("first line of task ", 1)[1].split("\n", 1)[0]
            assert entry["text"].startswith(f"first line of task {key}\n")
            assert entry["text"].endswith(f"last line of task {key}\n")
        assert client.info()["workers"] == 2  # the broker and the workers carry on


def test_task_log_keeps_head_and_tail_and_counts_the_rest():
    log = TaskLog(head=10, tail=10)
    for i in range(1000):
        log.write(f"{i:04d}\n")
    out = log.getvalue()
    assert out.startswith(b"0000\n0001\n") and out.endswith(b"0998\n0999\n")
    assert b"[... 4980 bytes of this attempt's output left out ...]" in out


def test_the_broker_keeps_logs_within_a_cap_per_job_and_in_all():
    class FakeJob:
        def __init__(self, job_id):
            self.id, self.step = job_id, 0

    class FakeTask:
        def __init__(self, job, name):
            self.job, self.name = job, name

    store = LogStore(job_cap=10_000, total_cap=25_000)
    a, b = FakeJob("a"), FakeJob("b")
    store.keep(FakeTask(a, "map-0"), 1, "w", "failed", b"F" * 3000)
    for i in range(10):
        store.keep(FakeTask(a, f"map-{i + 1}"), 1, "w", "done", b"x" * 3000)
    entries, dropped = store.read("a")
    # the job's cap: the oldest successful attempts' logs went first, the failure stayed
    assert entries[0]["state"] == "failed" and len(entries) == 3 and dropped == 8
    assert [e["task"] for e in entries[1:]] == ["map-9", "map-10"]
    assert store.size == 3 * (3000 + ENTRY_OVERHEAD)
    for i in range(6):
        store.keep(FakeTask(b, f"map-{i}"), 1, "w", "done", b"y" * 2000)
    assert store.size <= 25_000
    store.keep(None, 1, "w", "done", b"stale attempt")  # not kept
    store.keep(FakeTask(b, "map-9"), 1, "w", "done", "not bytes")  # not a log
    assert len(store.read("b")[0]) == 4
    store.drop("a")
    store.drop("b")
    assert store.size == 0 and store.read("a") == ([], 0)


def test_only_the_jobs_owner_may_read_its_logs(daemons, tmp_path):
    keys = security.cluster_keys(str(tmp_path / "keys"))
    stranger = other_keys(tmp_path, keys, "client")  # a second tenant, let in from the start
    subprocess.run(pmr("keys", "authorize", keys, "client",
                       os.path.join(stranger, "client.key")), check=True, cwd=ROOT,
                   capture_output=True, timeout=30)
    _, address = daemons.broker("--keys", keys, *STEADY)
    daemons.worker(address, 1, "--keys", keys)
    wait_workers_secured(address, keys, 1)
    with Client(address, keys=keys) as owner:
        handle = owner.submit(Chatty(), RECORDS[:5], map_tasks=1, reducers=1)
        handle.result(60)
        assert "map saw record 4" in handle.logs().text()
        job_id = handle.job_id
    with Client(address, keys=stranger, timeout=30) as other:
        with pytest.raises(JobNotFound, match="belongs to another client key"):
            other._request("LOGS", {"job_id": job_id})
    denied = subprocess.run(pmr("logs", "--connect", address, "--keys", stranger, job_id),
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert denied.returncode != 0 and "map saw" not in denied.stdout


def _script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def test_print_in_map_reaches_the_terminal_in_embedded_mode(tmp_path):
    script = _script(tmp_path, "embedded.py", """
        import logging, sys
        from pymapreduce import Job

        class Shout(Job):
            def map(self, key, line):
                print(f"printed by map for record {key}")
                print(f"complained by map for record {key}", file=sys.stderr)
                logging.getLogger("shout").warning("logged by map for record %s", key)
                yield line, 1

            def reduce(self, word, counts):
                return sum(counts)

        if __name__ == "__main__":
            print("before the job", flush=True)
            result = Shout().run([(i, "w") for i in range(5)], workers=2, map_tasks=2)
            print("result", result)
    """)
    proc = _python(script)
    assert proc.returncode == 0, proc.stderr
    for i in range(5):
        assert f"printed by map for record {i}\n" in proc.stdout
        assert f"complained by map for record {i}\n" in proc.stderr
        assert f"WARNING shout: logged by map for record {i}\n" in proc.stderr
    assert proc.stdout.startswith("before the job\n")
    assert proc.stdout.endswith("result {'w': 5}\n")


def test_a_remote_traceback_shows_the_users_file_and_lines(tmp_path, cluster):
    # The job's code exists only in this client's linecache (as a notebook cell's does):
    # the worker can show its lines only if the client shipped them.
    script = _script(tmp_path, "notebook.py", """
        import linecache, sys
        from pymapreduce import Client, JobFailed

        CELL = '''
        from pymapreduce import Job

        class Picky(Job):
            def map(self, key, line):
                value = int(line)  # the user's own line
                yield key, value
        '''
        NAME = "/nowhere/on/the/workers/cell_17.py"
        linecache.cache[NAME] = (len(CELL), None, CELL.splitlines(True), NAME)
        exec(compile(CELL, NAME, "exec"), globals())
        with Client(sys.argv[1]) as client:
            try:
                client.submit(Picky(), [(0, "1"), (1, "one")], map_tasks=1).result(60)
            except JobFailed as exc:
                print(exc)
    """)
    proc = _python(script, cluster)
    assert proc.returncode == 0, proc.stderr
    assert 'File "/nowhere/on/the/workers/cell_17.py", line 6, in map' in proc.stdout
    assert "value = int(line)  # the user's own line" in proc.stdout
    assert "Input: record 1 of map split 0, key 1" in proc.stdout

    # a job in the script being run (__main__), pickled by value
    script = _script(tmp_path, "mainjob.py", """
        import sys
        from pymapreduce import Client, Job, JobFailed

        class Divide(Job):
            def map(self, key, line):
                yield key, 100 // int(line)  # divides by the record

        with Client(sys.argv[1]) as client:
            try:
                client.submit(Divide(), [(0, "4"), (1, "0")], map_tasks=1).result(60)
            except JobFailed as exc:
                print(exc)
    """)
    proc = _python(script, cluster)
    assert proc.returncode == 0, proc.stderr
    assert f'File "{script}", line 7, in map' in proc.stdout
    assert "yield key, 100 // int(line)  # divides by the record" in proc.stdout
    assert "ZeroDivisionError" in proc.stdout and "<dynamic-code>" not in proc.stdout


def test_job_failed_names_the_input_file_and_offset(cluster, tmp_path):
    path = tmp_path / "input.txt"
    lines = ["fine", "also fine", "BAD line", "fine again"]
    path.write_text("\n".join(lines) + "\n")
    offset = len("fine\nalso fine\n")
    with Client(cluster) as client:
        handle = client.submit(FailsOnBad(), read_text([str(path)]), reducers=1)
        with pytest.raises(JobFailed) as info:
            handle.result(60)
    assert info.value.position["path"] == str(path)
    assert f"Input: file {path}, the line at byte {offset} (map split 0)" in str(info.value)


class FailsOnBad(Job):
    def map(self, offset, line):
        if line.startswith("BAD"):
            raise ValueError("a bad line")
        yield line, 1


class FailsAtTheEnd(Job):
    skip_bad_records = True

    def map(self, offset, line):
        yield line, 1

    def map_final(self):
        raise ValueError("at the end")


def test_a_failure_of_no_record_names_none_and_skips_none(cluster, tmp_path):
    """map_final failing is no record's fault: the error names the file, not the last
    record read, and a job that skips bad records does not skip that one: it fails."""
    path = tmp_path / "input.txt"
    path.write_text("one\ntwo\nthree\n")
    with Client(cluster) as client:
        handle = client.submit(FailsAtTheEnd(), read_text([str(path)]), reducers=1)
        with pytest.raises(JobFailed, match="at the end") as info:
            handle.result(60)
        assert handle.status()["skipped"] == []
    assert info.value.position["path"] == str(path)
    assert "key" not in info.value.position and "ordinal" not in info.value.position


def test_counters_are_current_after_results_and_on_a_reattached_handle(cluster):
    with Client(cluster) as client:
        handle = client.submit(Counting(), RECORDS, map_tasks=3, reducers=2)
        pairs = dict(handle.results())
        assert pairs["w1"] == 8
        expected = {"records": 40, "words": 80}
        assert handle.counters == expected
        again = client.job(handle.job_id)
        assert again.counters == expected
    with Client(cluster) as other:  # another connection, as another process would
        assert other.job(handle.job_id).counters == expected


def test_cli_logs_and_run_prints_counters(cluster, tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("a b a\nc a\n")
    job_file = _script(tmp_path, "countjob.py", """
        from pymapreduce import Job

        class Words(Job):
            def map(self, offset, line):
                print(f"line at {offset}: \\x1b]0;retitled\\x07{line}")
                if line == "x" * 10:
                    raise ValueError("no x here")
                for word in line.split():
                    self.count("words")
                    yield word, 1

            def reduce(self, word, counts):
                return sum(counts)
    """)
    run = subprocess.run(pmr("run", f"{job_file}:Words", str(data), "--connect", cluster),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert sorted(run.stdout.splitlines()) == ['["a", 3]', '["b", 1]', '["c", 1]']
    assert "counters:\n  words: 5\n" in run.stderr
    job_id = run.stderr.split("pymapreduce: job ", 1)[1].split()[0]
    bad = tmp_path / "bad.txt"
    bad.write_text("ok\n" + "x" * 10 + "\n")
    failed = subprocess.run(pmr("run", f"{job_file}:Words", str(bad), "--connect", cluster),
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert failed.returncode != 0 and f"Input: file {bad}, the line at byte 3" in failed.stderr
    # `run` releases its job's outputs when done; its status and logs stay until the TTL
    kept = subprocess.run(pmr("logs", "--connect", cluster, job_id), capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert kept.returncode == 0, kept.stderr
    assert "line at 0: \x1b]0;retitled\x07a b a\n" in kept.stdout  # not a tty: as printed
    gone = subprocess.run(pmr("logs", "--connect", cluster, "no-such-job"),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert gone.returncode != 0 and "no job" in gone.stderr

    with Client(cluster) as client:
        handle = client.submit(Chatty(), RECORDS[:6], map_tasks=2, reducers=1)
        handle.result(60)
        logs = subprocess.run(pmr("logs", "--connect", cluster, handle.job_id),
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert logs.returncode == 0, logs.stderr
        assert re.search(r"^=== map-0 attempt \d+ on \S+ \(done\) ===$", logs.stdout, re.M)
        assert "=== reduce-0 " in logs.stdout
        one = subprocess.run(pmr("logs", "--connect", cluster, handle.job_id, "map-1"),
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert "map saw record 5\n" in one.stdout and "map-0" not in one.stdout


def test_log_text_is_made_harmless_for_a_terminal():
    text = "ok\tcolumn\nred \x1b[31mtext\x1b[0m\rover\x07 \u202eevil\r\n"
    shown = printable(text)
    assert shown == "ok\tcolumn\nred \\x1b[31mtext\\x1b[0m\\x0dover\\x07 \\u202eevil\n"
    assert not any(ch in shown for ch in "\x1b\r\x07\u202e")


def test_embedded_run_cli_keeps_stdout_for_the_pairs(tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("a b a\n")
    job_file = _script(tmp_path, "printjob.py", """
        from pymapreduce import Job

        class Words(Job):
            def map(self, offset, line):
                print(f"map printed the line at {offset}")
                for word in line.split():
                    yield word, 1

            def reduce(self, word, counts):
                return sum(counts)
    """)
    run = subprocess.run(pmr("run", f"{job_file}:Words", str(data), "--workers", "1"),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert sorted(run.stdout.splitlines()) == ['["a", 2]', '["b", 1]']
    assert "map printed the line at 0\n" in run.stderr


# descriptors 1 and 2 kept in task logs: on by default (docs/logs.md), and for these tests
# whatever the environment they run in says
CAPTURING = {**os.environ, CAPTURE_FDS_ENV: "1"}


def _worker_logging_to(daemons, address: str, processes: int, path, level: str) -> None:
    """A worker daemon that captures descriptors 1 and 2, whose stderr (its log) goes to
    the file ``path``."""
    with open(path, "wb") as err:
        daemons.procs.append(subprocess.Popen(
            pmr("worker", "--connect", address, "--processes", str(processes),
                "--log-level", level, "--parent-pid", str(os.getpid())),
            stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=CAPTURING))
    wait_workers(address, processes)


def _wait_for_in(path, text: bytes, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_bytes():
        assert time.monotonic() < deadline, path.read_bytes()
        time.sleep(0.1)


def _log_of_one_task(daemons, tmp_path, job: Job, timeout: float = 60) -> str:
    """The log of a one-record, one-task map-only job on a capturing worker daemon of one
    process (its own log in ``tmp_path / "worker.err"``)."""
    _, address = daemons.broker(*STEADY)
    _worker_logging_to(daemons, address, 1, tmp_path / "worker.err", "WARNING")
    with Client(address) as client:
        handle = client.submit(job, [(0, "x")], map_tasks=1, reducers=0)
        handle.result(timeout)
        return handle.logs()[0]["text"]


class Subprocesses(Job):
    """Writes past ``sys.stdout``: a subprocess's stdout and stderr, and descriptor 1
    written to directly, as a C library would."""

    def map(self, key, line):
        subprocess.run(["sh", "-c", f"echo child out {key}; echo child err {key} >&2"],
                       check=True)
        subprocess.run(["sh", "-c", f"echo handed stdout {key}"], stdout=sys.stdout,
                       check=True)
        os.write(1, f"fd one {key}\n".encode())
        print(f"printed {key}")
        yield line, 1

    def reduce(self, word, counts):
        return sum(counts)


def test_what_subprocesses_and_descriptors_write_is_kept_in_the_attempts_log(daemons,
                                                                             tmp_path):
    """Descriptors 1 and 2 of a worker process are captured per attempt: each record's
    lines are in exactly one map task's log, in the order written; what a process a task
    left behind writes after the task goes to the worker daemon's stderr, not into a
    later task's log; the daemon's own log lines stay out of the tasks' logs."""
    _, address = daemons.broker(*STEADY)
    _worker_logging_to(daemons, address, 2, tmp_path / "worker.err", "INFO")
    records = [(i, f"w{i % 2}") for i in range(8)]
    with Client(address) as client:
        handle = client.submit(Subprocesses(), records, map_tasks=4, reducers=1)
        assert handle.result(60) == {"w0": 4, "w1": 4}
        logs = {e["task"]: e["text"] for e in handle.logs()}
        maps = [logs[f"map-{i}"] for i in range(4)]
        for key, _ in records:
            lines = [f"child out {key}\n", f"child err {key}\n", f"handed stdout {key}\n",
                     f"fd one {key}\n", f"printed {key}\n"]
            holders = [text for text in maps if lines[0] in text]
            assert len(holders) == 1, (key, maps)
            # the descriptors' lines in the order written (each before the next began);
            # the print is in the log too, but where among them is not kept (docs/logs.md)
            at = [holders[0].index(line) for line in lines[:4]]
            assert at == sorted(at), holders[0]
            assert lines[4] in holders[0]
            assert all(line not in text for text in maps if text is not holders[0]
                       for line in lines)
        assert "child" not in logs.get("reduce-0", "")  # (a task that wrote nothing: none)

        class LeavesOneBehind(Job):
            def map(self, key, line):
                subprocess.Popen(["sh", "-c", "sleep 0.5; echo left behind by a task"])
                yield line, 1

        handle = client.submit(LeavesOneBehind(), [(0, "x")], map_tasks=1, reducers=0)
        handle.result(60)
        _wait_for_in(tmp_path / "worker.err", b"left behind by a task")
        assert all("left behind" not in e["text"] for e in handle.logs())
    daemon_log = (tmp_path / "worker.err").read_text()
    assert "child out" not in daemon_log and "printed" not in daemon_log
    assert all("INFO" not in text for text in logs.values())  # (the daemon's own lines)


def test_a_subprocess_of_an_embedded_jobs_task_reaches_the_terminal(tmp_path):
    script = _script(tmp_path, "embedded_sub.py", """
        import subprocess
        from pymapreduce import Job

        class Shell(Job):
            def map(self, key, line):
                subprocess.run(["sh", "-c", f"echo shell out {key}; echo shell err {key} >&2"])
                yield line, 1

            def reduce(self, word, counts):
                return sum(counts)

        if __name__ == "__main__":
            print("result", Shell().run([(i, "w") for i in range(3)], workers=2, map_tasks=3))
    """)
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**CAPTURING, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    for i in range(3):  # (before, the subprocess's stdout went nowhere)
        assert f"shell out {i}\n" in proc.stderr and f"shell err {i}\n" in proc.stderr
    assert proc.stdout == "result {'w': 3}\n"


class Floods(Job):
    def map(self, key, line):
        subprocess.run(["sh", "-c", "yes flood | head -c 30000000"], check=True)
        yield line, 1


def test_a_subprocess_flood_keeps_a_head_and_a_tail_and_counts_the_rest(daemons, tmp_path):
    """30 MB written to descriptor 1 by a task's subprocess: the attempt's log keeps its
    first and last HEAD/TAIL bytes and says how many it left out (the worker reads no
    more than it keeps, and the file it lands in is emptied as the heartbeat reads it)."""
    text = _log_of_one_task(daemons, tmp_path, Floods(), 120)
    head, _, rest = text.partition("\n[... ")
    left_out, _, tail = rest.partition(" bytes of this attempt's output left out ...]\n")
    assert head.startswith("flood\nflood\n") and tail.endswith("flood\n"), text[:200]
    assert len(head) == HEAD and len(tail) == TAIL
    assert 1_000_000 <= int(left_out) <= 30_000_000 - HEAD - TAIL


def test_a_process_one_job_left_running_never_writes_into_another_jobs_log(daemons,
                                                                           tmp_path):
    """Job A's task starts a process that writes after the task ended, while job B's task
    runs on the same worker process: B's log (its owner's) never holds A's output; the
    worker daemon's stderr does (each job's tasks get descriptors of their own)."""
    _, address = daemons.broker(*STEADY)
    _worker_logging_to(daemons, address, 1, tmp_path / "worker.err", "WARNING")

    class LeavesAWriter(Job):
        def map(self, key, line):
            subprocess.Popen(["sh", "-c", "sleep 1; echo secret of job A"])
            yield line, 1

    class Waits(Job):
        def map(self, key, line):
            time.sleep(3)
            os.write(1, b"job B's own line\n")
            yield line, 1

    with Client(address) as client:
        client.submit(LeavesAWriter(), [(0, "a")], map_tasks=1, reducers=0).result(60)
        b = client.submit(Waits(), [(0, "b")], map_tasks=1, reducers=0)
        b.result(60)
        text = "".join(e["text"] for e in b.logs())
    assert "job B's own line" in text and "secret of job A" not in text, text
    _wait_for_in(tmp_path / "worker.err", b"secret of job A")  # (read when it is idle)


class DiesLoudly(Job):
    """Record 0 writes to descriptor 2 and ends well (its attempt reports it); record 1
    writes and kills its worker process."""

    def map(self, key, line):
        if key == 0:
            os.write(2, b"attempt zero wrote this and reported it\n")
            return
        os.write(2, b"native code's last words before the crash\n")
        os.kill(os.getpid(), signal.SIGKILL)
        yield line, 1


def test_what_a_task_wrote_before_it_killed_its_worker_reaches_the_daemons_log(daemons,
                                                                               tmp_path):
    """The attempt of a task that kills its worker process sends no log; what it wrote to
    descriptor 2 first (a C library's failed assertion, say) is in the process's capture
    file, which the supervisor reads into the daemon's own log as it reaps the process,
    then removes with the process's directories."""
    _, address = daemons.broker(*STEADY, "--max-attempts", "1")
    _worker_logging_to(daemons, address, 1, tmp_path / "worker.err", "WARNING")
    with Client(address) as client:
        with pytest.raises(JobFailed):
            client.submit(DiesLoudly(), [(0, "x"), (1, "y")], map_tasks=2,
                          reducers=0).result(60)
    _wait_for_in(tmp_path / "worker.err", b"last words before the crash")
    text = (tmp_path / "worker.err").read_text()
    assert re.search(r"worker process \d+ \(killed by SIGKILL\) wrote before it ended:\n"
                     r"native code's last words before the crash", text), text
    # (what an earlier attempt of the process wrote went out with its report: not again)
    assert "attempt zero" not in text, text


def _close_capture_files() -> None:
    """In a task: close this worker process's own descriptors of its capture files (as
    code that closes every descriptor it did not open would)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if "/fds-" in target and int(name) > 2:
            os.close(int(name))


class ClosesTheCaptureFile(Job):
    """Closes the worker's own descriptor of its capture file (as code that closes every
    descriptor it did not open would), then prints."""

    def map(self, key, line):
        _close_capture_files()
        print(f"printed {key}")
        yield line, 1

    def reduce(self, word, counts):
        return sum(counts)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_task_that_closes_the_capture_file_breaks_no_worker(daemons, tmp_path):
    """The capture's own descriptor closed under it: capture of descriptors 1 and 2 stops
    for that process with a warning in the daemon's log, and the worker goes on running
    tasks whose prints are still kept."""
    _, address = daemons.broker(*STEADY)
    _worker_logging_to(daemons, address, 1, tmp_path / "worker.err", "WARNING")
    with Client(address) as client:
        handle = client.submit(ClosesTheCaptureFile(), [(i, "w") for i in range(4)],
                               map_tasks=4, reducers=1)
        assert handle.result(60) == {"w": 4}
        texts = {e["task"]: e["text"] for e in handle.logs()}
        assert all(f"printed {i}\n" in texts[f"map-{i}"] for i in range(4)), texts
        assert client.submit(Subprocesses(), [(0, "x")], map_tasks=1).result(60) == {"x": 1}
    _wait_for_in(tmp_path / "worker.err", b"no longer captured")


class ShellReopensStderr(Job):
    """A shell's ``>/dev/stderr`` reopens descriptor 2's file with O_TRUNC, after the task
    wrote more than the shell does: the file shrinks under the capture's read offset."""

    def map(self, key, line):
        os.write(1, b"before the shell " * 200 + b"\n")
        time.sleep(0.2)  # (the heartbeat reads it: the offset moves past the shell's text)
        subprocess.run("echo reopened with truncation >/dev/stderr; echo then appended",
                       shell=True, check=True)
        yield line, 1


def test_a_shell_that_truncates_the_capture_file_loses_nothing_it_wrote(daemons, tmp_path):
    text = _log_of_one_task(daemons, tmp_path, ShellReopensStderr())
    assert "reopened with truncation\n" in text and "then appended\n" in text, text
    assert "before the shell" in text, text


# The capture's kernel alone, each test in a process of its own as a worker process is
# (it moves the process's descriptors 1 and 2, which pytest's own capture also moves)
_KERNEL = """
import os, sys, tempfile
from pymapreduce.workers.capture import Capture
root = tempfile.mkdtemp()
made = []

def maker():
    path = os.path.join(root, f"fds-{len(made)}")
    made.append(path)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600), path

cap = Capture(maker)
"""


def _run_kernel(body: str) -> str:
    """Run ``body`` after _KERNEL in a new Python process; its stderr's last line."""
    done = subprocess.run([sys.executable, "-c", _KERNEL + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_a_writer_appending_while_attempts_end_loses_no_byte():
    """A thread writes numbered lines to descriptor 1 without a pause while attempts
    begin and end: every byte is in exactly one attempt's log, in order (the file is let
    go of by punching out what was read, not cut to 0 under the writer's feet), or, in an
    attempt that got more than its log keeps (a loaded machine can leave the writer alone
    for a while), counted among the bytes its log says it left out."""
    said = _run_kernel("""
        import threading
        stop, written, logs = threading.Event(), [0], []

        def writer():
            while not stop.is_set():
                os.write(1, b"line-%08d\\n" % written[0])
                written[0] += 1

        thread = threading.Thread(target=writer)
        thread.start()
        # (1500 attempts, and on until the writer has had the GIL for 200 lines: on a
        # loaded machine it once wrote 1 line while the 1500 ran)
        import time
        done, deadline = 0, time.monotonic() + 30
        while (done < 1500 or written[0] < 200) and time.monotonic() < deadline:
            log = cap.begin("job")
            cap.end()
            logs.append(log.parts())
            done += 1
        stop.set()
        thread.join()
        log = cap.begin("job")
        cap.end()
        logs.append(log.parts())
        cap.close()
        expected = b"".join(b"line-%08d\\n" % i for i in range(written[0]))
        at, wrong, left_out = 0, 0, 0
        for head, dropped, tail in logs:  # (each log's bytes where the stream has them)
            for part, skip in ((head, dropped), (tail, 0)):
                wrong += part != expected[at:at + len(part)]
                at += len(part) + skip
            left_out += dropped
        print(f"written {written[0]} bytes {len(expected)} accounted {at} wrong {wrong} "
              f"left_out {left_out}", file=sys.stderr)
    """)
    written, total, accounted, wrong, left_out = (int(w) for w in said.split()[1::2])
    assert written > 100 and accounted == total and wrong == 0, said
    assert left_out < total // 2, said  # (most attempts keep all they got)


def test_an_attempts_descriptor_output_between_head_and_tail_sizes_is_kept_whole():
    """More than the log's head and less than its head and tail together, written to
    descriptor 1 in one attempt: all of it is in the attempt's log, in order (its part
    past the head was once left out)."""
    said = _run_kernel(f"""
        lines = b"".join(b"line-%08d\\n" % i for i in range({(HEAD + TAIL) // 14 - 10}))
        log = cap.begin("job")
        os.write(1, lines)
        cap.end()
        print(log.getvalue() == lines, len(lines) > {HEAD}, file=sys.stderr)
        cap.close()
    """)
    assert said == "True True", said


def test_a_stop_signal_inside_begin_waits_until_descriptors_and_streams_are_set():
    """A stop (the broker abandons the task, the worker drains) raised by a signal
    handler while begin() moves descriptors 1 and 2 to a new job's file takes effect
    once that is done: the exception comes out of begin() with ``sys.stdout`` put back
    and descriptor 1 on the new file, which the next attempt reads."""
    said = _run_kernel("""
        from pymapreduce.workers.tasks import TaskAbandoned
        saved = sys.stdout
        cap.begin("job-a")
        cap.end()
        maker = cap.fds._maker

        def stopping_maker():  # (a signal handler that ran inside rotate())
            made = maker()
            cap.stop_task(TaskAbandoned("the broker abandoned this task"))
            return made

        cap.fds._maker = stopping_maker
        try:
            cap.begin("job-b")
            raised = False
        except TaskAbandoned:
            raised = True
        checks = [raised, sys.stdout is saved, not cap.active, cap.deferred is None,
                  os.path.samestat(os.fstat(1), os.fstat(cap.fds.fd))]
        cap.fds._maker = maker
        log = cap.begin("job-b")
        os.write(1, b"after the stop\\n")
        cap.end()
        checks.append(log.getvalue() == b"after the stop\\n")
        cap.close()
        print(" ".join(map(str, checks)), file=sys.stderr)
    """)
    assert said == "True True True True True True", said


class ClosesThenOpens(Job):
    """Closes the capture's own descriptor, then opens a file of its own read-write and
    keeps it open (a database, a cache): it may get the freed number."""

    def __init__(self, path: str) -> None:
        self.path = path

    def map(self, key, line):
        _close_capture_files()
        kept = open(self.path, "r+b")
        kept.write(b"B" * 4096)
        kept.flush()
        _KEPT.append(kept)
        time.sleep(0.3)  # (the heartbeat's reads come meanwhile)
        yield line, 1


_KEPT: list = []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_file_a_task_opens_under_a_freed_capture_number_is_never_touched(daemons, tmp_path):
    """The capture checks that a descriptor is still its file before it reads, punches or
    closes it: the task's own file keeps its bytes and stays out of the log."""
    data = tmp_path / "user.bin"
    data.write_bytes(b"USERDATA" * 32768)  # 256 KiB
    _, address = daemons.broker(*STEADY)
    _worker_logging_to(daemons, address, 1, tmp_path / "worker.err", "WARNING")
    with Client(address) as client:
        handle = client.submit(ClosesThenOpens(str(data)), [(0, "x")], map_tasks=1,
                               reducers=0)
        handle.result(60)
        text = "".join(e["text"] for e in handle.logs())
    after = data.read_bytes()
    assert after == b"B" * 4096 + (b"USERDATA" * 32768)[4096:]
    assert "USERDATA" not in text
    _wait_for_in(tmp_path / "worker.err", b"no longer captured")


class ToolChatter(Job):
    def map(self, key, line):
        os.write(2, b"x" * (1 << 20))  # a tool's chatter, 1 MiB a task
        yield line, 1

    def reduce(self, word, counts):
        return sum(counts)


def test_a_file_size_limit_fails_no_task_however_much_the_tasks_write(daemons, tmp_path):
    """Holes count against a file-size limit (``ulimit -f``, systemd's LimitFSIZE): past
    a quarter of it the job gets a new capture file, so 40 MiB written by the tasks of
    one process under a 20 MiB limit fail none of them."""
    _, address = daemons.broker(*STEADY)
    with open(tmp_path / "worker.err", "wb") as err:
        daemons.procs.append(subprocess.Popen(
            ["sh", "-c", 'ulimit -f 20480 && exec "$@"', "sh",
             *pmr("worker", "--connect", address, "--processes", "1", "--log-level",
                  "WARNING", "--parent-pid", str(os.getpid()))],
            stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=CAPTURING))
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(ToolChatter(), [(i, "w") for i in range(40)], map_tasks=40,
                               reducers=1)
        assert handle.result(120) == {"w": 40}
        logs = handle.logs()
    assert sum(e["text"].count("x") for e in logs) >= 40 * (HEAD + TAIL)


class ForksAndPrints(Job):
    def map(self, key, line):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=print, args=(f"printed by a forked child {key}",))
        child.start()
        child.join()
        yield line, 1


def test_what_a_tasks_forked_child_prints_is_in_the_attempts_log(daemons, tmp_path):
    text = _log_of_one_task(daemons, tmp_path, ForksAndPrints())
    assert "printed by a forked child 0\n" in text, text


def test_the_capture_is_turned_off_by_any_usual_word_for_no(monkeypatch):
    from pymapreduce.workers.supervisor import capture_fds_wanted

    for word, wanted in (("", True), ("1", True), ("yes", True), ("0", False),
                         ("false", False), ("Off", False), ("no", False), (" 0 ", False)):
        monkeypatch.setenv(CAPTURE_FDS_ENV, word)
        assert capture_fds_wanted() is wanted, word
