"""The ``pymapreduce`` command as a user meets it: the real CLI in subprocesses, against
embedded clusters and real daemons. Output streamed and complete, --output checked before
the job runs, one clear line per error, --version and --help, job history after
``run --connect``, and no operator warnings or protocol names in what a user reads."""

from __future__ import annotations

import json
import os
import pty
import re
import resource
import select
import subprocess
import sys
import textwrap
import time

import pytest

from pymapreduce import Client, ConfigError, PyMapReduceError
from pymapreduce.cli import build_parser
from pymapreduce.patterns import protocol as P

from .conftest import FAST, ROOT, pmr, wait_workers
from .jobs import WordCount

EMBEDDED = ["--workers", "1"]

JOBS = '''
import os

from pymapreduce import Job

MARKER = {marker!r}


class Count(Job):
    """One output pair per distinct line; touches MARKER when a map task runs."""

    def map(self, key, line):
        open(MARKER, "a").close()
        yield line, 1

    def reduce(self, key, values):
        return sum(values)


class Fails(Count):
    def map(self, key, line):
        if line == "poison":
            raise ValueError("cannot digest " + line)
        yield line, 1


class NeedsArgs(Count):
    def __init__(self, n):
        self.n = n


class RaisesInInit(Count):
    def __init__(self):
        raise RuntimeError("no config here")
'''

# Protocol command names that must never reach a user's eyes in an error message.
COMMANDS = re.compile(r"\b(" + "|".join((P.HELLO, P.SUBMIT, P.WATCH, P.STATUS, P.FETCH,
                                         P.CANCEL, P.RELEASE, P.JOBS, P.DONE, P.READY,
                                         P.ERROR, P.ACCEPTED, P.LISTING)) + r")\b")


@pytest.fixture
def jobfile(tmp_path):
    marker = tmp_path / "map-ran"
    path = tmp_path / "cli_jobs.py"
    path.write_text(JOBS.format(marker=str(marker)))
    return str(path), marker


def lines_file(tmp_path, n: int) -> str:
    path = tmp_path / f"lines-{n}.txt"
    path.write_text("".join(f"w{i}\n" for i in range(n)))
    return str(path)


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(pmr(*args), capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **(env or {})}, **kw)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The failure is said in a last line ``pymapreduce: error: ...``, with no traceback
    through pymapreduce's own code."""
    assert proc.returncode != 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pymapreduce: error: "), proc.stderr
    assert "pymapreduce/" not in proc.stderr.replace("pymapreduce/cli_jobs", ""), proc.stderr
    return last


# -- output on stdout ------------------------------------------------------------------------

def test_run_prints_every_pair_when_stdout_is_not_a_terminal(jobfile, tmp_path):
    data = lines_file(tmp_path, 12_345)  # more than the old silent cap of 10,000
    out = tmp_path / "out.jsonl"
    with open(out, "w") as f:
        proc = subprocess.run(pmr("run", f"{jobfile[0]}:Count", data, *EMBEDDED), stdout=f,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(pairs) == sorted([f"w{i}", 1] for i in range(12_345))
    assert "not shown" not in proc.stderr


def test_limit_prints_the_first_pairs_and_says_how_to_get_the_rest(jobfile, tmp_path):
    data = lines_file(tmp_path, 50)
    proc = cli("run", f"{jobfile[0]}:Count", data, *EMBEDDED, "--limit", "7")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 7
    assert "43 more not shown" in proc.stderr and "--limit 0" in proc.stderr


def test_on_a_terminal_the_cap_is_said_on_stderr(jobfile, tmp_path):
    data = lines_file(tmp_path, 10_020)
    master, slave = pty.openpty()
    proc = subprocess.Popen(pmr("run", f"{jobfile[0]}:Count", data, *EMBEDDED), stdout=slave,
                            stderr=subprocess.PIPE, cwd=ROOT)
    os.close(slave)
    shown = bytearray()
    try:
        while True:  # read the terminal as it fills (its buffer is small)
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, "no output on the terminal within 60 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its side
                break
            if not chunk:
                break
            shown += chunk
        err = proc.stderr.read().decode()
        assert proc.wait(60) == 0, err
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert len(shown.decode().splitlines()) == 10_000
    assert "20 more not shown" in err and "> out.jsonl" in err


# -- --output --------------------------------------------------------------------------------

def test_output_to_a_non_empty_directory_is_refused_before_the_job_runs(jobfile, tmp_path):
    job, marker = jobfile
    data = lines_file(tmp_path, 20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = cli("run", f"{job}:Count", data, *EMBEDDED, "--output", str(out))
    line = one_error_line(refused)
    assert refused.returncode == 2
    assert "not empty" in line and "--overwrite" in line
    assert not marker.exists()  # no map task ran
    assert sorted(os.listdir(out)) == ["notes.txt"]

    done = cli("run", f"{job}:Count", data, *EMBEDDED, "--output", str(out), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == ["_SUCCESS", "notes.txt", "part-00000"]
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone
    assert len((out / "part-00000").read_text().splitlines()) == 20


def test_an_empty_or_new_output_directory_is_fine(jobfile, tmp_path):
    data = lines_file(tmp_path, 5)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        proc = cli("run", f"{jobfile[0]}:Count", data, *EMBEDDED, "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000"]


def test_an_output_path_that_cannot_be_a_directory_fails_before_the_job(jobfile, tmp_path):
    job, marker = jobfile
    data = lines_file(tmp_path, 5)
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    for out, words in ((a_file, "is a file"), (a_file / "sub", "Not a directory")):
        proc = cli("run", f"{job}:Count", data, *EMBEDDED, "--output", str(out))
        assert words in one_error_line(proc)
        assert proc.returncode == 2
    assert not marker.exists()
    assert a_file.read_text() == "x"


def test_the_python_api_checks_output_dir_before_the_job_runs(cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("k")
    with Client(cluster) as client:
        with pytest.raises(ConfigError, match="not empty"):
            client.submit(WordCount(), [(0, "a b")], output_dir=out, overwrite=False)
        with pytest.raises(ConfigError, match="is a file"):
            client.submit(WordCount(), [(0, "a b")], output_dir=out / "keep")
        assert client.jobs() == []  # nothing was submitted
        # the default keeps scripts that write the same directory on every run working
        assert client.submit(WordCount(), [(0, "a b a")], reducers=1,
                             output_dir=out).result(60) == {"a": 2, "b": 1}
    assert sorted(os.listdir(out)) == ["_SUCCESS", "keep", "part-00000"]
    with pytest.raises(ConfigError, match="not empty"):  # before an embedded cluster starts
        WordCount().run([(0, "a")], output_dir=str(out), overwrite=False)


# -- errors ----------------------------------------------------------------------------------

def test_every_error_of_run_is_one_clear_line(jobfile, tmp_path):
    job, _ = jobfile
    data = lines_file(tmp_path, 3)
    cases = [
        (("no_such_module_anywhere:Job", data), "no module named 'no_such_module_anywhere'"),
        (("no_such_module_anywhere:Job", data), "give FILE.py:Class"),
        ((f"{tmp_path}/absent.py:Job", data), "does not exist"),
        ((f"{job}:Nope", data), "Nope"),
        ((f"{job}:NeedsArgs", data), "argument: 'n'"),
        ((f"{job}:Count", str(tmp_path / "no" / "*.txt")), "matches no file"),
        ((f"{job}:Count", data, "--connect", "not-an-address"), "not-an-address"),
    ]
    for args, words in cases:
        proc = cli("run", *args, *EMBEDDED)
        assert words in one_error_line(proc), (args, proc.stderr)
        assert proc.returncode == 2, (args, proc.stderr)


def test_an_error_in_the_users_code_shows_the_users_traceback_only(jobfile, tmp_path):
    job, _ = jobfile
    data = lines_file(tmp_path, 3)
    broken = tmp_path / "broken.py"
    broken.write_text("import os\n\nVALUE = 1 / 0\n")
    for spec, words in ((f"{job}:RaisesInInit", "no config here"),
                        (f"{broken}:Job", "ZeroDivisionError")):
        proc = cli("run", spec, data, *EMBEDDED)
        assert words in one_error_line(proc)
        assert proc.returncode == 1
        assert "in your code" in proc.stderr and os.path.basename(spec.split(":")[0]) in (
            proc.stderr)

    debug = cli("run", f"{job}:NeedsArgs", data, *EMBEDDED, "--debug")
    assert "Traceback (most recent call last)" in debug.stderr
    assert "pymapreduce/cli.py" in debug.stderr  # --debug: the whole traceback
    env = cli("run", f"{job}:NeedsArgs", data, *EMBEDDED, env={"PYMAPREDUCE_DEBUG": "1"})
    assert "pymapreduce/cli.py" in env.stderr


def test_status_and_cancel_of_an_unknown_job_or_broker_say_so_in_one_line(cluster):
    for command in ("status", "cancel"):
        proc = cli(command, "--connect", cluster, "no-such-job")
        assert "knows no job 'no-such-job'" in one_error_line(proc)
        assert not COMMANDS.search(proc.stderr)
    gone = cli("status", "--connect", "tcp://127.0.0.1:9", "--timeout", "0.5")
    assert "did not answer" in one_error_line(gone) and gone.returncode == 3
    assert not COMMANDS.search(gone.stderr)


# -- --version and --help --------------------------------------------------------------------

def test_version_and_help(tmp_path):
    import pymapreduce
    from pymapreduce.cli_help import version

    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"pymapreduce {version()}"
    assert version() == pymapreduce.__version__

    helped = cli("--help")
    assert helped.returncode == 0
    assert "``" not in helped.stdout  # plain text, no markup
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for action in sub._choices_actions:  # every command, with its one-line description
        assert re.search(rf"^\s+{action.dest}\s+{re.escape(action.help)}$", helped.stdout,
                         re.M), action.dest
    assert "pymapreduce COMMAND --help" in helped.stdout
    for command in sub.choices:  # and each command's own help works
        assert cli(command, "--help").returncode == 0, command


# -- run --connect, status -------------------------------------------------------------------

def test_jobs_run_by_the_cli_stay_listed_after_they_end(jobfile, tmp_path, cluster):
    data = lines_file(tmp_path, 30)
    ran = cli("run", f"{jobfile[0]}:Count", data, "--connect", cluster)
    assert ran.returncode == 0, ran.stderr
    assert len(ran.stdout.splitlines()) == 30
    job_id = re.search(r"job (\S+) submitted", ran.stderr).group(1)

    listing = cli("status", "--connect", cluster)
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"^{re.escape(job_id)}\s+succeeded\s", listing.stdout, re.M)
    as_json = json.loads(cli("status", "--connect", cluster, "--json").stdout)
    assert [j["job_id"] for j in as_json["jobs"]] == [job_id]

    one = cli("status", "--connect", cluster, job_id)
    assert one.returncode == 0, one.stderr
    assert re.search(r"^state\s+succeeded \(its results were released", one.stdout, re.M)
    assert re.search(r"^map\s+\d+/\d+ tasks done", one.stdout, re.M)

    with Client(cluster) as client:  # the outputs are gone: said, never an empty result
        with pytest.raises(PyMapReduceError, match="released") as info:
            list(client.job(job_id).results())
        assert not COMMANDS.search(str(info.value))


def test_status_of_a_failed_job_names_the_error_and_the_input(jobfile, tmp_path, cluster):
    data = tmp_path / "in.txt"
    data.write_text("fine\npoison\n")
    ran = cli("run", f"{jobfile[0]}:Fails", str(data), "--connect", cluster)
    assert ran.returncode == 1 and "cannot digest poison" in ran.stderr
    job_id = re.search(r"job (\S+) submitted", ran.stderr).group(1)
    one = cli("status", "--connect", cluster, job_id)
    assert one.returncode == 0, one.stderr
    assert re.search(r"^state\s+failed$", one.stdout, re.M)
    assert re.search(r"^error\s+.*ValueError: cannot digest poison", one.stdout, re.M)
    where = f"file {data}, the line at byte 5 (map split 0)"  # as the run's error says it
    assert re.search(rf"^input at\s+{re.escape(where)}$", one.stdout, re.M), one.stdout
    assert where in ran.stderr
    assert "remote traceback (from the worker)" in one.stdout and "cli_jobs.py" in one.stdout


def test_status_hides_internal_fields(cluster, tmp_path):
    with Client(cluster) as client:
        handle = client.submit(WordCount(), [(0, "a b a")])
        final = handle.wait(60)
        seen = [final, handle.status(), *client.jobs()]
        assert handle.result() == {"a": 2, "b": 1}  # (the client still reads what it needs)
    for status in seen:
        assert status["state"] == "succeeded"
        assert not {"req", "map_only", "emits"} & set(status), status
    one = cli("status", "--connect", cluster, handle.job_id, "--json")
    assert not {"req", "map_only", "emits"} & set(json.loads(one.stdout))
    listing = json.loads(cli("status", "--connect", cluster, "--json").stdout)
    assert not {"req", "map_only", "emits"} & set(listing["jobs"][0])


# -- embedded runs ---------------------------------------------------------------------------

def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_embedded_runs_print_no_operator_warnings(jobfile, tmp_path):
    """A low open-file limit makes a broker warn its operator; an embedded run's user is
    not one, and sees only the output and the summary."""
    data = lines_file(tmp_path, 5)
    proc = cli("run", f"{jobfile[0]}:Count", data, *EMBEDDED, preexec_fn=_low_fd_limit)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "open files" not in proc.stderr
    assert "pymapreduce broker" not in proc.stderr  # (the daemons' log lines)
    assert re.search(r"job \S+ running on an embedded cluster", proc.stderr)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(jobfile[0])!r})
        from cli_jobs import Count
        from pymapreduce import read_text
        print(Count().run(read_text({data!r}), workers=1))
    """)
    api = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, preexec_fn=_low_fd_limit)
    assert api.returncode == 0, api.stderr
    assert api.stderr == ""


def test_a_finished_job_is_listed_for_the_result_ttl_then_forgotten(daemons, jobfile, tmp_path):
    # (3 s: the listing below must come before the TTL runs out, on a loaded machine too)
    _, address = daemons.broker(*FAST, "--result-ttl", "3")
    daemons.worker(address, 1)
    wait_workers(address, 1)
    ran = cli("run", f"{jobfile[0]}:Count", lines_file(tmp_path, 3), "--connect", address)
    assert ran.returncode == 0, ran.stderr
    job_id = re.search(r"job (\S+) submitted", ran.stderr).group(1)
    with Client(address) as client:
        assert [j["job_id"] for j in client.jobs()] == [job_id]  # (released, still listed)
        deadline = time.monotonic() + 30
        while client.jobs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.jobs() == []
    refused = cli("broker", "--bind", "tcp://127.0.0.1:0", "--result-ttl", "0")
    assert "result_ttl" in one_error_line(refused)


def test_a_job_s_error_and_traceback_cannot_drive_the_terminal():
    """status and the error line show a worker's words; on a terminal its escape
    sequences are shown escaped (as `logs` does), in a file or a pipe kept as they are."""
    import io

    from pymapreduce.cli_output import print_job, write_untrusted

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    status = {"job_id": "J-1", "name": "J", "state": "failed", "maps": [0, 1],
              "error": {"message": "ValueError: \x1b]0;owned\x07 \x1b[2J",
                        "task": "map-0", "traceback": "Traceback\n  \x1b[1Ahidden\n"}}
    shown = io.StringIO()
    print_job(status, shown)
    for out in (Terminal(), io.StringIO()):
        write_untrusted(shown.getvalue(), out)
        text = out.getvalue()
        if isinstance(out, Terminal):
            assert "\x1b" not in text and "\x07" not in text
            assert "\\x1b]0;owned\\x07" in text and "\\x1b[1Ahidden\n" in text
        else:
            assert text == shown.getvalue() and "\x1b[2J" in text


def test_run_connect_to_a_broker_that_does_not_answer_gives_up_after_its_timeout(tmp_path):
    """`run --connect ADDR --timeout T` bounds the wait for a broker that answers nothing
    too (it waited a request's usual 10 s, whatever T said): exit code 3, saying T."""
    import socket

    with socket.socket() as s:  # a port nothing listens on (bound, then let go)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = tmp_path / "job.py"
    job.write_text("from pymapreduce import Job\n\n\nclass J(Job):\n"
                   "    def map(self, key, line):\n        yield line, 1\n")
    (tmp_path / "in.txt").write_text("a\n")
    done = subprocess.run(pmr("run", f"{job}:J", str(tmp_path / "in.txt"), "--connect",
                              f"tcp://127.0.0.1:{port}", "--timeout", "1.5"),
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "did not answer a greeting within 1.5s" in done.stderr, done.stderr


def test_a_worker_s_credit_outside_what_a_broker_takes_is_refused():
    """Credit is the most tasks a worker process holds (default 256): a broker takes 0 as 1
    and anything past 1,024 as 1,024, so the daemon says so instead of starting."""
    for credit in ("0", "-3", "5000"):
        proc = cli("worker", "--connect", "tcp://127.0.0.1:1", "--credit", credit)
        assert f"--credit must be 1 to 1024, got {credit}" in one_error_line(proc)
        assert proc.returncode == 2


@pytest.mark.parametrize("argv, word, meant", [
    (["jobs"], "jobs", "status"),
    (["stauts", "--connect", "tcp://127.0.0.1:9"], "stauts", "status"),
    (["--debug", "kill", "x"], "kill", "cancel"),
    (["submit"], "submit", "run"),
    (["frobnicate"], "frobnicate", None),
])
def test_a_word_that_is_no_command_names_the_command_meant(argv, word, meant):
    done = cli(*argv)
    assert done.returncode == 2 and done.stdout == ""
    assert one_error_line(done).startswith(f"pymapreduce: error: {word!r} is not a command")
    assert (f"did you mean `pymapreduce {meant}`?" in done.stderr) == (meant is not None)
    assert "commands: broker, worker, sink, run, status" in done.stderr
