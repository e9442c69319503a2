"""Red team of the most recent surfaces: directories that say whether their owner lives
(``patterns/owned.py``) and their callers, the stop path's removals under an output
directory, the mrjob adapter's side-file directories, and the HTTP API's host check.

Each attack is made as a hostile local user, client or job would make it, against the
real functions (or a real broker for HTTP); the ones that found a defect failed before
its fix."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import urllib.request

import pytest

from pymapreduce.patterns import owned
from pymapreduce.store import output as store_output
from pymapreduce.store.commit import abort_output
from pymapreduce.workers import isolation

from .conftest import ROOT

PREFIX = "pymapreduce-redteam-"


@pytest.fixture
def tmpdir_only(tmp_path, monkeypatch):
    """Every temporary directory of the code under test in ``tmp_path`` (never the
    machine's shared /tmp, where other runs' directories live)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _dead_dir(parent, name: str) -> str:
    """A directory with an ``.owner`` nobody holds (its owner was killed)."""
    path = os.path.join(parent, name)
    os.mkdir(path)
    os.close(owned.claim(path))
    return path


# -- patterns/owned.py -------------------------------------------------------------------

def test_a_fifo_planted_as_owner_does_not_block_the_sweep(tmp_path):
    """A job (it runs as the daemon's user) or a careless user leaves a directory whose
    ``.owner`` is a FIFO: the sweep at the next daemon's start must not wait for a writer."""
    planted = tmp_path / f"{PREFIX}fifo"
    planted.mkdir()
    os.mkfifo(planted / owned.OWNER)
    dead = _dead_dir(tmp_path, f"{PREFIX}dead")
    result: list = []
    t = threading.Thread(target=lambda: result.append(owned.sweep(str(tmp_path), PREFIX)),
                         daemon=True)
    t.start()
    t.join(5)
    blocked = t.is_alive()
    if blocked:  # free the sweep (a writer lets the open return) before failing
        fd = os.open(planted / owned.OWNER, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(10)
    assert not blocked, "the sweep blocked opening a FIFO named .owner"
    assert result == [[dead]]
    assert planted.is_dir()  # not a lock file: not ours to judge, left


def test_the_sweep_never_removes_a_directory_between_its_creation_and_its_lock(
        tmp_path, monkeypatch):
    """Two daemons start at once: one makes its directory and claims it while the other
    sweeps. Before the lock is taken, the sweep must not find an ``.owner`` it can lock
    (it would remove the new directory under its owner)."""
    new = tmp_path / f"{PREFIX}new"
    new.mkdir()
    real_flock = owned.fcntl.flock
    swept: list = []
    started: list = []

    def flock_after_a_sweep(fd, op):
        if not started:  # the other daemon's sweep runs at the worst moment
            started.append(True)
            swept.append(owned.sweep(str(tmp_path), PREFIX))
        return real_flock(fd, op)

    monkeypatch.setattr(owned.fcntl, "flock", flock_after_a_sweep)
    fd = owned.claim(str(new))
    try:
        assert swept == [[]] and new.is_dir()
        monkeypatch.setattr(owned.fcntl, "flock", real_flock)
        assert owned.sweep(str(tmp_path), PREFIX) == [] and new.is_dir()  # held
    finally:
        os.close(fd)
    assert owned.sweep(str(tmp_path), PREFIX) == [str(new)]  # released: swept


def test_the_sweep_follows_no_link_and_leaves_what_is_not_its_own(tmp_path):
    """Planted: a link named with the prefix to a dead directory elsewhere, a directory
    of another user, a directory whose ``.owner`` is a link, one without ``.owner``, a
    plain file; and links inside a dead directory to files outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep")
    elsewhere = _dead_dir(outside, f"{PREFIX}elsewhere")
    area = tmp_path / "area"
    area.mkdir()
    os.symlink(elsewhere, area / f"{PREFIX}link")
    foreign = area / f"{PREFIX}foreign"
    foreign.mkdir()
    os.close(owned.claim(str(foreign)))
    os.chown(foreign, 65534, 65534) if os.getuid() == 0 else None
    link_owner = area / f"{PREFIX}linkowner"
    link_owner.mkdir()
    os.symlink(victim, link_owner / owned.OWNER)
    bare = area / f"{PREFIX}bare"
    bare.mkdir()
    (area / f"{PREFIX}file").write_text("x")
    dead = _dead_dir(area, f"{PREFIX}dead")
    os.symlink(victim, os.path.join(dead, "to-victim"))
    os.symlink(outside, os.path.join(dead, "to-outside"))
    assert owned.sweep(str(area), PREFIX) == [dead]
    assert victim.read_text() == "keep" and os.path.isdir(elsewhere)
    assert link_owner.is_dir() and bare.is_dir() and (area / f"{PREFIX}file").exists()
    if os.getuid() == 0:
        assert foreign.is_dir()
    assert owned.sweep(str(area / "missing"), PREFIX) == []  # never raises


# -- worker job directories (workers/isolation.py) ---------------------------------------

def test_a_reaped_worker_process_leaves_a_live_directory_of_the_same_pid(tmpdir_only):
    """Worker daemons in two pid namespaces (containers) share /tmp: when one reaps its
    process 4242, the live job directory of the other's process 4242 must stay (its lock
    is held), while the reaped one's goes."""
    live = tmpdir_only / f"{isolation.ROOT_PREFIX}4242-live"
    live.mkdir()
    fd = owned.claim(str(live))
    try:
        dead = _dead_dir(tmpdir_only, f"{isolation.ROOT_PREFIX}4242-dead")
        bare = tmpdir_only / f"{isolation.ROOT_PREFIX}4242-bare"  # killed before its claim
        bare.mkdir()
        other = _dead_dir(tmpdir_only, f"{isolation.ROOT_PREFIX}42420-x")
        isolation.remove_roots_of(4242)
        assert live.is_dir(), "a directory whose owner still holds its lock was removed"
        assert not os.path.exists(dead) and not bare.exists() and os.path.isdir(other)
    finally:
        os.close(fd)


# -- the mrjob adapter's side-file directories -------------------------------------------

def test_mrjob_side_file_directories_of_a_killed_worker_are_swept(tmp_path, tmpdir_only):
    """A worker process (and its supervisor) killed with ``kill -9`` leaves its mrjob
    side-file directory: the next worker daemon's start removes it, as it removes the
    process's job directories."""
    pytest.importorskip("mrjob")
    code = ("import os, signal\n"
            "from pymapreduce.adapters.mrjob.task import working_dir\n"
            "print(working_dir('tok', {'stop.txt': b'the'}), flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=30, cwd=ROOT)
    path = proc.stdout.strip()
    assert path.startswith(str(tmp_path)) and os.path.isfile(os.path.join(path, "stop.txt"))
    assert os.path.basename(path).startswith(isolation.ROOT_PREFIX)
    isolation.sweep_stale_roots()
    assert not os.path.exists(path), "a killed worker's mrjob directory stayed"


def test_a_live_mrjob_side_file_directory_is_not_swept(tmpdir_only):
    pytest.importorskip("mrjob")
    from pymapreduce.adapters.mrjob import task

    path = task.working_dir("redteam-token", {"a.txt": b"x"})
    try:
        isolation.sweep_stale_roots()
        assert os.path.isfile(os.path.join(path, "a.txt"))
    finally:
        task._WORKDIRS.pop("redteam-token", None)
        task.remove_working_dirs()


# -- the stop path: removals under an output directory -----------------------------------

HOSTILE_IDS = ["..", ".", "../..", "../../outside", "/", "a/../../..", "\x00", "",
               "~", "_temporary", "..\\..", "%2e%2e", "../" * 100 + "x"]


@pytest.mark.parametrize("job_id", HOSTILE_IDS)
def test_stopping_a_job_with_a_hostile_id_removes_nothing_outside_its_temporary(
        tmp_path, job_id):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000").write_text("kept\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("kept")
    other = out / store_output.TEMPORARY / "other-job" / "0"
    other.mkdir(parents=True)
    (other / "part-00000").write_text("another job's")
    spec = {"url": str(out), "results": False}
    store_output.discard_attempt(spec, job_id, 0, 1)
    abort_output(spec, job_id)
    name = store_output.temp_name(job_id, 1, 0)
    assert name.startswith(f"{store_output.TEMPORARY}/") and ".." not in name.split("/")
    assert (out / "part-00000").read_text() == "kept\n"
    assert (tmp_path / "outside" / "f").read_text() == "kept"
    assert (other / "part-00000").read_text() == "another job's"


# -- the HTTP API ------------------------------------------------------------------------

def _raw_get(url: str, path: str, host: str) -> int:
    hostport = url.split("//", 1)[1].rstrip("/")
    ip, port = hostport.rsplit(":", 1)
    with socket.create_connection((ip, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("latin-1"))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_a_keyless_dashboard_refuses_rebound_names_that_begin_with_127(daemons):
    """DNS rebinding: a page at ``127.evil.example`` (or ``127.0.0.1.evil.example``)
    re-points that name at 127.0.0.1 and reads the keyless broker's API; only loopback
    names and addresses may be answered."""
    from .test_observe import start_broker

    _, http = start_broker(daemons)
    for host in ("127.evil.example:80", "127.0.0.1.evil.example", "127.1.evil"):
        assert _raw_get(http, "/api/jobs", host) == 403, host
    for host in ("127.0.0.1", "localhost:80", "127.0.0.2:8080", "[::1]:80", "[::1]"):
        assert _raw_get(http, "/api/jobs", host) == 200, host
    # static assets: a name in the table, or nothing (no path reaches the file system)
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static//etc/passwd",
                 "/static/dashboard.js/..", "/static/", "/static/__init__.py",
                 "/api/jobs/..%2f..%2fetc", "/" + "a" * 20_000):
        assert _raw_get(http, path, "127.0.0.1") in (404, 414, 431), path
    assert _raw_get(http, "/static/dashboard.css", "127.0.0.1") == 200
    for query in ("?limit=" + "9" * 5000, "?limit=-5&before=x", "?limit=%00",
                  "?owner=" + "%ff" * 500):
        assert _raw_get(http, "/api/history" + query, "127.0.0.1") in (200, 400), query
    assert stat.S_ISDIR(os.stat(ROOT).st_mode)  # (the checkout is still there)


def test_a_keyed_brokers_debug_log_never_shows_the_http_token(daemons, tmp_path):
    """The dashboard's URL carries the token (``?token=...``); a broker at DEBUG logs each
    request's line, and the log (a file, a journal) is read by more people than the key
    directory: the token must not be in it, whether the request is served or refused."""
    from .conftest import pmr, read_line, stop
    from .test_observe import READY_HTTP

    keys = str(tmp_path / "keys")
    subprocess.run(pmr("keys", "cluster", keys), check=True, capture_output=True,
                   timeout=30, cwd=ROOT)
    log_path = tmp_path / "broker.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(pmr("broker", "--bind", "tcp://127.0.0.1:0", "--keys", keys,
                                    "--log-level", "DEBUG", "--parent-pid", str(os.getpid()),
                                    "--http", "127.0.0.1:0"),
                                stdout=subprocess.PIPE, stderr=log_file, cwd=ROOT)
        daemons.procs.append(proc)
        http = read_line(proc, READY_HTTP).group(2)
        token = open(os.path.join(keys, "http.token")).read().strip()
        assert _raw_get(http, f"/api/jobs?token={token}", "127.0.0.1") == 200
        assert _raw_get(http, f"/api/jobs?x=1&token={token}%20", "127.0.0.1") == 401
        assert _raw_get(http, f"/nowhere?token={token}", "127.0.0.1") == 404
        # nor does a page with the token in its URL send that URL on as a Referer
        with urllib.request.urlopen(f"{http.rstrip('/')}/?token={token}", timeout=10) as r:
            assert r.headers["Referrer-Policy"] == "no-referrer"
        stop(proc)
    text = log_path.read_text(errors="replace")
    assert "/api/jobs" in text  # (the requests are logged)
    assert token not in text, "the HTTP token is in the broker's log"
