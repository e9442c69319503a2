"""Attacks on a local output directory by whoever can write it (docs/store.md, "Direct
output"): ``OUT/_temporary``, or a job's ``OUT/_temporary/<job>``, made a symbolic link to
someone else's directory; and two job ids that ``safe_job`` maps to the same name
(``a/b``, ``a_b``), whose attempts would share one directory and whose clean-ups would
delete each other's files.

Each attack is kept as a test: a link is refused with an error naming it and nothing is
written, renamed or deleted through it (store/localfs.py); two ids get two directories
(store/output.py ``job_temporary``). The first tests call the store's functions as a
worker and a client call them; the last runs a real job on real daemons."""

from __future__ import annotations

import os
import re

import pytest

from pymapreduce import Client, Job, JobFailed
from pymapreduce.patterns.records import pack
from pymapreduce.store.commit import abort_output, commit_output, prepare_output
from pymapreduce.store.output import SUCCESS, discard_attempt, temp_name, write_attempt

from .conftest import FAST, wait_workers

SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def files_under(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def job_dir(job_id: str) -> str:
    """The job's directory under ``_temporary``, as the store names it."""
    return temp_name(job_id, 0, 0).split("/")[1]


@pytest.fixture
def planted(tmp_path):
    """``(out, victim)``: an output directory whose ``_temporary`` is a link to the
    victim's directory, which holds a file of its own and, under the names job-1's attempt
    5 would use, a part file of the victim's."""
    victim = tmp_path / "victim"
    attempt = victim / job_dir("job-1") / "5"
    attempt.mkdir(parents=True)
    (victim / "keep.txt").write_text("the victim's")
    (attempt / "part-00000").write_text("the victim's data\n")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "_temporary")
    return out, victim


VICTIM_FILES = ["keep.txt", os.path.join(job_dir("job-1"), "5", "part-00000")]


def refusal(path) -> str:
    return re.escape(str(path)) + " is a symbolic link"


def test_an_attempt_does_not_write_through_a_linked_temporary(planted):
    """A worker's attempt writing its part file under ``OUT/_temporary`` when that is a
    link: refused with an error naming the link; nothing appears in the victim's
    directory."""
    out, victim = planted
    with pytest.raises(OSError, match=refusal(out / "_temporary")) as caught:
        write_attempt({"url": str(out)}, "job-1", 0, 6, pack([["a"], [1]]))
    assert type(caught.value).__name__ == "OutputLinkRefused"
    assert files_under(victim) == sorted(VICTIM_FILES)


def test_an_attempt_does_not_write_through_a_linked_job_directory(tmp_path):
    """The same with the link one level down, at ``OUT/_temporary/<job>``."""
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    (out / "_temporary").mkdir(parents=True)
    link = out / "_temporary" / job_dir("job-1")
    os.symlink(victim, link)
    with pytest.raises(OSError, match=refusal(link)):
        write_attempt({"url": str(out)}, "job-1", 0, 6, pack([["a"], [1]]))
    assert files_under(victim) == []
    # and an attempt's own directory made a link (a level further down) is refused too
    os.unlink(link)
    (out / "_temporary" / job_dir("job-1")).mkdir()
    os.symlink(victim, out / "_temporary" / job_dir("job-1") / "6")
    with pytest.raises(OSError, match="is a symbolic link"):
        write_attempt({"url": str(out)}, "job-1", 0, 6, pack([["a"], [1]]))
    assert files_under(victim) == []


def test_a_link_at_the_part_file_s_own_name_is_not_written_through(tmp_path):
    """A link planted at the very name the attempt writes is refused, not truncated."""
    victim = tmp_path / "victim.txt"
    victim.write_text("the victim's")
    out = tmp_path / "out"
    name = out / temp_name("job-1", 6, 0)
    name.parent.mkdir(parents=True)
    os.symlink(victim, name)
    with pytest.raises(OSError, match=refusal(name)):
        write_attempt({"url": str(out)}, "job-1", 0, 6, pack([["a"], [1]]))
    assert victim.read_text() == "the victim's"


def test_the_commit_does_not_take_the_victim_s_files_through_a_linked_temporary(planted):
    """The client's commit of job-1, whose partition 0 attempt 5 won: the file at that
    attempt's name is the victim's, reached through the link. Refused, naming the link;
    the victim's file stays where it is, and ``OUT`` gets no part file and no
    ``_SUCCESS``."""
    out, victim = planted
    record = {"attempt": 5, "records": 1, "bytes": 18}
    with pytest.raises(OSError, match=refusal(out / "_temporary")):
        commit_output({"url": str(out), "results": False}, "job-1", 1, [(0, record, b"")])
    assert files_under(victim) == sorted(VICTIM_FILES)
    assert sorted(os.listdir(out)) == ["_temporary"]


def test_clean_ups_do_not_delete_through_a_linked_temporary(planted):
    """A failed or cancelled job's clean-up (``abort_output``) and a stopped attempt's
    (``discard_attempt``) delete nothing of the victim's through the link."""
    out, victim = planted
    abort_output({"url": str(out)}, "job-1")
    assert files_under(victim) == sorted(VICTIM_FILES)
    discard_attempt({"url": str(out)}, "job-1", 0, 5)  # (the victim's file's very name)
    assert files_under(victim) == sorted(VICTIM_FILES)
    assert os.path.islink(out / "_temporary")


def test_a_job_submitted_into_an_output_with_a_linked_temporary_is_refused(planted):
    """Found before the job runs: ``prepare_output`` (what ``submit`` calls) names it."""
    out, victim = planted
    with pytest.raises(OSError, match=refusal(out / "_temporary")):
        prepare_output(str(out), overwrite=True)


@pytest.mark.parametrize("ids", [("a/b", "a_b"), ("x y", "x_y", "x?y"), ("..", "job"),
                                 ("...a", "a"), ("é", "_")])
def test_job_ids_that_sanitize_alike_get_temporary_directories_of_their_own(tmp_path, ids):
    """Two job ids ``safe_job`` maps to the same name each get a directory of their own
    (a single safe path component): one job's clean-up (a cancel, a failure) leaves the
    other's attempt files, and the other commits its own data."""
    names = [job_dir(job_id) for job_id in ids]
    assert len(set(names)) == len(ids), names
    for name in names:
        assert SAFE_COMPONENT.fullmatch(name) and len(name.encode()) <= 255, name
    out = tmp_path / "out"
    out.mkdir()
    spec = {"url": str(out), "results": False}
    sizes = {job_id: write_attempt(spec, job_id, 0, 3, pack([[job_id], [i]]))
             for i, job_id in enumerate(ids)}
    assert sizes
    for job_id in ids[:-1]:
        abort_output(spec, job_id)
    last = ids[-1]
    assert files_under(out) == [temp_name(last, 3, 0).replace("/", os.sep)]
    commit_output(spec, last, 1, [(0, {"attempt": 3, "records": 1,
                                       "bytes": (out / temp_name(last, 3, 0)).stat().st_size},
                                   b"")])
    assert sorted(os.listdir(out)) == [SUCCESS, "part-00000"]
    assert (out / "part-00000").read_text(encoding="utf-8").startswith(f'["{last}", ')


class PlantsLink(Job):
    """Its map, run before any reduce writes, makes ``out/_temporary`` a link to
    ``victim``: what anyone who can write the output directory can do while a job runs
    (after the client checked the directory)."""

    def __init__(self, out: str, victim: str) -> None:
        self.out = out
        self.victim = victim

    def map(self, key, value):
        link = os.path.join(self.out, "_temporary")
        if not os.path.lexists(link):
            os.symlink(self.victim, link)
        yield key, value

    def reduce(self, key, values):
        return sum(values)


def test_a_job_whose_temporary_becomes_a_link_fails_naming_it(daemons, tmp_path):
    """On real daemons: the reduce's attempt refuses the link, the job fails with that
    message (at once: retrying cannot help), and nothing is written in the victim's
    directory nor committed in the output."""
    _, address = daemons.broker(*FAST)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("the victim's")
    with Client(address) as client:
        handle = client.submit(PlantsLink(str(out), str(victim)), [(1, 1), (2, 2)],
                               map_tasks=1, reducers=1, output_dir=out)
        with pytest.raises(JobFailed, match=refusal(out / "_temporary")):
            handle.wait(60)
    assert files_under(victim) == ["keep.txt"]
    assert os.listdir(out) == ["_temporary"] and os.path.islink(out / "_temporary")
