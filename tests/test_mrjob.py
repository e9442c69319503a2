"""mrjob jobs, unchanged, through pymapreduce (``pymapreduce run mr_job.py`` and
``pymapreduce.adapters.mrjob.run``) on real daemons: output byte for byte as mrjob's
inline runner writes it (run here in a subprocess on the same files), counters equal.

mrjob's runner reads a step's part files in the order the file system lists them; the
reference runs with that listing sorted (``tests/mrjob_reference.py --sorted-parts``), the
order of the keys, which is the order the adapter writes. The plain runner's output is
compared too, as the same lines in its own order.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("mrjob", reason="mrjob is not installed (pip install -e '.[test]'; "
                    "mrjob imports `pipes`, so the test extras leave it out on Python 3.13+)")
# mrjob 0.7.4 imports `pipes` (deprecated in 3.11, gone in 3.13): its warning, not ours
pytestmark = pytest.mark.filterwarnings("ignore:'pipes' is deprecated:DeprecationWarning")

import mrjob.examples  # noqa: E402

from pymapreduce import ConfigError, JobFailed  # noqa: E402
from pymapreduce.adapters import mrjob as adapter  # noqa: E402

from .conftest import FAST, ROOT, Daemons, pmr, wait_workers  # noqa: E402

EXAMPLES = os.path.dirname(mrjob.examples.__file__)
REFERENCE = os.path.join(ROOT, "tests", "mrjob_reference.py")
# set iteration order (mr_text_classifier's category sets) follows str hashing: the same
# seed for mrjob's run and the workers makes that order, and so the output, comparable
SEED = {"PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def address():
    daemons = Daemons()
    try:
        _, addr = daemons.broker(*FAST)
        daemons.worker(addr, 2, env=SEED)
        wait_workers(addr, 2)
        yield addr
    finally:
        daemons.cleanup()


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Three files, ~300 KB (several map tasks): repeated and rare words, non-ASCII
    words, apostrophes, tabs, blank lines, CRLF lines, invalid UTF-8 (mrjob reads such a
    line as Latin-1), and a last line without a newline."""
    rng = random.Random(7)
    vocab = ["the", "a", "and", "of", "It", "is", "zebra", "Über", "straße", "naïve",
             "café", "中文", "don't", "rock'n'roll", "x1", "42", "3.14", "Hello", "HELLO",
             "tab\there", "you", "Quux"] + [f"w{i}" for i in range(2000)]
    folder = tmp_path_factory.mktemp("texts")
    paths = []
    for name, count in (("one.txt", 6000), ("two.txt", 3000), ("six.txt", 900)):
        with open(folder / name, "wb") as out:
            for i in range(count):
                words = (rng.choice(vocab) if rng.random() < .6
                         else f"w{int(rng.paretovariate(1.1)) % 5000}"
                         for _ in range(rng.randint(0, 14)))
                line = " ".join(words).encode()
                if i % 97 == 5:
                    line += b"\r"
                if i % 501 == 7:
                    line += b"\xff\xfe bad bytes \xe9t\xe9"
                out.write(line + b"\n")
            out.write(b"no newline at the end")
        paths.append(str(folder / name))
    return paths


def reference(spec: str, argv: list[str], sorted_parts: bool = True) -> tuple[bytes, dict]:
    """mrjob's inline runner on ``argv``: its output and its counters (summed over steps)."""
    flag = ["--sorted-parts"] if sorted_parts else []
    # (TMPDIR of its own: mrjob's local runner leaves a wrapper lock file in it)
    with tempfile.TemporaryDirectory(prefix="pmr-mrjob-ref-") as tmp:
        done = subprocess.run([sys.executable, REFERENCE, *flag, spec, *argv], cwd=ROOT,
                              capture_output=True, timeout=300,
                              env={**os.environ, **SEED, "TMPDIR": tmp,
                                   "PYTHONPATH": os.pathsep.join(filter(
                                       None, [ROOT, os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout, json.loads(done.stderr.decode().strip().splitlines()[-1])


def cli(address: str, job_file: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(pmr("run", job_file, "--connect", address, *argv), cwd=ROOT,
                          capture_output=True, timeout=300, **kw)


BYTE_IDENTICAL = [
    ("mr_word_freq_count", "MRWordFreqCount"),  # combiner
    ("mr_wc", "MRWordCountUtility"),  # state from __init__, mapper_final
    ("mr_count_lines_right", "MRCountLinesRight"),  # mapper_init/final, a None key
    ("mr_count_lines_by_file", "MRCountLinesByFile"),  # jobconf_from_env input file
    ("mr_most_used_word", "MRMostUsedWord"),  # two steps, FILES, JSONValueProtocol
    ("mr_next_word_stats", "MRNextWordStats"),  # SORT_VALUES, tuple keys, two steps
    ("mr_nick_nack", "MRNickNack"),  # RawValueProtocol output (Hadoop formats ignored)
]


@pytest.mark.parametrize("module,name", BYTE_IDENTICAL)
def test_example_jobs_through_the_cli_write_mrjobs_bytes(address, texts, module, name):
    expected, counters = reference(f"mrjob.examples.{module}:{name}", texts)
    assert expected.count(b"\n") >= 1
    done = cli(address, os.path.join(EXAMPLES, f"{module}.py"), texts)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == expected
    # the plain runner (part files in the file system's order): the same lines
    plain, _ = reference(f"mrjob.examples.{module}:{name}", texts, sorted_parts=False)
    assert sorted(done.stdout.splitlines()) == sorted(plain.splitlines())


def test_an_input_named_twice_is_read_twice_as_mrjob_reads_it(address, texts):
    argv = [texts[0], *texts]
    expected, _ = reference("mrjob.examples.mr_word_freq_count:MRWordFreqCount", argv)
    once, _ = reference("mrjob.examples.mr_word_freq_count:MRWordFreqCount", texts)
    assert expected != once
    done = cli(address, os.path.join(EXAMPLES, "mr_word_freq_count.py"), argv)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == expected


def test_text_classifier_four_steps_mapper_raw_and_options(address):
    """mapper_raw (one task per file), four reduce steps whose reducers sum floats in the
    order values arrive, passthrough options."""
    docs = sorted(os.path.join(EXAMPLES, "docs-to-classify", f)
                  for f in os.listdir(os.path.join(EXAMPLES, "docs-to-classify")))
    from mrjob.examples.mr_text_classifier import MRTextClassifier

    for options in ([], ["--min-df", "1", "--max-ngram-size", "2"]):
        expected, counters = reference("mrjob.examples.mr_text_classifier:MRTextClassifier",
                                       [*options, *docs])
        got = adapter.run(MRTextClassifier, docs, options, address=address)
        assert got.output == expected
        assert got.counters == counters
        assert sum(1 for k, _ in got.pairs() if k[0] == "doc") == len(docs)


def test_counters_protocols_options_and_value_order(address, texts):
    expected, counters = reference("tests.mrjob_jobs:MRLettersInOrder", ["--min-len", "3",
                                                                         *texts])
    assert counters["words"]["short; dropped"] > 0  # (mrjob: commas become ;)
    from .mrjob_jobs import MRLettersInOrder

    got = adapter.run(MRLettersInOrder, texts, ["--min-len", "3"], address=address)
    assert got.output == expected
    assert got.counters == counters


@pytest.mark.parametrize("name", ["MRGroupedByKey", "MRGroupedByKeyUnsorted"])
def test_map_side_groups_by_key_give_mrjobs_bytes(address, texts, name):
    """A combining task gathers str and word-pair keys with int values by the key itself
    (grouping.py); a tuple key and an equal list key, a True value, int values of one
    and of several digits (which sort as text) give what mrjob's encoded groups give."""
    from . import mrjob_jobs

    expected, _ = reference(f"tests.mrjob_jobs:{name}", texts)
    assert b'["pair", ' in expected and b'1\t[["int"], ' in expected
    got = adapter.run(getattr(mrjob_jobs, name), texts, address=address)
    assert got.output == expected


@pytest.mark.parametrize("sort_values", [True, False])
def test_a_map_task_groups_by_key_as_it_groups_by_bytes(texts, monkeypatch, sort_values):
    """One map task's output, run in this process over every line, with groups by key
    (and their turn into encoded ones at the first pair of another kind) and with
    encoded groups only: the same pairs, the combiner called with the same groups."""
    from pymapreduce.adapters import mrjob as adapter_module
    from pymapreduce.adapters.mrjob import grouping

    from .mrjob_jobs import MRGroupedByKeyInOneTask

    class Job(MRGroupedByKeyInOneTask):
        SORT_VALUES = sort_values

    def map_task(lines: list) -> list:
        _, plan, _ = adapter_module.prepare(Job, [texts[0]])
        step = adapter_module._step_job(plan, 0)
        step.map_init()
        for n, line in enumerate(lines):
            assert not step.map((texts[0], n), line)  # (a combining task keeps its pairs)
        return step.map_final()

    with open(texts[0], "rb") as f:
        lines = f.read().decode("latin-1").split("\n")
    plain = [line for line in lines if "zebra" not in line.split()]
    zebras = [line for line in lines if "zebra" in line.split()]
    half = len(plain) // 2
    # by key to the end; turned into encoded groups half way, at the first "zebra" line
    for part in (plain, plain[:half] + zebras + plain[half:]):
        monkeypatch.setattr(grouping, "BY_KEY", False)
        expected = map_task(part)
        monkeypatch.setattr(grouping, "BY_KEY", True)
        assert map_task(part) == expected
        assert b'"list"' in b"".join(rest for _, rest in expected)


@pytest.mark.parametrize("by_key", [True, False])
def test_an_int_too_long_to_write_fails_where_mrjob_fails(texts, monkeypatch, by_key):
    """A count of more digits than Python writes as text fails the map task at its
    pair, as mrjob fails writing it, with groups by key too (they keep ints, not their
    bytes: a long one goes the encoded way)."""
    from pymapreduce.adapters import mrjob as adapter_module
    from pymapreduce.adapters.mrjob import grouping

    from .mrjob_jobs import MRHugeCounts

    monkeypatch.setattr(grouping, "BY_KEY", by_key)
    _, plan, _ = adapter_module.prepare(MRHugeCounts, [texts[0]])
    step = adapter_module._step_job(plan, 0)
    step.map_init()
    with pytest.raises(ValueError, match="Exceeds the limit"):
        step.map((texts[0], 0), "a line of words")


def test_the_adapters_json_follows_json_changed_by_a_task(monkeypatch):
    """A job that changes json in a task (its default, json.dumps or json.loads, json's
    default coders), after the adapter's writer and reader were made: what they write
    and read is what mrjob's protocol, calling json, writes and reads."""
    import decimal
    import functools
    import json

    from mrjob.protocol import StandardJSONProtocol

    from pymapreduce.adapters.mrjob.task import json_dumps, json_loads

    proto = StandardJSONProtocol()
    write, read = json_dumps(proto._dumps), json_loads(proto._loads)
    values = [[1, {3, 2}], ("café", [1.5]), "naïve", {"b": 1, "a": 2}]
    monkeypatch.setattr(json.JSONEncoder, "default",
                        lambda self, o: sorted(o) if isinstance(o, set) else str(o))
    monkeypatch.setattr(json, "dumps", functools.partial(json.dumps, ensure_ascii=False,
                                                         sort_keys=True))
    for value in values:
        assert write(value) == proto._dumps(value)
    monkeypatch.setattr(json, "_default_decoder",
                        json.JSONDecoder(parse_float=decimal.Decimal))
    for data in (b"1.5", b'["a", 2.5]', b'"x"', b"12"):
        got, expected = read(data), proto._loads(data)
        assert got == expected and type(got) is type(expected)
        assert repr(got) == repr(expected)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=4),
                          st.lists(st.sampled_from([b"\x00", b"\t", b"\n", b"\x0b", b" ",
                                                    b"1", b"-", b'"', b"\xff"]),
                                   max_size=4).map(b"".join)), max_size=8))
def test_a_groups_values_sort_as_mrjob_sorts_their_lines(values):
    """SORT_VALUES sorts whole lines, the newline included; the adapter sorts plain bytes
    when that is the same order, and ints by their digits."""
    from pymapreduce.adapters.mrjob.grouping import line_order, sort_ints, sort_lines

    got = list(values)
    sort_lines(got)
    assert got == sorted(values, key=line_order)
    ints = [int(v.decode().strip("-") or 0) * (-1 if v[:1] == b"-" else 1)
            for v in values if v and v.strip(b"-").isdigit()]
    got = list(ints)
    sort_ints(got)
    assert got == sorted(ints, key=lambda n: line_order(json.dumps(n).encode()))


def test_sort_values_embedded(texts):
    """The embedded cluster (no address): SORT_VALUES orders each key's values."""
    from .mrjob_jobs import MRSortedValues

    expected, _ = reference("tests.mrjob_jobs:MRSortedValues", texts)
    got = adapter.run(MRSortedValues, texts, workers=2)
    assert got.output == expected
    key, values = next(got.pairs())
    assert values == sorted(values, key=json.dumps)


def test_a_file_option_replaces_the_jobs_file(address, texts, tmp_path):
    """add_file_arg: the file travels with the job and the task opens it by name."""
    stop = tmp_path / "stop.txt"
    stop.write_text("w1\nthe\na\nand\nof\nis\n")
    argv = ["--stop-words-file", str(stop), *texts]
    expected, _ = reference("mrjob.examples.mr_most_used_word:MRMostUsedWord", argv)
    done = cli(address, os.path.join(EXAMPLES, "mr_most_used_word.py"), argv)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == expected != b'"w1"\n'


def test_side_file_directories_go_with_the_worker_processes(texts, tmp_path, monkeypatch):
    """A job's side files (mr_most_used_word's FILES) are written to a directory per
    worker process, named as the process's own job directories; when the cluster stops,
    nothing of them is left in the temporary directory."""
    from mrjob.examples.mr_most_used_word import MRMostUsedWord

    from pymapreduce import LocalCluster

    expected, _ = reference("mrjob.examples.mr_most_used_word:MRMostUsedWord", texts)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    with LocalCluster(workers=2) as cluster:
        got = adapter.run(MRMostUsedWord, texts, address=cluster.address)
        assert got.output == expected
        made = [p for p in private.iterdir() if "-mrjob-" in p.name]
        assert made, list(private.iterdir())
        assert all(p.name.startswith("pymapreduce-worker-") for p in made)
        assert all((p / "stop_words.txt").is_file() for p in made)
    assert list(private.iterdir()) == []


def test_task_hooks_output_per_task(address, texts):
    """mapper_init and reducer_init/_final yield pairs, once per task (so their count
    follows the task count, in mrjob as here); the data lines are mrjob's."""
    from .mrjob_jobs import MRTaskHooks

    expected, _ = reference("tests.mrjob_jobs:MRTaskHooks", texts)
    got = adapter.run(MRTaskHooks, texts, address=address, reducers=3)
    lines = got.output.splitlines()
    data = [line for line in lines if not line.startswith(b'"reducer"')]
    assert data[-1] == [x for x in expected.splitlines() if x.startswith(b'"lines"')][0]
    assert lines.count(b'"reducer"\t"init"') == lines.count(b'"reducer"\t"final"') >= 1
    assert data[0].startswith(b'"init"\t')


def test_mapper_final_per_task_sums_to_the_lines(address, texts):
    """mr_count_lines_wrong writes one count per map task: how many lines depends on how
    the input is split (in mrjob too); they add up to the number of lines."""
    from mrjob.examples.mr_count_lines_wrong import MRCountLinesWrong

    got = adapter.run(MRCountLinesWrong, texts, address=address)
    counts = [int(v) for _, v in got.pairs()]
    lines = sum(open(p, "rb").read().count(b"\n") + 1 for p in texts)
    assert len(counts) > 1 and sum(counts) == lines


def test_log_sampler_samples_input_lines(address, texts):
    done = cli(address, os.path.join(EXAMPLES, "mr_log_sampler.py"),
               ["--sample-size", "7", *texts])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    sample = done.stdout.splitlines()
    assert len(sample) == 7
    lines = {_as_mrjob_reads(line.rstrip(b"\r")) for p in texts
             for line in open(p, "rb").read().split(b"\n")}
    assert set(sample) <= lines


def _as_mrjob_reads(line: bytes) -> bytes:
    """A line as RawValueProtocol reads it (UTF-8, else Latin-1) and writes it (UTF-8)."""
    try:
        return line.decode("utf-8").encode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1").encode("utf-8")


def test_output_directory(address, texts, tmp_path):
    """--output DIR writes DIR/part-00000; a directory that is not empty is refused (and
    left as it was) unless --overwrite."""
    wc = os.path.join(EXAMPLES, "mr_wc.py")
    expected, _ = reference("mrjob.examples.mr_wc:MRWordCountUtility", texts[2:])
    out = tmp_path / "out"
    done = cli(address, wc, ["--output", str(out), *texts[2:]])
    assert done.returncode == 0 and done.stdout == b""
    assert (out / "part-00000").read_bytes() == expected
    (out / "part-00000").write_bytes(b"keep")
    done = cli(address, wc, ["--output", str(out), *texts[2:]])
    assert done.returncode == 2 and b"--overwrite" in done.stderr
    assert (out / "part-00000").read_bytes() == b"keep"
    done = cli(address, wc, ["--output", str(out), "--overwrite", *texts[2:]])
    assert done.returncode == 0 and (out / "part-00000").read_bytes() == expected


def test_output_directory_is_marked_succeeded_as_pymapreduce_s_own(address, texts, tmp_path):
    """--output DIR ends as pymapreduce's own --output does (store/commit.py): the part
    file, then ``_SUCCESS`` (empty), and nothing else; over an earlier output
    (--overwrite) its extra part files go too; a job that fails leaves no ``_SUCCESS``,
    not even an earlier run's (nobody takes the directory for a finished output)."""
    wc = os.path.join(EXAMPLES, "mr_wc.py")
    expected, _ = reference("mrjob.examples.mr_wc:MRWordCountUtility", texts[2:])
    out = tmp_path / "out"
    done = cli(address, wc, ["--output", str(out), *texts[2:]])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000"]
    assert (out / "_SUCCESS").read_bytes() == b""
    assert (out / "part-00000").read_bytes() == expected

    earlier = tmp_path / "earlier"  # a native run's output with three partitions
    earlier.mkdir()
    for name in ("part-00000", "part-00001", "part-00002", "_SUCCESS", "notes.txt"):
        (earlier / name).write_bytes(b"old")
    done = cli(address, wc, ["--output", str(earlier), "--overwrite", *texts[2:]])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert sorted(os.listdir(earlier)) == ["_SUCCESS", "notes.txt", "part-00000"]
    assert (earlier / "part-00000").read_bytes() == expected
    assert (earlier / "_SUCCESS").read_bytes() == b""

    done = cli(address, os.path.join(EXAMPLES, "mr_boom.py"),
               ["--output", str(earlier), "--overwrite", *texts[2:]])
    assert done.returncode == 1 and b"BOOM" in done.stderr
    assert sorted(os.listdir(earlier)) == ["notes.txt", "part-00000"]  # (no _SUCCESS)


def test_failures(address, texts, tmp_path):
    from mrjob.examples.mr_boom import MRBoom

    with pytest.raises(JobFailed, match="BOOM"):
        adapter.run(MRBoom, texts[2:], address=address)
    done = cli(address, os.path.join(EXAMPLES, "mr_boom.py"), texts[2:])
    assert done.returncode == 1 and b"BOOM" in done.stderr
    out = tmp_path / "out"  # a failed job leaves no output file behind
    done = cli(address, os.path.join(EXAMPLES, "mr_boom.py"), ["--output", str(out), *texts[2:]])
    assert done.returncode == 1 and list(out.iterdir()) == []
    done = cli(address, os.path.join(EXAMPLES, "mr_log_sampler.py"), texts)  # no option
    assert done.returncode == 2 and b"--sample-size" in done.stderr
    done = cli(address, os.path.join(EXAMPLES, "mr_wc.py"), ["no/such/file.txt"])
    assert done.returncode == 2 and b"no/such/file.txt" in done.stderr


def test_mrjobs_runner_idiom(address, texts):
    """Code written against mrjob's runner API: make_runner, run, parse_output(cat_output)."""
    from mrjob.examples.mr_wc import MRWordCountUtility

    expected, _ = reference("mrjob.examples.mr_wc:MRWordCountUtility", texts)
    mr_job = MRWordCountUtility(texts)
    with adapter.make_runner(mr_job, address=address) as runner:
        runner.run()
        got = dict(mr_job.parse_output(runner.cat_output()))
        assert runner.counters() == [{}]
    assert got == dict(mr_job.parse_output([expected]))
    assert got["lines"] == sum(open(p, "rb").read().count(b"\n") + 1 for p in texts)


def test_mapper_commands_as_mrjobs_local_runner_runs_them(address, texts, tmp_path):
    """mapper_cmd (mr_grep: map-only, a command's lines are the output) and
    mapper_pre_filter (a command before the Python mapper), against mrjob's local runner
    (its inline runner runs no commands). A command reads lines without their ``\\r``, so
    the grep input has none."""
    plain = []
    for path in texts:
        target = tmp_path / os.path.basename(path)
        target.write_bytes(open(path, "rb").read().replace(b"\r", b""))
        plain.append(str(target))
    argv = ["-e", "zebra", *plain]
    expected, _ = reference("mrjob.examples.mr_grep:MRGrepJob", ["-r", "local", *argv])
    assert expected.count(b"\n") > 1
    done = cli(address, os.path.join(EXAMPLES, "mr_grep.py"), argv)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == expected
    spec = "mrjob.examples.mr_words_containing_u_freq_count:MRWordsContainingUFreqCount"
    expected, _ = reference(spec, ["-r", "local", *texts])
    from mrjob.examples.mr_words_containing_u_freq_count import MRWordsContainingUFreqCount

    got = adapter.run(MRWordsContainingUFreqCount, texts, address=address)
    assert expected.count(b"\n") >= 2
    assert got.output == expected


def test_what_is_not_run(address, texts):
    from mrjob.examples.mr_jar_step_example import MRJarStepExample
    from mrjob.examples.mr_spark_wordcount import MRSparkWordcount

    for job in (MRJarStepExample, MRSparkWordcount):
        with pytest.raises(ConfigError, match="Hadoop or Spark|MRStep"):
            adapter.run(job, texts, address=address)


_PLAIN = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126))


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.text(), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
                 st.lists(st.text(), max_size=4), st.tuples(st.text(), st.text()),
                 st.tuples(_PLAIN),
                 st.lists(st.one_of(st.text(), st.integers()), max_size=3),
                 st.recursive(st.one_of(_PLAIN, st.text(), st.integers(), st.floats(),
                                        st.booleans(), st.none()),
                              lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.lists(inner, max_size=3).map(tuple)),
                              max_leaves=8),
                 st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=1).map(tuple),
                              max_leaves=12)))
def test_the_adapters_json_writes_what_mrjobs_json_protocol_writes(value):
    """Keys and values go through mrjob's JSONProtocol; the adapter writes the common ones
    (words, counts, tuples of words) without json's encoder, byte for byte as it would."""
    from mrjob.protocol import StandardJSONProtocol

    from pymapreduce.adapters.mrjob.task import json_dumps

    proto = StandardJSONProtocol()
    fast = json_dumps(proto._dumps)
    assert getattr(fast, "plain", False)  # (the fast path is the one under test)
    assert fast(value) == proto._dumps(value)


def test_the_adapters_json_refuses_what_json_refuses_and_goes_on():
    """A value json cannot write (an object, a list holding itself) fails as json.dumps
    fails; the same writer then writes the next values as json does (what the failure
    left in its table of containers being written is gone: the list that held the bad
    item, that item taken out, is written)."""
    from mrjob.protocol import StandardJSONProtocol

    from pymapreduce.adapters.mrjob.task import json_dumps

    proto = StandardJSONProtocol()
    fast = json_dumps(proto._dumps)
    loop: list = ["a", 1]
    loop.append(loop)
    for bad in ([1, object()], ["x", [2, {"k": {1, 2}}]], loop):
        with pytest.raises((TypeError, ValueError)) as expected:
            proto._dumps(bad)
        with pytest.raises(type(expected.value), match=str(expected.value)):
            fast(bad)
        inner = [3, 0.5]
        bad.pop()  # (the loop, or what json could not write)
        for good in ([inner, inner], ["a", bad, (inner,)], (1, None, True, float("nan"))):
            assert fast(good) == proto._dumps(good)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.binary(max_size=12),
    st.lists(st.sampled_from([b"[", b"]", b'"', b", ", b",", b" ", b"0", b"7", b"-", b"a",
                              b"\\", b"\\t", b"\x01", b"\xc3\xa9", b"_"]), max_size=8).map(
        b"".join),
    st.one_of(st.text(), st.integers(), st.lists(st.text(), max_size=3)).map(
        lambda v: json.dumps(v).encode()),
    st.recursive(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none()),
                 lambda inner: st.one_of(st.lists(inner, max_size=3),
                                         st.dictionaries(st.text(max_size=3), inner,
                                                         max_size=2)),
                 max_leaves=8).map(lambda v: json.dumps(v).encode()),
    st.tuples(st.sampled_from([b"", b" ", b"\n", "\ufeff".encode(),
                               b"x", b"]"]),
              st.sampled_from([b'["a", 1]', b'[1, [2, "b"]]', b'{"a": [1]}', b"3.5", b"null"]),
              st.sampled_from([b"", b" ", b"\r", b"]", b","])).map(b"".join)))
def test_the_adapters_json_reads_what_mrjobs_json_protocol_reads(data):
    """What the adapter writes fast it reads fast; every other input goes to json, so a
    value is the same value of the same type, and what json refuses is refused."""
    from mrjob.protocol import StandardJSONProtocol

    from pymapreduce.adapters.mrjob.task import json_loads

    proto = StandardJSONProtocol()
    fast = json_loads(proto._loads)
    assert fast is not proto._loads  # (the fast path is the one under test)
    try:
        expected = ("value", proto._loads(data))
    except ValueError as exc:  # (JSONDecodeError, UnicodeDecodeError)
        expected = ("error", type(exc))
    try:
        got = ("value", fast(data))
    except ValueError as exc:
        got = ("error", type(exc))
    assert got == expected and type(got[1]) is type(expected[1])


def test_help_names_pymapreduces_options_then_the_jobs_own():
    """``pymapreduce run MR_JOB.py --help`` shows the options pymapreduce reads (which
    mrjob's own help does not know) before the job's, and starts no cluster."""
    job_file = os.path.join(os.path.dirname(mrjob.examples.__file__), "mr_wc.py")
    done = subprocess.run(pmr("run", job_file, "--help"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.index("--connect") < out.index("The job's own options") < out.index(
        "--conf-path")
    assert "Traceback" not in done.stderr and "cluster" not in done.stderr


def test_a_line_or_a_command_s_stderr_in_an_error_is_its_owner_s_only(daemons, tmp_path):
    """A line its mrjob protocol cannot read (ReprProtocol's SyntaxError would show the
    line in its traceback, a NameError names it) and a failed mapper command (its
    command is the job's code, its stderr what it wrote) fail with texts that name
    neither: the owner reads the line, or the stderr's end, in the failure's position,
    and others (events, the dashboard, the daemons' logs) never see them."""
    from .mrjob_jobs import MRFailingCommand, MRReprInput
    from .test_data_in_errors import assert_unseen, start_logged

    secret = "".join(["SEC", "RET", "mr"])
    path = tmp_path / "in.txt"
    path.write_text(f"'ok'\t1\n{secret} bad(\t2\n{secret}\t3\n")
    address, http, logs = start_logged(daemons, tmp_path)
    jobs = []
    for job, public, seen in [
            (MRReprInput, "BadRecord: ReprProtocol cannot read the line: SyntaxError",
             f"its text b'{secret} bad(\\t2'"),
            (MRFailingCommand, "mapper command exited with status 3 (its stderr: the "
             "failure's position and the task's log)", f"{secret}\\t3\\n")]:
        with pytest.raises(JobFailed) as info:
            adapter.run(job, [str(path)], address=address)
        message = str(info.value).split("\n")[0]
        assert public in message, message
        assert secret not in message and secret not in info.value.remote_traceback
        assert seen in str(info.value), (info.value.position, str(info.value))
        jobs.append(message.split()[1])
    assert_unseen(secret, address, http, jobs, logs)


_DISTUTILS_CHECK = r"""
import os, sys, sysconfig
hooked = any(type(f).__name__ == "DistutilsMetaFinder" for f in sys.meta_path)
import pymapreduce.adapters.mrjob.steps
import mrjob.job, mrjob.util, mrjob.compat
import distutils
ours = os.path.join(sysconfig.get_paths()["stdlib"], "distutils", "__init__.py")
print(hooked, os.path.samefile(distutils.__file__, ours),
      "setuptools" in sys.modules, mrjob.util.find_executable("sh") is not None,
      mrjob.compat.uses_yarn("2.7.0"))
"""


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12 has no distutils")
def test_mrjob_gets_pythons_distutils_not_all_of_setuptools():
    """mrjob's ``import distutils`` would load all of setuptools through its start-up hook
    (most of ``import mrjob.job``); the adapter gives it Python's own, which works the
    same for mrjob (find_executable, LooseVersion)."""
    out = subprocess.run([sys.executable, "-c", _DISTUTILS_CHECK], capture_output=True,
                         text=True, cwd=ROOT, timeout=60, check=True).stdout.split()
    if out[0] != "True":
        pytest.skip("setuptools' distutils hook is not installed here")
    assert out[1:] == ["True", "False", "True", "True"], out
