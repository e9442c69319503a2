"""The six applications of the MapReduce paper in examples/, each run on a real cluster and
checked against the same answer computed directly in this process (each example's
``direct_*`` function). Most run on one broker and one worker daemon started for this
module; one example runs through ``pymapreduce run --connect`` against them, others as
their own scripts and through ``Job.run``'s embedded cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from urllib.parse import urljoin

import pytest

from pymapreduce import Client, read_files, read_text
from pymapreduce.cli import load_job_class

from .conftest import FAST, ROOT, Daemons, pmr, wait_workers

EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)
import sample_data  # noqa: E402 - the examples' own input generator


def example(name: str, job: str):
    """The job class of ``examples/NAME.py`` loaded as ``pymapreduce run`` loads it (its
    module travels to the workers by value), and that module."""
    cls = load_job_class(os.path.join(EXAMPLES, f"{name}.py:{job}"))
    return cls, sys.modules[cls.__module__]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sample_data.write_all(str(tmp_path_factory.mktemp("samples")))


@pytest.fixture(scope="module")
def address():
    daemons = Daemons()
    try:
        _, address = daemons.broker(*FAST)
        daemons.worker(address, 2)
        wait_workers(address, 2)
        yield address
    finally:
        daemons.cleanup()


def submit(address: str, job, inputs, **options):
    with Client(address) as client:
        handle = client.submit(job, inputs, **options)
        return handle.result(120), handle


def test_grep_finds_every_matching_line_with_its_file_and_offset(address, data):
    Grep, module = example("grep", "Grep")
    # small splits: lines cut by split boundaries, splits that span two files
    inputs = read_text(data["logs"], with_path=True, split_bytes=20_000)
    files = inputs.files()
    for pattern in (module.DEFAULT_PATTERN, r"POST /p\d+\.html", "no such text"):
        matches, _ = submit(address, Grep(pattern), inputs)
        assert sorted(matches) == sorted(module.direct_grep(pattern, files)), pattern
    matches, _ = submit(address, Grep(), inputs)
    assert len({path for (path, _), _ in matches}) == len(files) > 1
    with open(matches[0][0][0], "rb") as f:  # the offset is where the line is in its file
        f.seek(matches[0][0][1])
        assert f.readline().decode().rstrip("\n") == matches[0][1]


def test_url_access_counts_and_counts_malformed_lines(address, data):
    UrlAccessCount, module = example("url_access", "UrlAccessCount")
    inputs = read_text(data["logs"], split_bytes=30_000)
    counts, handle = submit(address, UrlAccessCount(), inputs, reducers=3)
    assert counts == module.direct_counts(inputs.files())
    lines = [line for path in inputs.files() for line in open(path, encoding="utf-8")]
    malformed = sum(1 for line in lines if not module.REQUEST.match(line))
    assert malformed > 0
    assert handle.counters == {"malformed lines": malformed}
    assert sum(counts.values()) == len(lines) - malformed


def test_reverse_web_link_graph(address, data):
    ReverseLinks, module = example("reverse_links", "ReverseLinks")
    inputs = read_files(data["site"], split_bytes=8_000)  # several pages a task
    graph, _ = submit(address, ReverseLinks(), inputs, reducers=2)
    assert graph == module.direct_reverse_links(inputs.files())
    # a page that was linked to but not crawled is a target; a tag across lines is a link
    assert any(int(url.rsplit("/p", 1)[1].split(".")[0]) >= 25 for url in graph)
    page = next(p for p in inputs.files() if b'class="x"\n href' in open(p, "rb").read())
    href = re.search(rb'class="x"\n href="([^"]+)"', open(page, "rb").read()).group(1)
    source = module.url_of(page)
    assert source in graph[urljoin(source, href.decode())]


def test_term_vector_per_host(address, data):
    TermVector, module = example("term_vector", "TermVector")
    inputs = read_files(data["site"], split_bytes=8_000)
    vectors, _ = submit(address, TermVector(min_count=5), inputs)
    assert vectors == module.direct_term_vectors(inputs.files(), min_count=5)
    assert sorted(vectors) == sorted(sample_data.HOSTS)
    for vector in vectors.values():
        assert all(n >= 5 for _, n in vector)  # infrequent terms thrown away
        assert not {w for w, _ in vector} & module.STOP_WORDS


def test_inverted_index_names_the_documents(address, data):
    InvertedIndex, module = example("inverted_index", "InvertedIndex")
    inputs = read_text(data["docs"], with_path=True, split_bytes=1_500)
    index, _ = submit(address, InvertedIndex(), inputs, reducers=2)
    files = inputs.files()
    assert index == module.direct_index(files)
    assert index["café"] == [p for p in files if p.endswith("doc-01.txt")]
    assert set(index["map"]) <= set(files) and len(index["map"]) > 1


def test_sort_gives_every_record_in_key_order(address, data):
    Sort, module = example("sort", "Sort")
    inputs = read_text(data["records"], split_bytes=25_000)
    pairs, _ = submit(address, Sort(), inputs, reducers=3)  # one order across reducers
    assert pairs == module.direct_sort(inputs.files())
    duplicates = [record for key, record in pairs if key == "duplicate!"]
    assert len(duplicates) > 3  # records of one key in input order (the reference's)


def test_sort_s_part_files_are_in_one_order(address, data, tmp_path):
    _, module = example("sort", "Sort")
    out = subprocess.run(pmr("run", "examples/sort.py:Sort", data["records"], "--connect",
                             address, "--reducers", "3", "--output", str(tmp_path / "out")),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    parts = sorted((tmp_path / "out").glob("part-*"))
    assert len(parts) == 3 and all(p.stat().st_size for p in parts)
    pairs = [tuple(json.loads(line)) for p in parts for line in p.read_text().splitlines()]
    assert pairs == module.direct_sort(read_text(data["records"]).files())


def test_pymapreduce_run_against_daemons_reads_files_as_the_job_says(address, data):
    """`pymapreduce run FILE.py:Job DIR --connect`: the job's read_inputs gives records
    that know their file, so the index names documents, not offsets."""
    _, module = example("inverted_index", "InvertedIndex")
    out = subprocess.run(pmr("run", "examples/inverted_index.py:InvertedIndex", data["docs"],
                             "--connect", address, "--split-bytes", "2000"),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    index = dict(json.loads(line) for line in out.stdout.splitlines())
    assert index == module.direct_index(read_text(data["docs"]).files())


def test_grep_s_pattern_is_a_job_parameter_of_pymapreduce_run(address, data):
    _, module = example("grep", "Grep")
    out = subprocess.run(pmr("run", "examples/grep.py:Grep", "-p", "pattern=POST /p1", data["logs"],
                             "--connect", address),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    matches = sorted((tuple(key), line) for key, line in map(json.loads, out.stdout.splitlines()))
    assert matches == sorted(module.direct_grep("POST /p1", read_text(data["logs"]).files()))
    assert matches and all("POST /p1" in line for _, line in matches)


def test_examples_run_as_scripts_and_with_pymapreduce_run(data):
    """Each example is a script; two of them here, on embedded clusters."""
    _, module = example("url_access", "UrlAccessCount")
    out = subprocess.run([sys.executable, "examples/url_access.py", data["logs"]], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    top = sorted(module.direct_counts(read_text(data["logs"]).files()).items(),
                 key=lambda kv: (-kv[1], kv[0]))[:20]
    assert [line.split() for line in out.stdout.splitlines()] == [[str(n), u] for u, n in top]

    out = subprocess.run(pmr("run", "examples/reverse_links.py:ReverseLinks", data["site"],
                             "--workers", "2"),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    _, links = example("reverse_links", "ReverseLinks")
    graph = dict(json.loads(line) for line in out.stdout.splitlines())
    assert graph == links.direct_reverse_links(read_files(data["site"]).files())


def test_an_example_on_the_embedded_cluster(data):
    TermVector, module = example("term_vector", "TermVector")
    inputs = read_files(data["site"])
    assert TermVector().run(inputs, workers=2) == module.direct_term_vectors(inputs.files())


def test_read_inputs_that_returns_no_input_is_a_clear_error(tmp_path, data):
    job_file = tmp_path / "bad.py"
    job_file.write_text("from pymapreduce import Job\n"
                        "class Bad(Job):\n"
                        "    def read_inputs(self, paths, **options):\n"
                        "        return paths\n"
                        "    def map(self, key, value):\n"
                        "        yield key, value\n")
    out = subprocess.run(pmr("run", f"{job_file}:Bad", data["docs"]), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "Bad.read_inputs() returned list" in out.stderr
    assert "Traceback" not in out.stderr


# -- a reader that goes away: `python examples/X.py | head -1` ------------------------------

def script_args(name: str, data: dict, tmp_path) -> list[str]:
    """Each example script's command line, on this module's sample data."""
    return {"grep": ['" 404 ', data["logs"]], "url_access": [data["logs"]],
            "reverse_links": [data["site"]], "term_vector": [data["site"]],
            "inverted_index": [data["docs"]], "sort": [data["records"]],
            "pagerank": ["40", "3"], "sample_data": [str(tmp_path / "samples")],
            "wordcount": [], "seed_charcount": []}[name]


def script_env() -> dict:
    """This checkout's pymapreduce first (a script's own directory is its sys.path[0])."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


SCRIPTS = sorted(n[:-3] for n in os.listdir(EXAMPLES) if n.endswith(".py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_whose_stdout_is_closed_ends_quietly(name, data, tmp_path):
    """Every example script run with its standard output a pipe whose reader is gone
    before it prints (``| head`` that has had enough): it ends with status 0, and no
    traceback, not even ``BrokenPipeError`` on its last flush."""
    assert {"grep", "wordcount", "seed_charcount", "sample_data"} <= set(SCRIPTS)
    for _ in range(3):  # (seed_charcount's random ports may be taken: as test_embedded)
        r, w = os.pipe()
        os.close(r)  # no reader, ever: every write of the script fails
        try:
            done = subprocess.run([sys.executable, os.path.join(EXAMPLES, f"{name}.py"),
                                   *script_args(name, data, tmp_path)], stdout=w,
                                  stderr=subprocess.PIPE, cwd=ROOT, env=script_env(),
                                  timeout=180)
        finally:
            os.close(w)
        if b"AddressInUse" not in done.stderr and b"Address already in use" not in \
                done.stderr:  # (a slave's port: ZeroMQ's own error, in its thread)
            break
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr, \
        done.stderr.decode()[-2000:]
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_grep_piped_to_head_ends_quietly(data):
    """``python examples/grep.py ... | head -1`` with a real ``head``: its first line
    comes through, and the script ends with status 0 and no traceback."""
    grep = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, "grep.py"), " ",
                             data["logs"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=script_env())
    head = subprocess.Popen(["head", "-1"], stdin=grep.stdout, stdout=subprocess.PIPE)
    grep.stdout.close()  # (head holds the pipe's only reader)
    try:
        first, _ = head.communicate(timeout=180)
        _, err = grep.communicate(timeout=180)
    finally:
        for proc in (grep, head):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.count(b"\n") == 1 and b": " in first
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]
    assert grep.returncode == 0, err.decode()[-2000:]


def test_the_readme_s_word_count_with_its_stdout_closed_ends_quietly():
    """The README's first command (``pymapreduce run examples/wordcount.py:WordCount``),
    its standard output a pipe with no reader: status 0, no traceback."""
    r, w = os.pipe()
    os.close(r)
    try:
        done = subprocess.run(pmr("run", "examples/wordcount.py:WordCount",
                                  "pymapreduce/store/*.py"), stdout=w,
                              stderr=subprocess.PIPE, cwd=ROOT, env=script_env(), timeout=180)
    finally:
        os.close(w)
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr, \
        done.stderr.decode()[-2000:]
    assert done.returncode == 0, done.stderr.decode()[-2000:]
