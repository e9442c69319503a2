"""A plain sort's reduce written from its segments' bytes (``speedups.merge_runs_json``,
rangesort.py's ``merge_runs_lines``): a reduce task that writes a part file merges its
runs where they lie in their bytes and writes their JSON lines (and, for a client that
keeps results, the pairs packed), with no str object per key and value. It must write
exactly what the decoding path writes, and leave to that path every segment that is not
runs of str as map tasks pack them:
these bytes come from other workers, so a run out of order, a key of another type, text
that is not UTF-8 or a length that lies gets what it got before (sorted, or refused)."""

from __future__ import annotations

import json
import os
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymapreduce import Job, speedups
from pymapreduce.errors import UndecodableValue
from pymapreduce.patterns.records import pack
from pymapreduce.rangesort import RUNS, EncodedLines, merge_runs_lines
from pymapreduce.sampling import cut_boundaries
from pymapreduce.store.output import temp_name, write_attempt
from pymapreduce.workers.runner import run_task

built = pytest.mark.skipif(not speedups.built(), reason="the C extension is not built here "
                           "(no C compiler at install, or PYMAPREDUCE_PURE=1)")


class Sort(Job):
    total_order = True

    def map(self, offset, line):
        yield line[:4], line[4:]


def bounded(keys: list, reducers: int) -> Job:
    job = Sort()
    job.__dict__["_pmr_bounds"] = cut_boundaries("Sort", sorted(keys), reducers)
    return job


def reference(runs: list) -> bytes:
    """The lines of the runs' pairs, stably sorted by key (as merge_runs orders them)."""
    keys = [k for ks, _ in runs for k in ks]
    values = [v for _, vs in runs for v in vs]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return "".join(json.dumps([keys[i], values[i]], ensure_ascii=False) + "\n"
                   for i in order).encode("utf-8")


TEXT = st.lists(st.sampled_from(
    ["a", "b", "z", "é", "ÿ", "中", "\U0001f600", '"', "\\", "\n", "\t", "\x00", "\x1f",
     "\x7f", "\x80", "\u2028", "x" * 9]), max_size=6).map("".join)


@built
@settings(max_examples=400)
@given(st.lists(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=8), max_size=6),
       st.booleans())
def test_merged_lines_are_the_stable_sort_of_the_runs_written(runs, views):
    runs = [tuple(map(list, zip(*sorted(run, key=lambda kv: kv[0])))) for run in runs]
    blobs = [pack([keys, values, RUNS]) for keys, values in runs]
    if views:  # (a TASKS message's frames come as memoryviews)
        blobs = [memoryview(b) for b in blobs]
    out = merge_runs_lines(blobs)
    assert out == EncodedLines(reference(runs), sum(len(k) for k, _ in runs))


def segment(keys: list, values: list) -> bytes:
    return pack([keys, values, RUNS])


GOOD = segment(["a", "c"], ["1", "2"])
# each one is left to the Python path: what is not runs of str exactly as map tasks pack them
LEFT = {
    "a run out of order": segment(["c", "a"], ["1", "2"]),
    "an int key": segment([1, 2], ["1", "2"]),
    "a bytes value": segment(["a"], [b"x"]),
    "another third item": pack([["a"], ["x"], 2]),
    "the 1 written long": pack([["a"], ["x"]]).replace(b"\x92", b"\x93", 1) + b"\xcc\x01",
    "a byte left over": GOOD + b"\x00",
    "cut short": GOOD[:-3],
    "empty": b"",
    "more values than keys": segment(["a"], ["x", "y"]),
    "a surrogate in UTF-8": b"\x93\x91\xa3\xed\xa0\x80\x91\xa1x\x01",
    "an overlong form": b"\x93\x91\xa2\xc0\xaf\x91\xa1x\x01",
    "past U+10FFFF": b"\x93\x91\xa4\xf4\x90\x80\x80\x91\xa1x\x01",
    "a lone continuation byte": b"\x93\x91\xa1\x80\x91\xa1x\x01",
    "a length past the bytes": b"\x93\x91\xdb\xff\xff\xff\xff" + b"a" * 8,
    "a count past the bytes": b"\x93\xdd\x7f\xff\xff\xff\xa1a",
}


@built
@pytest.mark.parametrize("name", sorted(LEFT))
def test_what_is_not_runs_of_str_is_left_to_the_python_path(name):
    assert merge_runs_lines([GOOD, LEFT[name]]) is None
    assert merge_runs_lines([LEFT[name]]) is None


def reduce_file(tmp_path, blobs: list, results: bool, tag: str) -> tuple:
    """A reduce task of ``blobs`` as a worker runs it: its commit record (with the packed
    pairs when the client keeps results), its part file's bytes and its statistics."""
    job = bounded(["a", "m"], 1)
    spec = {"url": str(tmp_path / tag), "results": results}
    out, stats = run_task(job, "reduce", ["part", 0, len(blobs)], list(blobs), 1, False,
                          columns=True, lines=not results)
    record = write_attempt(spec, "j", 0, 7, out[0])
    return record, (tmp_path / tag / temp_name("j", 7, 0)).read_bytes(), stats


@pytest.mark.parametrize("results", [False, True], ids=["part file", "results kept"])
@pytest.mark.parametrize("blobs", [
    [segment(["a", "b", "b"], ["1", 'two "2"', "é"]), segment(["b", "c"], ["\x00", "中"])],
    [segment(["c", "a"], ["1", "2"]), GOOD],  # a hostile worker's run out of order: sorted
    [segment([3, 1], ["x", "y"]), segment([2], ["z"])],  # ints: decoded, sorted, written
    [segment(["k"] * 5, [str(i) for i in range(5)])] * 3,  # ties: earlier segments first
    [segment([f"k{i:05d}" for i in range(70_000)], ["v" * 300] * 70_000)],  # long headers
], ids=["text", "out of order", "ints", "ties", "large"])
def test_a_reduce_writes_what_the_decoding_path_writes(tmp_path, blobs, results,
                                                       monkeypatch):
    """The part file, the commit record and (results kept) the packed pairs the client
    gets, and the task's statistics: the same from the runs' bytes as decoded."""
    fast = reduce_file(tmp_path, blobs, results, "fast")
    monkeypatch.setattr(speedups, "merge_runs_json", None)  # (the decoding path)
    slow = reduce_file(tmp_path, blobs, results, "slow")
    assert fast == slow
    decoded = [msgpack.unpackb(b) for b in blobs]
    assert fast[1] == reference([(d[0], d[1]) for d in decoded])


@built
def test_the_packed_pairs_are_packs_bytes_of_the_merged_columns():
    rng = random.Random(4)
    runs = [(sorted(rng.choice(["", "a", "é" * 20, "k" * 40, "z" * 300]) for _ in range(n)),
             [rng.choice(["", "v", "中" * 100]) for _ in range(n)]) for n in (1, 15, 16, 17)]
    out = merge_runs_lines([segment(k, v) for k, v in runs], columns=True)
    keys = [k for ks, _ in runs for k in ks]
    values = [v for _, vs in runs for v in vs]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    assert out.packed == pack([[keys[i] for i in order], [values[i] for i in order]])
    assert merge_runs_lines([segment(k, v) for k, v in runs]).packed is None


@pytest.mark.parametrize("bad", ["a surrogate in UTF-8", "cut short", "a count past the bytes"])
def test_a_segment_that_does_not_decode_fails_the_task_as_before(tmp_path, bad):
    for results in (True, False):
        with pytest.raises(Exception) as failed:
            reduce_file(tmp_path, [GOOD, LEFT[bad]], results, f"t{results}")
        assert isinstance(failed.value.cause, UndecodableValue)


def test_lines_without_their_pairs_are_refused_for_a_client_that_keeps_results(tmp_path):
    with pytest.raises(ValueError, match="keeps results"):
        write_attempt({"url": str(tmp_path), "results": True}, "j", 0, 7,
                      EncodedLines(b'["a", "b"]\n', 1))


@built
def test_a_large_reduce_of_many_runs_is_the_stable_sort(tmp_path):
    rng = random.Random(9)
    runs = []
    for _ in range(40):  # forty map tasks' runs, keys sharing long beginnings
        keys = sorted("prefix-" + "".join(rng.choice("ab\u00e9") for _ in range(3))
                      for _ in range(rng.randrange(1, 300)))
        runs.append((keys, [f"v{rng.randrange(10**6)}" for _ in keys]))
    out = merge_runs_lines([segment(k, v) for k, v in runs])
    assert out == EncodedLines(reference(runs), sum(len(k) for k, _ in runs))


# -- a red team's attacks, kept ----------------------------------------------------------

BAD_UTF8 = [b"\xc0\x80", b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xf0\x8f\xbf\xbf",
            b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"\xc2", b"\xe2\x82",
            b"\xf0\x9f\x98", b"\xc2\x41"]
HEADS = [b"\xd9", b"\xda", b"\xdb", b"\xdc", b"\xdd", b"\xa0", b"\xbf", b"\x90", b"\x9f",
         b"\x01", b"\x93", b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xda\xff\xff"]


def python_lines(segments: list) -> tuple | None:
    """What the decoding path writes for ``segments``, or None where it refuses them."""
    from pymapreduce.patterns.records import unpack

    runs = []
    try:
        for blob in segments:
            decoded = unpack(blob, allow_pickle=True)
            if type(decoded) is not list or len(decoded) != 3 or decoded[2] != RUNS or \
                    len(decoded[0]) != len(decoded[1]):
                return None
            runs.append((decoded[0], decoded[1]))
        return reference(runs), sum(len(k) for k, _ in runs)
    except Exception:  # (refused, or keys that do not compare)
        return None


@built
@pytest.mark.parametrize("seed", range(3))
def test_mutated_segments_give_the_decoding_paths_lines_or_none(seed):
    """Valid runs with bytes flipped, cut, added, swapped, or bad UTF-8 and odd headers
    put in: merge_runs_json writes only what the decoding path would write, and leaves
    every run it refuses (a red team ran 130,000 such cases under AddressSanitizer)."""
    rng = random.Random(seed)
    alphabet = ["a", "b", "z", " ", '"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\u07ff",
                "\u0800", "中", "\uffff", "\U00010000", "\U0010ffff"]
    for _ in range(1500):
        segments = []
        for _ in range(rng.choice([1, 2, 3])):
            n = rng.choice([1, 2, 3, 16, 17])
            keys = sorted("".join(rng.choice(alphabet) for _ in range(rng.randrange(4)))
                          for _ in range(n))
            segments.append(bytearray(segment(keys, ["".join(
                rng.choice(alphabet) for _ in range(rng.randrange(9))) for _ in keys])))
        if rng.random() < 0.8:
            blob = segments[rng.randrange(len(segments))]
            at = rng.randrange(len(blob))
            kind = rng.randrange(6)
            if kind == 0:
                blob[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del blob[at:]
            elif kind == 2:
                blob[at:at] = rng.choice(BAD_UTF8)
            elif kind == 3:
                blob[at:at] = rng.choice(HEADS)
            elif kind == 4:
                blob += bytes([rng.randrange(256)])
            else:
                other = rng.randrange(len(blob))
                blob[at], blob[other] = blob[other], blob[at]
        segments = [bytes(b) for b in segments]
        got = merge_runs_lines(segments, columns=True)
        want = python_lines(segments)
        assert (merge_runs_lines(segments) is None) == (got is None)
        if got is not None:
            assert tuple(got)[:2] == want, segments
            keys = [k for b in segments for k in msgpack.unpackb(b)[0]]
            values = [v for b in segments for v in msgpack.unpackb(b)[1]]
            order = sorted(range(len(keys)), key=keys.__getitem__)
            assert got.packed == pack([[keys[i] for i in order], [values[i] for i in order]])
        else:  # (runs of str packed as map tasks pack them are never left)
            assert want is None or not all(
                pack(d := msgpack.unpackb(b)) == b and d[0] == sorted(d[0]) and
                all(type(x) is str for x in d[0] + d[1]) for b in segments)


def in_child(code: str) -> str:
    import subprocess
    import sys
    import textwrap

    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]  # (not a crash)
    return done.stdout


@built
@pytest.mark.parametrize("change", ["del parts[1:]", "parts[0] = ('not a list', 12345)"])
def test_pack_columns_survives_a_finalizer_that_changes_its_parts(change):
    """Making the result's list may run the collector, and so a finalizer that changes
    the parts: they are checked after it (was: a list with a NULL item, or a crash)."""
    out = in_child(f"""
        import gc
        from pymapreduce import _speedups
        parts = [(["a"], ["x"]), (["b"], ["y"])]
        class Changes:
            def __init__(self):
                self.me = self
            def __del__(self):
                {change}
        gc.collect(); gc.disable(); Changes(); gc.set_threshold(1); gc.enable()
        try:
            out = _speedups.pack_columns(parts, 1)
        except (TypeError, RuntimeError) as exc:
            out = type(exc).__name__
        gc.set_threshold(700)
        print(repr(out))
        """)
    assert "NULL" not in out


@built
def test_merge_runs_json_survives_a_buffer_that_changes_the_list():
    """From Python 3.12 a class's ``__buffer__`` runs while the segments' buffers are
    taken: the list is read from a copy (was: a crash reading past its new end)."""
    out = in_child("""
        from pymapreduce import _speedups
        good = b"\\x93\\x91\\xa1a\\x91\\xa1x\\x01"
        segments = []
        class Clears:
            def __buffer__(self, flags):
                segments.clear()
                return memoryview(good)
        segments[:] = [Clears(), good, good]
        try:
            print(_speedups.merge_runs_json(segments))
        except TypeError as exc:  # (before 3.12: not a buffer at all)
            print("TypeError")
        """)
    assert out.strip()


class EscapedSort(Job):
    """A plain sort whose keys and values hold JSON escapes and non-ASCII text ('~' in
    the input is a newline, '^' a carriage return, '|' a form feed: a text line cannot
    hold those)."""

    total_order = True

    def map(self, offset, line):
        line = line.replace("~", "\n").replace("^", "\r").replace("|", "\f")
        yield line[:3], line[3:]


@built
def test_a_real_sort_writes_the_same_part_files_whether_results_are_kept(tmp_path,
                                                                         monkeypatch):
    """Through real workers: the part files merged from the runs' bytes are the same
    whether the client keeps results or not (and, with them, its pairs are the stable
    sort's), ties in input order; and the bytes path was the one taken."""
    from pymapreduce import Client, LocalCluster, read_text
    from pymapreduce.workers import runner

    taken = tmp_path / "taken"
    real = runner.merge_runs_lines

    def noted(segments, columns=False):
        out = real(segments, columns)
        with open(taken, "a") as f:
            f.write("bytes\n" if out is not None else "decoded\n")
        return out

    monkeypatch.setattr(runner, "merge_runs_lines", noted)
    rng = random.Random(5)
    pool = ["a", "b", "z", "é", "ÿ", "中", "\U0001f600", '"', "\\", "\t", "\x00", "\x01",
            "\x1f", "\x7f", "\x80", "\u2028", "/", "\U0010ffff", " ", "~", "^", "|"]
    lines = ["".join(rng.choice(pool) for _ in range(rng.randrange(3, 20)))
             for _ in range(6000)]
    lines += [lines[i][:3] + f"tie{i}" for i in range(0, 6000, 7)]  # equal keys
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "input.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files = {}
    # (forked, whatever threads this process runs: the workers run the patched copy)
    with LocalCluster(workers=2, start_method="fork") as cluster, \
            Client(cluster.address) as client:
        for results in (False, True):
            out = tmp_path / f"out-{results}"
            client.submit(EscapedSort(), read_text(str(tmp_path / "in"), split_bytes=8_000),
                          reducers=3, output_dir=out, results=results).wait(120)
            files[results] = {n: (out / n).read_bytes() for n in sorted(os.listdir(out))
                              if n.startswith("part-")}
    assert taken.read_text().split() == ["bytes"] * 6  # (both runs, every reduce task)
    assert files[False] == files[True] and len(files[False]) == 3
    got = [tuple(json.loads(x)) for name in sorted(files[False])
           for x in files[False][name].decode("utf-8").split("\n")[:-1]]  # (not at U+2028)
    pairs = [(x[:3], x[3:]) for x in (y.replace("~", "\n").replace("^", "\r")
                                      .replace("|", "\f") for y in lines)]
    assert got == sorted(pairs, key=lambda kv: kv[0])  # (stable: ties in input order)
