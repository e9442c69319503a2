"""Progress a user can watch: bars per phase from ``Job.run(progress=True)`` and
``handle.progress()`` on a terminal (a real pseudo-terminal), plain lines and a final
summary from ``pymapreduce run`` when stderr is a pipe, bars closed when a job fails or is
interrupted; and the benchmark plots drawn from the recorded figures."""

from __future__ import annotations

import fcntl
import importlib.util
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap

import pytest
import tqdm  # a run-time dependency: its absence is a failure, not a skip

from pymapreduce import Job, JobFailed, LocalCluster
from pymapreduce.client import Client
from pymapreduce.progress import (
    ProgressBars,
    ProgressLines,
    describe,
    progress_period,
    summary_lines,
)

from .conftest import ROOT, pmr

JOB_FILE = textwrap.dedent("""
    import time
    from pymapreduce import Job

    class Words(Job):
        def map(self, key, line):
            time.sleep(0.005)  # long enough for a few status updates
            for word in line.split():
                self.count("words")
                yield word, 1

        def reduce(self, key, values):
            return sum(values)

    class Broken(Words):
        def map(self, key, line):
            if "boom" in line:
                raise ValueError("no boom allowed")
            yield from super().map(key, line)
""")
LINES = ["alpha beta gamma", "beta gamma", "gamma delta"] * 40  # 120 lines


@pytest.fixture
def job_dir(tmp_path):
    (tmp_path / "jobs_progress.py").write_text(JOB_FILE)
    data = tmp_path / "in.txt"
    data.write_text("\n".join(LINES) + "\n")
    return tmp_path


def run_in_pty(argv: list[str], cwd: str, env: dict | None = None,
               timeout: float = 90) -> tuple[int, str, str]:
    """Run argv with stderr on a pseudo-terminal (120 columns) and stdout on a pipe;
    returns (exit code, stdout, what the terminal received)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side of the terminal
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read()
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def env_with(path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, str(path),
                                                    env.get("PYTHONPATH", "")) if p)
    return env


def last_bar(text: str, label: str) -> str:
    """The last drawing of the bar labelled ``label`` on the terminal."""
    draws = re.findall(rf"(?:^|\r){re.escape(label)}: [^\r\n]*", text)
    assert draws, f"no {label!r} bar in {text[-2000:]!r}"
    return draws[-1].lstrip("\r")


def test_job_run_progress_draws_bars_that_reach_the_totals_on_a_terminal(job_dir):
    script = textwrap.dedent("""
        import json
        from pymapreduce import read_text
        from jobs_progress import Words
        result = Words().run(read_text(["in.txt"], split_bytes=512), workers=2,
                             reducers=3, progress=True)
        print(json.dumps(result, sort_keys=True))
    """)
    code, out, tty = run_in_pty([sys.executable, "-c", script], cwd=str(job_dir),
                                env=env_with(job_dir))
    assert code == 0, tty[-3000:]
    assert json.loads(out) == {"alpha": 40, "beta": 80, "delta": 40, "gamma": 120}
    maps = last_bar(tty, "map")
    total = int(re.search(r"\| (\d+)/(\d+) ", maps).group(2))
    assert total > 1  # the input was cut into several map tasks
    assert "100%" in maps and f"{total}/{total}" in maps, maps
    assert "120 records" in maps, maps  # the input read, as the postfix says
    reduces = last_bar(tty, "reduce")
    assert "100%" in reduces and "3/3" in reduces, reduces
    assert tty.endswith("\r\n")  # closed: the cursor is left below the bars


def test_cli_run_on_a_terminal_draws_bars_and_the_summary(job_dir):
    code, out, tty = run_in_pty(
        pmr("run", "jobs_progress.py:Words", "in.txt", "--workers", "2", "--reducers", "2",
            "--split-bytes", "512"), cwd=str(job_dir), env=env_with(job_dir))
    assert code == 0, tty[-3000:]
    assert dict(json.loads(line) for line in out.splitlines())["gamma"] == 120
    assert "100%" in last_bar(tty, "map")
    assert "2/2" in last_bar(tty, "reduce")
    assert re.search(r"120 records, \d+ bytes; the job ran [\d.]+s on the cluster", tty)
    assert "counters:\r\n  words: 280" in tty
    assert "pymapreduce: map " not in tty  # a terminal gets bars, not the plain lines


def test_cli_run_without_a_terminal_prints_progress_lines_and_one_summary(job_dir):
    env = env_with(job_dir)
    env["PYMAPREDUCE_PROGRESS_EVERY"] = "0"  # a line for each status: no waiting in a test
    run = subprocess.run(
        pmr("run", "jobs_progress.py:Words", "in.txt", "--workers", "2", "--reducers", "2",
            "--split-bytes", "512"), cwd=str(job_dir), env=env, capture_output=True,
        text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    lines = re.findall(r"^pymapreduce: map (\d+)/(\d+) reduce (\d+)/(\d+), (\d+) records, "
                       r".* read, [\d.]+s$", run.stderr, re.M)
    assert lines, run.stderr
    assert int(lines[0][1]) > 1 and lines[0][3] == "2"  # the totals from the first status
    assert "\r" not in run.stderr  # whole lines only: readable in a log file
    summary = re.search(r"^\S+: 120 records, (\d+) bytes; the job ran [\d.]+s on the "
                        r"cluster \([\d.]+ MB/s\), [\d.]+s in all; succeeded; tasks map "
                        r"(\d+)/(\d+), reduce 2/2$", run.stderr, re.M)
    assert summary, run.stderr
    assert int(summary.group(1)) == os.path.getsize(job_dir / "in.txt")
    assert summary.group(2) == summary.group(3) == lines[0][1]
    assert run.stderr.count("counters:") == 1  # printed once, at the end
    assert run.stderr.rstrip().endswith("counters:\n  words: 280")


def test_cli_run_progress_period_option_and_a_failing_job_summary(job_dir):
    data = job_dir / "in.txt"
    data.write_text(data.read_text() + "boom\n")
    run = subprocess.run(
        pmr("run", "jobs_progress.py:Broken", "in.txt", "--workers", "1",
            "--progress-every", "3600"), cwd=str(job_dir), env=env_with(job_dir),
        capture_output=True, text=True, timeout=90)
    assert run.returncode == 1, run.stderr
    # a period of an hour: only the first status is printed
    assert len(re.findall(r"^pymapreduce: map \d+/\d+", run.stderr, re.M)) == 1, run.stderr
    assert re.search(r"^\S+: \d+ records, \d+ bytes; the job ran [\d.]+s on the cluster "
                     r".*; failed; tasks map \d+/\d+", run.stderr, re.M), run.stderr
    assert "no boom allowed" in run.stderr


def test_ctrl_c_on_a_terminal_closes_the_bars_and_prints_the_summary(job_dir):
    import select
    import signal

    data = job_dir / "in.txt"
    data.write_text("\n".join(["slow words here"] * 2000) + "\n")  # ~10 s of maps
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(pmr("run", "jobs_progress.py:Words", "in.txt", "--workers", "1",
                                "--split-bytes", "4096"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, cwd=str(job_dir), env=env_with(job_dir))
    os.close(slave)
    received = b""
    try:
        while b"records" not in received:  # a bar with its first progress is drawn
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, received[-2000:]
            received += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = received.decode(errors="replace")
    assert "map (interrupted)" in last_bar(text, "map (interrupted)")
    assert re.search(r"the job ran [\d.]+s on the cluster .*; running, interrupted; tasks "
                     r"map \d+/\d+", text), text[-2000:]
    assert text.rstrip().endswith("pymapreduce: interrupted")


class Failing(Job):
    def map(self, key, value):
        if value == 7:
            raise ValueError("seven is not allowed")
        yield value % 3, 1

    def reduce(self, key, values):
        return sum(values)


def test_handle_progress_on_a_failing_job_closes_its_bars_and_raises():
    out = io.StringIO()
    with LocalCluster(workers=2) as cluster, Client(cluster.address) as client:
        handle = client.submit(Failing(), [(i, i) for i in range(20)], map_tasks=4,
                               reducers=2)
        with pytest.raises(JobFailed) as failed:
            handle.progress(timeout=60, file=out)
    assert "seven is not allowed" in failed.value.remote_traceback
    text = out.getvalue()
    assert "map (failed)" in text, text
    assert not list(tqdm.tqdm._instances)  # every bar closed
    assert text.endswith("\n")


def test_bars_are_closed_and_labelled_when_the_wait_is_interrupted():
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with ProgressBars("j", file=out) as bars:
            bars({"maps": [1, 4], "reduces": [0, 2], "records": 10, "bytes": 2000})
            raise KeyboardInterrupt
    assert bars.closed and not list(tqdm.tqdm._instances)
    assert "map (interrupted)" in out.getvalue()
    assert "reduce (interrupted)" in out.getvalue()
    assert "10 records, 2.0 kB read" in out.getvalue()


def test_bars_first_made_for_a_finished_job_count_its_time_on_the_cluster():
    # a quick job's first status heard may be its last: the bars' time and rate are the
    # job's (2 s, 1.5 task/s), not the instant between making a bar and filling it
    out = io.StringIO()
    with ProgressBars("j", file=out) as bars:
        bars({"maps": [3, 3], "reduces": [2, 2], "elapsed": 2.0, "state": "succeeded"})
    text = out.getvalue().replace("\n", "\r")
    drawn = last_bar(text, "map")
    assert "3/3 [00:02<00:00" in drawn and "1.50task/s" in drawn, drawn
    assert "2/2 [00:02<00:00" in last_bar(text, "reduce"), text


def test_a_multi_step_job_relabels_and_refills_the_bars():
    out = io.StringIO()
    with ProgressBars("j", file=out, mininterval=0) as bars:
        bars({"maps": [4, 4], "reduces": [2, 2], "step": [1, 2]})
        bars({"maps": [1, 3], "reduces": [0, 5], "step": [2, 2]})
        assert bars.bars["map"].total == 3 and bars.bars["map"].n == 1
        assert bars.bars["reduce"].total == 5 and bars.bars["reduce"].n == 0
        bars({"maps": [3, 3], "reduces": [5, 5], "step": [2, 2], "state": "succeeded"})
    text = out.getvalue()
    assert "step 1/2 map" in text and "step 2/2 reduce" in text
    assert "(" not in last_bar(text.replace("\n", "\r"), "step 2/2 map")  # not failed


def test_progress_lines_follow_the_period_and_skip_the_end():
    now = [0.0]
    out = io.StringIO()
    lines = ProgressLines(out, period=5, clock=lambda: now[0])
    for t, done in ((0, 0), (1, 1), (5, 2), (6, 3), (10.5, 4)):
        now[0] = t
        lines({"maps": [done, 4], "reduces": [0, 0], "elapsed": t})
    lines({"maps": [4, 4], "reduces": [0, 0], "state": "succeeded"})
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "pymapreduce: map 0/4", "pymapreduce: map 2/4", "pymapreduce: map 4/4"]


def test_describe_and_summary_name_steps_waiting_and_extras():
    status = {"job_id": "J", "state": "succeeded", "maps": [3, 3], "reduces": [0, 0],
              "step": [2, 3], "records": 5, "bytes": 1_500_000, "elapsed": 1.5,
              "backups": 2, "skipped": [{"key": 1}], "counters": {"b": 2, "a": 1}}
    assert describe({**status, "waiting": "no worker has tag gpu"}) == (
        "step 2/3 map 3/3, 5 records, 1.5 MB read, 1.5s (waiting: no worker has tag gpu)")
    lines = summary_lines(status, wall=2.0, output="out")
    assert lines[0] == ("J: 5 records, 1500000 bytes; the job ran 1.50s on the cluster "
                        "(1.0 MB/s), 2.00s in all; succeeded; tasks step 2/3: map 3/3; "
                        "2 backups, 1 bad records skipped; output in out")
    assert lines[1:] == ["counters:", "  a: 1", "  b: 2"]


def test_progress_period_comes_from_the_option_or_the_environment(monkeypatch):
    from pymapreduce.errors import ConfigError

    monkeypatch.delenv("PYMAPREDUCE_PROGRESS_EVERY", raising=False)
    assert progress_period() == 5.0
    assert progress_period(0) == 0.0
    monkeypatch.setenv("PYMAPREDUCE_PROGRESS_EVERY", "2.5")
    assert progress_period() == 2.5 and progress_period(1) == 1.0
    monkeypatch.setenv("PYMAPREDUCE_PROGRESS_EVERY", "often")
    with pytest.raises(ConfigError, match="PYMAPREDUCE_PROGRESS_EVERY"):
        progress_period()
    with pytest.raises(ConfigError):
        progress_period(-1)


needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib not installed (the test extras)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path) -> tuple[int, int]:
    """The PNG's width and height, after checking its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    assert len(data) > 10_000  # a drawn figure, not an empty canvas
    return width, height


def run_plots(results, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "plots.py"),
                           "--results", str(results), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@needs_matplotlib
def test_plots_draw_the_recorded_figures_as_pngs(tmp_path):
    results = os.path.join(ROOT, "benchmarks", "results")
    run = run_plots(results, tmp_path)
    assert run.returncode == 0, run.stderr
    expected = ["throughput.png", "faults.png"]  # (scaling: once it is measured)
    if any(name.startswith("scaling") for name in os.listdir(results)):
        expected.append("scaling.png")
    for name in expected:
        width, height = check_png(tmp_path / name)
        assert width >= 600 and height >= 400, (name, width, height)


@needs_matplotlib
def test_plots_read_what_the_scripts_write(tmp_path):
    """The scripts' own --json output (no ``benchmark`` field) is recognised by its
    shape; another peer (here "ray") gets its bar; an unrelated file is skipped."""
    results = tmp_path / "results"
    results.mkdir()
    machine = {"command": "python benchmarks/bench_wordcount.py", "cores": 2, "cpu": "x",
               "date": "today"}
    (results / "wc.json").write_text(json.dumps({
        "machine": machine, "size_mib": 64.0, "workers": 2, "results": [
            {"system": "single", "seconds": 4.0, "mib_per_s": 16.0, "speedup_vs_single": 1},
            {"system": "pymapreduce", "seconds": 2.0, "mib_per_s": 32.0,
             "speedup_vs_single": 2.0},
            {"system": "ray", "seconds": 3.0, "mib_per_s": 21.3, "speedup_vs_single": 1.33},
            {"system": "dask", "error": "ImportError", "equal": False}]}))
    (results / "faults.json").write_text(json.dumps({
        "machine": machine, "args": {}, "times": {"undisturbed": [1.0, 1.2, 1.1],
                                                  "kill 1 of 3 workers": [1.3, 1.5, 1.4]},
        "correct": {"undisturbed": True, "kill 1 of 3 workers": True}, "broker": []}))
    (results / "other.json").write_text(json.dumps({"machine": machine, "tasks_per_s": 1}))
    out = tmp_path / "figures"
    run = run_plots(results, out)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(out)) == ["faults.png", "throughput.png"]
    check_png(out / "throughput.png")
    check_png(out / "faults.png")
    assert "other.json: not a figure" in run.stderr
    assert "no scaling results" in run.stderr


class Mod3(Job):
    def map(self, key, value):
        yield value % 3, 1

    def reduce(self, key, values):
        return sum(values)


def test_progress_to_a_stderr_that_is_no_terminal_is_plain_lines(monkeypatch):
    """``Job.run(progress=True)`` / ``handle.progress()`` with stderr redirected to a file
    or a CI log: plain lines (the first at once, then at most one every period) and a last
    one with the outcome, not tqdm's carriage returns and cursor moves."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("PYMAPREDUCE_PROGRESS_EVERY", "0")
    with LocalCluster(workers=2) as cluster, Client(cluster.address) as client:
        handle = client.submit(Mod3(), [(i, i) for i in range(30)], map_tasks=3, reducers=2)
        status = handle.progress(timeout=60)
        assert status["state"] == "succeeded"
        assert handle.result() == {0: 10, 1: 10, 2: 10}
        failing = client.submit(Failing(), [(i, i) for i in range(20)], map_tasks=4,
                                reducers=2)
        with pytest.raises(JobFailed):
            failing.progress(timeout=60)
    text = err.getvalue()
    assert "\r" not in text and "\x1b" not in text, repr(text)
    assert text.startswith("pymapreduce: "), text  # (a line of progress, or the end's)
    assert f"pymapreduce: {handle.job_id} succeeded: map 3/3 reduce 2/2, 30 records" in text
    assert re.search(rf"{failing.job_id}: .*; failed; tasks map", text), text
