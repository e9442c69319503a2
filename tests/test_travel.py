"""Code and data that travel with a job, on real daemons: a job class from a module the
workers do not have, side files (submit(files=)), per-job process-state isolation, and
`pymapreduce run FILE.py:Job -p name=value --file PATH` / `module:Job`."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from pymapreduce import (
    Client,
    ConfigError,
    InputError,
    Job,
    JobFailed,
    PyMapReduceError,
    job_file,
    run_sequential,
)
from pymapreduce.client.submit import build_submission
from pymapreduce.patterns import protocol as P
from pymapreduce.shipping import MAGIC, gather_files, unpack_code

from .conftest import FAST, ROOT, children, pmr, stop, wait_workers

LINES = [(i, f"the w{i % 7} and x{i % 3} of w{i % 5}") for i in range(300)]

USER_MODULE = '''
import dataclasses

from pymapreduce import Job
from {helpers} import tokenize
from {pkg} import sub
from {pkg}.sub import SCALE

SEEN = {{"mutations": 0}}


@dataclasses.dataclass
class Word:
    text: str
    weight: int = SCALE


class UserWordCount(Job):
    """Defined in a module only the client can import, using two more of them."""

    def map(self, key, line):
        for token in tokenize(line):
            word = Word(token)
            yield word.text, sub.halve(dataclasses.asdict(word)["weight"] * 2)

    def reduce(self, word, counts):
        return sum(counts)
'''


@pytest.fixture
def user_modules(tmp_path):
    """Three modules (one a package submodule) in a directory only this process has on
    its sys.path; the workers (cwd and PYTHONPATH the repository) cannot import them."""
    tag = uuid.uuid4().hex[:8]
    names = {"mod": f"travel_jobs_{tag}", "helpers": f"travel_helpers_{tag}",
             "pkg": f"travel_pkg_{tag}"}
    src = tmp_path / "src"
    (src / names["pkg"]).mkdir(parents=True)
    (src / names["pkg"] / "__init__.py").write_text("")
    (src / names["pkg"] / "sub.py").write_text(
        "SCALE = 2\n\ndef halve(n):\n    return n // 2\n")
    (src / f"{names['helpers']}.py").write_text(
        "def tokenize(line):\n    return [w for w in line.split() if len(w) > 3 or "
        "w.startswith(('w', 'x'))]\n")
    (src / f"{names['mod']}.py").write_text(USER_MODULE.format(**names))
    sys.path.insert(0, str(src))
    try:
        yield importlib.import_module(names["mod"])
    finally:
        sys.path.remove(str(src))
        for name in [n for n in sys.modules if n.split(".")[0] in names.values()]:
            del sys.modules[name]


def expected_counts():
    out: dict = {}
    for _, line in LINES:
        for w in line.split():
            if len(w) > 3 or w.startswith(("w", "x")):
                out[w] = out.get(w, 0) + 2
    return out


# -- code by value ------------------------------------------------------------------------
def test_a_job_from_a_module_the_workers_lack_runs_there(cluster, user_modules):
    import cloudpickle

    before = cloudpickle.list_registry_pickle_by_value()
    job = user_modules.UserWordCount()
    with Client(cluster) as client:
        assert client.submit(job, LINES, map_tasks=4, reducers=2).result(60) == \
            expected_counts()
        # the control: by reference, the workers cannot import the module
        job.ship_modules = False
        with pytest.raises(JobFailed, match="No module named"):
            client.submit(job, LINES, map_tasks=2, reducers=1).result(60)
    # and the client's process is as it was: nothing left registered by value
    assert cloudpickle.list_registry_pickle_by_value() == before


# -- side files ---------------------------------------------------------------------------
class StopWords(Job):
    """Opens its side files by name (cwd) and through job_file()."""

    files = {"weights.txt": os.path.join(ROOT, "README.md")}  # renamed: only must exist

    def map_init(self):
        with open("stop.txt") as f:  # by its base name, in the task's directory
            self.stop = set(f.read().split())
        assert os.path.isfile(job_file("weights.txt"))

    def map(self, key, line):
        for word in line.split():
            if word not in self.stop:
                yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


def test_side_files_are_opened_by_name_in_each_task(cluster, tmp_path):
    stop_file = tmp_path / "stop.txt"
    stop_file.write_text("the\nand\nof\n")
    with Client(cluster) as client:
        got = client.submit(StopWords(), LINES, map_tasks=6, reducers=2,
                            files=[str(stop_file)]).result(60)
    words = run_sequential(_Count(), LINES)
    assert got == {w: n for w, n in words.items() if w not in ("the", "and", "of")}
    assert "the" not in got and got


class _Count(Job):
    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


def test_side_files_with_the_embedded_cluster(tmp_path):
    stop_file = tmp_path / "stop.txt"
    stop_file.write_text("the and of\n")
    got = StopWords().run(LINES, workers=1, files=[str(stop_file)])
    words = run_sequential(_Count(), LINES)
    assert got == {w: n for w, n in words.items() if w not in ("the", "and", "of")}


def test_a_missing_or_misnamed_file_fails_before_anything_is_sent(tmp_path):
    # nothing listens at this address: an error other than InputError/ConfigError would
    # mean the client tried to talk first
    with Client("tcp://127.0.0.1:1", timeout=1.0) as client:
        with pytest.raises(InputError, match="nope.txt' does not exist"):
            client.submit(_Count(), LINES, files=[str(tmp_path / "nope.txt")])
        (tmp_path / "a").mkdir()
        with pytest.raises(InputError, match="is not a file"):
            client.submit(_Count(), LINES, files=[str(tmp_path / "a")])
        real = tmp_path / "x.txt"
        real.write_text("x")
        for bad in ("../x.txt", "/etc/x.txt", "a/b.txt", "..", ""):
            with pytest.raises(ConfigError, match="not a plain file name"):
                client.submit(_Count(), LINES, files={bad: str(real)})
        other = tmp_path / "a" / "x.txt"
        other.write_text("y")
        with pytest.raises(ConfigError, match="two job files are named 'x.txt'"):
            client.submit(_Count(), LINES, files=[str(real), str(other)])
    # the job's own files count too, and fail the same way
    with pytest.raises(InputError, match="does not exist"):
        gather_files(type("Missing", (_Count,), {"files": ["/no/such/file"]})())


def _hostile(tmp_path, blob_files):
    """A SUBMIT whose code blob names files as a hostile client would."""
    sub = build_submission(_Count(), LINES, slots=1, map_tasks=2, reducers=1, name=None,
                           files=[("ok.txt", b"fine")])
    code, _ = unpack_code(sub.blobs[0])
    import msgpack

    blob = MAGIC + msgpack.packb({"code": bytes(code), "files": blob_files}, use_bin_type=True)
    return sub, (blob, *sub.blobs[1:])


def test_a_hostile_code_blob_cannot_write_outside_the_job_directory(cluster, tmp_path):
    escape = f"pmr-escape-{uuid.uuid4().hex[:8]}"
    outside = tmp_path / "owned.txt"
    attacks = [[[str(outside), b"abs"]],                      # an absolute path
               [[f"../../{escape}", b"up"]],                  # up out of the job directory
               [["a.txt", b"one"], ["a.txt", b"two"]],        # a duplicate
               [["sub/x", b"deep"]], [[".", b"dot"]], [[7, b"num"]]]
    with Client(cluster) as client:
        for files in attacks:
            sub, blobs = _hostile(tmp_path, files)
            client._request(P.SUBMIT, sub.body, blobs)
            with pytest.raises(JobFailed, match="cannot load the job's code"):
                client.job(sub.job_id).wait(60)
        assert not outside.exists()
        tmp = tempfile.gettempdir()
        assert not [n for n in os.listdir(tmp) if escape in n]
        assert not any(escape in n for d in os.listdir(tmp) if d.startswith("pymapreduce-")
                       for n in _listdir(os.path.join(tmp, d)))
        # the workers are unharmed and run the next job
        assert client.submit(_Count(), LINES, reducers=1).result(60) == \
            run_sequential(_Count(), LINES)


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def test_files_count_against_the_broker_s_size_limits(daemons, tmp_path):
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(3 << 20))
    _, address = daemons.broker(*FAST, "--max-message-mb", "2")
    with Client(address) as client:
        with pytest.raises(InputError, match="code and files.*more than the broker accepts"):
            client.submit(_Count(), LINES, files=[str(big)])
    _, address = daemons.broker(*FAST, "--max-mb-per-client", "2")
    with Client(address) as client:
        with pytest.raises(PyMapReduceError, match="would take"):
            client.submit(_Count(), LINES, files=[str(big)])


class WhereAmI(Job):
    files = ()  # given per test, on a subclass (Job.files is read off the class)

    def map(self, key, value):
        yield os.getpid(), os.getcwd()


def test_a_job_directory_goes_when_the_worker_exits(daemons, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    _, address = daemons.broker(*FAST)
    worker = daemons.worker(address, 1)
    wait_workers(address, 1)
    job = type("Where", (WhereAmI,), {"files": [str(tmp_path / "f.txt")]})()
    with Client(address) as client:
        got = client.submit(job, [(0, 0), (1, 1)], map_tasks=2).result(60)
    pids = {pid for pid, _ in got}
    dirs = {cwd for _, cwd in got}
    assert pids == set(children(worker.pid)) and len(dirs) == 1
    (workdir,) = dirs
    assert os.path.isfile(os.path.join(workdir, "f.txt"))
    assert os.path.basename(os.path.dirname(workdir)).startswith("pymapreduce-worker-")
    stop(worker)
    assert not os.path.exists(os.path.dirname(workdir))


# -- process-state isolation --------------------------------------------------------------
PROBE_MODULE = '''
import os
import signal
import sys

from pymapreduce import Job

STATE = {"mutations": 0}


class Probe(Job):
    """Reports the process state it finds; with mutate=True, changes it all."""

    def __init__(self, mutate):
        self.mutate = mutate

    def map(self, key, value):
        seen = {"env": os.environ.get("PMR_TRAVEL_LEAK"), "cwd": os.getcwd(),
                "global": STATE["mutations"], "path": "/pmr-travel-leak" in sys.path,
                "usr1_ignored": signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN,
                "home": os.environ.get("HOME"), "pid": os.getpid()}
        if self.mutate:
            os.environ["PMR_TRAVEL_LEAK"] = "1"
            os.environ.pop("HOME", None)
            os.chdir("/")
            STATE["mutations"] += 1
            sys.path.append("/pmr-travel-leak")
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        yield key, seen
'''


def test_one_job_s_process_changes_do_not_reach_the_next_job(daemons, tmp_path):
    src = tmp_path / "probe"
    src.mkdir()
    name = f"travel_probe_{uuid.uuid4().hex[:8]}"
    (src / f"{name}.py").write_text(PROBE_MODULE)
    sys.path.insert(0, str(src))
    try:
        probe = importlib.import_module(name)
        _, address = daemons.broker(*FAST)
        daemons.worker(address, 1)  # one process: both jobs run in it
        wait_workers(address, 1)
        records = [(i, i) for i in range(3)]
        with Client(address) as client:
            first = client.submit(probe.Probe(True), records, map_tasks=3).result(60)
            second = client.submit(probe.Probe(False), records, map_tasks=3).result(60)
    finally:
        sys.path.remove(str(src))
        sys.modules.pop(name, None)
    assert len({s["pid"] for _, s in first + second}) == 1
    clean = {"env": None, "cwd": ROOT, "path": False, "usr1_ignored": False,
             "home": os.environ.get("HOME")}
    for _, seen in first + second:  # every task starts from the worker's own state
        assert {k: seen[k] for k in clean} == clean
    # module globals: shared by one job's tasks in a process, fresh for the next job
    assert sorted(s["global"] for _, s in first) == [0, 1, 2]
    assert [s["global"] for _, s in second] == [0, 0, 0]


# -- the CLI: run -p, --file, module:Job --------------------------------------------------
CLI_JOB = '''
from pymapreduce import Job, job_file


class Grep(Job):
    def __init__(self, word, times=1, tag=None):
        self.word, self.times, self.tag = word, times, tag

    def map_init(self):
        with open(job_file("extra.txt")) as f:
            self.extra = f.read().strip()

    def map(self, key, line):
        if self.word in line:
            yield f"{self.tag}:{self.word}:{self.extra}", self.times

    def reduce(self, key, values):
        return sum(values)
'''


def _run(args, cwd, script=None, timeout=120):
    """`pymapreduce ARGS` as the console script runs it (sys.path[0] its own directory,
    not the current one) when ``script`` is given, else as `python -m pymapreduce`."""
    cmd = [sys.executable, script, *args] if script else pmr(*args)
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def console_script(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "pymapreduce"
    script.write_text("import sys\nfrom pymapreduce.cli import main\nsys.exit(main())\n")
    return str(script)


def test_run_passes_parameters_and_ships_files(tmp_path, console_script):
    work = tmp_path / "work"
    work.mkdir()
    (work / "grepjob.py").write_text(CLI_JOB)
    (work / "in.txt").write_text("apple pie\nbanana\napple tart\n")
    (tmp_path / "extra.txt").write_text("E\n")
    common = ["in.txt", "-p", "word=apple", "-p", "times=3", "-p", "tag=[1, 'a']",
              "--file", str(tmp_path / "extra.txt"), "--workers", "1"]
    for spec, script in (("grepjob.py:Grep", None), ("grepjob:Grep", console_script)):
        done = _run(["run", spec, *common], work, script)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ['["[1, \'a\']:apple:E", 6]'], spec


@pytest.mark.parametrize("args, message", [
    (["nosuchmod:Grep"], r"no module named 'nosuchmod'"),
    (["missing.py:Grep"], r"job file 'missing.py' does not exist"),
    (["grepjob:Nope"], r"grepjob defines no 'Nope'"),
    (["grepjob:Grep"], r"Grep\(word, times=1, tag=None\): missing a required argument: "
                       r"'word' \(parameters given with -p name=value: none\)"),
    (["grepjob:Grep", "-p", "word=x", "-p", "colour=red"], r"unexpected keyword argument"),
    (["grepjob:Grep", "-p", "word"], r"-p 'word': give a parameter as name=value"),
    (["grepjob:Grep", "-p", "word=x", "--file", "absent.txt"], r"'absent.txt' does not exist"),
    (["importsbad:Job"], r"importing importsbad: No module named 'no_such_dependency'"),
])
def test_run_errors_are_one_line(tmp_path, console_script, args, message):
    (tmp_path / "grepjob.py").write_text(CLI_JOB)
    (tmp_path / "importsbad.py").write_text("import no_such_dependency\n")
    (tmp_path / "in.txt").write_text("x\n")
    done = _run(["run", args[0], "in.txt", *args[1:], "--workers", "1"], tmp_path,
                console_script, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pymapreduce: "), done.stderr
    assert re.search(message, lines[0]), lines[0]


def test_job_params_parse_literals_else_strings():
    from pymapreduce.cli import job_params

    assert job_params(["n=3", "f=0.5", "s=hello world", "q='3'", "l=[1, 2]", "b=True",
                       "none=None", "e=", "expr=1+2j*", "d={'a': 1}"]) == {
        "n": 3, "f": 0.5, "s": "hello world", "q": "3", "l": [1, 2], "b": True,
        "none": None, "e": "", "expr": "1+2j*", "d": {"a": 1}}


def test_a_job_by_reference_still_may_not_start_clusters_in_workers(tmp_path):
    """A module without a main guard, imported by the workers (ship_modules = False): they
    refuse to start a cluster of their own, and the job fails saying why."""
    from .test_embedded import GUARDLESS

    (tmp_path / "guardless.py").write_text(
        GUARDLESS.replace("class WC(Job):\n", "class WC(Job):\n    ship_modules = False\n"))
    # (spawned daemons import the module anew; forked ones find the caller's copy, in
    # tests/test_startup_fork.py)
    imported = subprocess.run([sys.executable, "-c", "import guardless"], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
                                   "PYMAPREDUCE_START_METHOD": "spawn"},
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode != 0
    assert 'if __name__ == "__main__"' in imported.stderr
    assert len((tmp_path / "imports.log").read_text().split()) <= 3


def test_a_job_directory_goes_when_the_worker_forgets_the_job(daemons, tmp_path):
    from pymapreduce.workers.tasks import JOB_CACHE

    (tmp_path / "f.txt").write_text("x")
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    job = type("Where", (WhereAmI,), {"files": [str(tmp_path / "f.txt")]})()
    with Client(address) as client:
        dirs = [client.submit(job, [(0, 0)]).result(60)[0][1] for _ in range(JOB_CACHE + 1)]
    assert len(set(dirs)) == JOB_CACHE + 1  # one directory per job
    assert not os.path.exists(dirs[0])  # the first job is forgotten: its directory gone
    assert all(os.path.isfile(os.path.join(d, "f.txt")) for d in dirs[1:])


class ImportsShipped(Job):
    """Imports a .py file shipped with the job, from the job's directory."""

    def map(self, key, value):
        import shiphelper  # a side file: found first on sys.path while the task runs

        yield key, shiphelper.VERSION


def test_a_shipped_module_is_imported_fresh_by_each_job(daemons, tmp_path):
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    got = []
    with Client(address) as client:
        for version in (1, 2):
            (tmp_path / f"v{version}").mkdir()
            helper = tmp_path / f"v{version}" / "shiphelper.py"
            helper.write_text(f"VERSION = {version}\n")
            got.append(client.submit(ImportsShipped(), [(0, 0), (1, 1)], map_tasks=2,
                                     files=[str(helper)]).result(60))
    assert got == [[(0, 1), (1, 1)], [(0, 2), (1, 2)]]
    assert "shiphelper" not in sys.modules


def test_a_module_that_cannot_travel_by_value_falls_back_with_a_warning(user_modules,
                                                                        caplog):
    import threading

    from pymapreduce.client.submit import pickle_job

    user_modules.LOCK = threading.Lock()  # a global the job's code refers to, unpicklable
    cls = type("Locked", (user_modules.UserWordCount,), {
        "__module__": user_modules.__name__,
        "map_init": lambda self: user_modules.LOCK})
    user_modules.Locked = cls
    with caplog.at_level("WARNING", logger="pymapreduce.shipping"):
        assert pickle_job(cls())  # by reference, as before this existed
    assert "cannot travel by value (TypeError: cannot pickle '_thread.lock'" in caplog.text


def test_a_job_that_cannot_travel_at_all_is_refused_without_the_fallback_warning(
        user_modules, caplog):
    import threading

    from pymapreduce import JobNotPicklable
    from pymapreduce.client.submit import pickle_job

    cls = type("HoldsLock", (user_modules.UserWordCount,), {
        "__module__": user_modules.__name__})
    user_modules.HoldsLock = cls
    job = cls()
    job.lock = threading.Lock()  # the job's own attribute: neither way can carry it
    with caplog.at_level("WARNING", logger="pymapreduce.shipping"):
        with pytest.raises(JobNotPicklable, match="attribute 'lock'"):
            pickle_job(job)
    assert "travel by value" not in caplog.text  # one error, not a misleading warning too


def test_a_worker_daemon_removes_what_killed_daemons_left(daemons, tmp_path):
    """Job and spill directories of daemons killed outright (their supervisor could not
    remove them) go when a worker daemon starts on the host; a directory whose owner still
    runs (it holds the lock), or one without an owner file, stays."""
    from pymapreduce.patterns import owned

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    stale_job = tmp / "pymapreduce-worker-4242-abcd"
    (stale_job / "job-1-x").mkdir(parents=True)
    (stale_job / "job-1-x" / "model.bin").write_bytes(b"x" * 1000)
    os.chmod(stale_job / "job-1-x", 0o500)  # (as a task may leave it: read-only)
    (stale_job / owned.OWNER).touch()
    stale_spill = tmp / "pymapreduce-spill-zz"
    (stale_spill / "4243" / "task-1").mkdir(parents=True)
    (stale_spill / "4243" / "task-1" / "run-0").write_bytes(b"y" * 1000)
    (stale_spill / owned.OWNER).touch()
    live = tmp / "pymapreduce-worker-4244-live"
    live.mkdir()
    held = owned.claim(str(live))
    other = tmp / "pymapreduce-worker-4245-other"
    other.mkdir()
    try:
        _, address = daemons.broker(*FAST)
        daemons.worker(address, 1, "--memory", "64MB", env={"TMPDIR": str(tmp)})
        wait_workers(address, 1)
        deadline = time.monotonic() + 10  # (swept while its processes register)
        while stale_job.exists() or stale_spill.exists():
            assert time.monotonic() < deadline, sorted(os.listdir(tmp))
            time.sleep(0.02)
        names = sorted(os.listdir(tmp))
        assert live.name in names and other.name in names
        mine = [n for n in names if n.startswith("pymapreduce-spill-")]
        assert len(mine) == 1, names  # its own, held while it runs: never swept
        assert owned.sweep(str(tmp), "pymapreduce-spill-") == []
        assert owned.sweep(str(tmp), "pymapreduce-worker-") == []
    finally:
        os.close(held)
    assert owned.sweep(str(tmp), "pymapreduce-worker-") == [str(live)]  # (let go now)


def test_a_broker_and_a_sink_remove_what_killed_ones_left(daemons, tmp_path, monkeypatch):
    """A broker's spill directory and a sink's segment directory, left by daemons killed
    outright, go when a broker (its --spill-dir) or a sink starts; held ones stay."""
    from pymapreduce.patterns import owned
    from pymapreduce.sinks.store import SegmentStore

    spill = tmp_path / "spill"
    stale = spill / "pymapreduce-spill-old"
    stale.mkdir(parents=True)
    (stale / "00000001.bin").write_bytes(b"z" * 1000)
    (stale / owned.OWNER).touch()
    live = spill / "pymapreduce-spill-live"
    live.mkdir()
    held = owned.claim(str(live))
    try:
        daemons.broker(*FAST, "--spill-dir", str(spill))
        deadline = time.monotonic() + 10  # (swept as its loop starts, after its ready line)
        while stale.exists():
            assert time.monotonic() < deadline, sorted(os.listdir(spill))
            time.sleep(0.02)
        assert sorted(os.listdir(spill)) == [live.name]
    finally:
        os.close(held)

    tmp = tmp_path / "tmp"
    (tmp / "pymapreduce-sink-old" / "ab").mkdir(parents=True)
    (tmp / "pymapreduce-sink-old" / owned.OWNER).touch()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    store = SegmentStore(None)
    try:
        store.sweeping.join()  # (on a thread of its own: tests/test_startup_sweeps.py)
        assert os.listdir(tmp) == [os.path.basename(store.root)]  # (its own, held)
        assert owned.sweep(str(tmp), "pymapreduce-sink-") == []
    finally:
        store.close()
    assert os.listdir(tmp) == []


def test_module_paths_resolve_as_realpath_does(tmp_path, monkeypatch):
    """Which modules travel by value is decided on their real paths; the directory of each
    is resolved once (``shipping._realpath``), which must give what ``os.path.realpath``
    gives: through a linked directory, a linked file, and a relative path."""
    from pymapreduce import shipping

    real = tmp_path / "real"
    real.mkdir()
    (real / "mod.py").write_text("X = 1\n")
    (tmp_path / "linked").symlink_to(real)
    other = tmp_path / "other"
    other.mkdir()
    (other / "alias.py").symlink_to(real / "mod.py")
    monkeypatch.chdir(tmp_path)
    paths = [str(real / "mod.py"), str(tmp_path / "linked" / "mod.py"),
             str(other / "alias.py"), os.path.join("linked", "mod.py"),
             str(tmp_path / "linked" / ".." / "real" / "mod.py")]
    for path in paths * 2:  # (the second time from the directory cache)
        assert shipping._realpath(path) == os.path.realpath(path), path
    assert shipping._realpath(str(other / "alias.py")) == str((real / "mod.py").resolve())
