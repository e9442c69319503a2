"""Layer 3: the embedded default (LocalCluster, Job.run), the CLI and the original example."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from pymapreduce import Client, JobFailed, LocalCluster, read_text, run_sequential

from .conftest import ROOT, children, pmr, read_line, wait_dead
from .jobs import WordCount, WordCountCombined, read_lines

SEED_EXPECTED = {'M': 12, 'a': 149, 'p': 53, 'R': 11, 'e': 198, 'd': 64, 'u': 61, 'c': 54, ' ': 265, 'i': 97, 'm': 54, 'l': 52, 'n': 89, 't': 122, 'w': 12, 'h': 47, 'P': 4, 'y': 32, 'o': 81, 'T': 6, 's': 108, 'k': 12, 'g': 26, 'r': 83, 'f': 25, '.': 12, 'U': 1, '/': 5, 'v': 9, ',': 8, 'x': 6, 'b': 10, 'z': 2, '’': 2, 'q': 1, 'O': 1, ':': 3, 'j': 1, 'G': 1, 'I': 1}  # noqa: E501


def cluster_pids(cluster: LocalCluster) -> list[int]:
    return [cluster.broker_pid, cluster.worker_pid, *children(cluster.worker_pid)]


def test_local_cluster_serves_many_jobs_and_leaves_nothing_behind(corpus):
    with LocalCluster(workers=2) as cluster:
        pids = cluster_pids(cluster)
        assert len(pids) == 4
        with Client(cluster.address) as client:
            handles = [client.submit(WordCountCombined(), read_text(corpus, split_bytes=8000))
                       for _ in range(3)]
            expected = run_sequential(WordCount(), read_lines(corpus))
            assert all(h.result(60) == expected for h in handles)
    assert wait_dead(pids) == []


def test_job_run_uses_an_embedded_cluster_and_cleans_up_on_failure():
    class Boom(WordCount):
        def map(self, key, line):
            raise RuntimeError("boom")

    assert WordCount().run({1: "x y x"}, workers=1) == {"x": 2, "y": 1}
    with pytest.raises(JobFailed, match="RuntimeError: boom"):
        Boom().run({1: "x"}, workers=1)
    # every process the runs started is gone: no pymapreduce child of ours remains
    assert [p for p in children(os.getpid()) if _is_pmr(p)] == []


def _is_pmr(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"pymapreduce" in f.read():
                return True
        with open(f"/proc/{pid}/comm", "rb") as f:  # a forked daemon: pmr-broker...
            return f.read().startswith(b"pmr-")
    except OSError:
        return False


def test_ctrl_c_during_a_job_stops_every_process(tmp_path):
    script = tmp_path / "long_job.py"
    script.write_text(textwrap.dedent("""
        import time
        from pymapreduce import Client, Job, LocalCluster

        class Slow(Job):
            def map(self, key, value):
                time.sleep(0.5)
                yield key, value

        with LocalCluster(workers=2) as cluster:
            print("PIDS", cluster.broker_pid, cluster.worker_pid, flush=True)
            Client(cluster.address).submit(Slow(), [(i, i) for i in range(200)]).result()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    try:
        m = read_line(proc, re.compile(r"PIDS (\d+) (\d+)"))
        broker, supervisor = int(m.group(1)), int(m.group(2))
        workers = children(supervisor)
        assert len(workers) == 2
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert b"KeyboardInterrupt" in proc.stderr.read()
        assert wait_dead([broker, supervisor, *workers]) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_run_prints_json_lines_and_writes_output_files(corpus, tmp_path):
    expected = run_sequential(WordCount(), read_lines(corpus))
    example = os.path.join(ROOT, "examples", "wordcount.py")
    pattern = os.path.join(os.path.dirname(corpus[0]), "*.txt")
    proc = subprocess.run(pmr("run", f"{example}:WordCount", pattern, "--workers", "2"),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert dict(json.loads(line) for line in proc.stdout.splitlines()) == expected
    assert re.search(r"\d+ records, \d+ bytes; the job ran [\d.]+s on the cluster "
                     r"\([\d.]+ MB/s\)", proc.stderr)

    out = tmp_path / "out"
    proc = subprocess.run(
        pmr("run", f"{example}:WordCount", pattern, "--workers", "1", "--reducers", "2",
            "--output", str(out)), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]


def test_cli_run_with_a_missing_input_fails_fast():
    proc = subprocess.run(pmr("run", "examples/wordcount.py:WordCount", "no/such/*.txt"),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "matches no file" in proc.stderr


def test_the_original_pymapreduce_example_prints_the_same_counts():
    # the example, as the original project wrote it, picks its four ports at random in
    # 50000-65000, which overlaps the system's ephemeral ports: on a busy machine one may
    # be taken (AddressInUse, said clearly); that is the example's choice, so it runs again
    for _ in range(3):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples",
                                                            "seed_charcount.py")],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        if "AddressInUse" not in proc.stderr and "Address already in use" not in proc.stderr:
            break  # (a slave's port taken: ZeroMQ's own error, in the slave's thread)
    assert proc.returncode == 0, proc.stderr
    prefix = "The result of CountCharacters: "
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(prefix))
    assert ast.literal_eval(line[len(prefix):]) == SEED_EXPECTED


GUARDLESS = '''
import os
import sys

from pymapreduce import Job

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.log"), "a") as f:
    f.write(f"{os.getpid()}\\n")
if sum(1 for _ in open(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "imports.log"))) > 3:
    sys.exit("cascade: this test's own bound")  # (never reached when the guard works)


class WC(Job):
    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


print(WC().run([(0, "a b a")], workers=1))  # no `if __name__ == "__main__":`
'''


def test_a_module_that_runs_a_job_at_import_does_not_start_clusters_in_workers(tmp_path):
    """A job file without a main guard: run from the CLI it runs once (the workers get the
    job by value); imported as a module, its workers refuse to start a cluster of their
    own and the job fails saying why, instead of a cascade of clusters."""
    (tmp_path / "guardless.py").write_text(GUARDLESS)
    (tmp_path / "input.txt").write_text("x y x\n")
    env = {**os.environ, "PYTHONPATH": ROOT}
    run = subprocess.run(pmr("run", "guardless.py:WC", "input.txt", "--workers", "1"),
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "imports.log").read_text().split()) == 1
    (tmp_path / "imports.log").unlink()
    imported = subprocess.run([sys.executable, "-c", "import guardless"], cwd=tmp_path,
                              env={**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
                              capture_output=True, text=True, timeout=120)
    # the user's module travels by value (docs/travel.md): the workers never import it;
    # by reference, they refuse instead (tests/test_travel.py)
    assert imported.returncode == 0, imported.stderr
    assert len((tmp_path / "imports.log").read_text().split()) == 1


def test_the_embedded_daemons_run_this_pymapreduce_not_one_in_the_current_directory(tmp_path):
    # A source checkout or any pymapreduce/ folder in the current directory must not be
    # what the daemons import (`python -m` puts the current directory first on the path)
    shadow = tmp_path / "pymapreduce"
    shadow.mkdir()
    for name in ("__init__.py", "__main__.py"):
        (shadow / name).write_text('raise SystemExit("the other pymapreduce ran")\n')
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from pymapreduce import Job

        class Words(Job):
            def map(self, key, line):
                import os
                assert "PYTHONSAFEPATH" not in os.environ  # (tasks' own subprocesses)
                for word in line.split():
                    yield word, 1

            def reduce(self, word, counts):
                return sum(counts)

        if __name__ == "__main__":
            print(Words().run([(0, "a b a")], workers=1, timeout=60))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'a': 2, 'b': 1}"
    assert "the other pymapreduce ran" not in proc.stderr
