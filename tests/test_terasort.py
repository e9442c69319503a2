"""The sort path's speed work (benchmarks/bench_terasort.py): the part-file writer encodes
a column at a time and must write the very bytes ``json.dumps`` per pair wrote."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import math
import os
import random

import pytest

from pymapreduce.client import output
from pymapreduce.client.output import encode_lines, write_output


def reference(keys, values) -> str:
    """What the writer wrote before: one json.dumps per pair."""
    return "".join(json.dumps([k, v], ensure_ascii=False, default=repr) + "\n"
                   for k, v in zip(keys, values))


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Thing:
    def __repr__(self) -> str:
        return 'Thing("x")'


STRS = ["", "plain", 'quote " and \\ back', "tab\there\nnewline\r\x00\x1f\x7f",
        "été, 日本語, emoji \U0001F600", "\u2028\u2029", "</script>", " "]
INTS = [0, -1, 7, 2**63, -(2**80), 10**30]
FLOATS = [0.0, -0.0, 1.5, 1e300, 5e-324, 1 / 3, math.nan, math.inf, -math.inf]
OTHERS = [True, False, None, (1, "a"), [1, [2, 3]], {"k": 1, "2": [None]}, {1: "int key"},
          {3, 1}, frozenset(), Color.RED, Name("sub"), Thing(), b"bytes",
          decimal.Decimal("1.10"), datetime.date(2026, 11, 30), 3 + 4j, (), []]


@pytest.mark.parametrize("keys, values", [
    (STRS, STRS[::-1]),
    (INTS, INTS[::-1]),
    (FLOATS, FLOATS[::-1]),
    ([1.5, 2.5], [math.inf, 0.1]),  # a float column without and with a non-finite
    (OTHERS, OTHERS[::-1]),
    ([True, False], [None, None]),  # one fast type that is not str, int or float
    (STRS[:6], INTS),  # str keys, int values: word count
    (INTS + STRS, STRS + FLOATS[:6]),  # mixed columns of the fast types
    (STRS + OTHERS, OTHERS + STRS),  # mixed with everything else
    ([], []),
    (["a", "b"], [1]),  # columns of unequal lengths: as zip, the shorter decides
])
def test_lines_are_the_bytes_json_dumps_wrote_per_pair(keys, values):
    assert encode_lines(keys, values) == reference(keys, values)


def test_random_columns_match_json_dumps():
    rng = random.Random(10)
    pool = STRS + INTS + FLOATS + OTHERS
    for _ in range(200):
        n = rng.randrange(0, 30)
        kinds = rng.sample([STRS, INTS, FLOATS, pool], 2)
        keys = [rng.choice(kinds[0]) for _ in range(n)]
        values = [rng.choice(kinds[1]) for _ in range(n)]
        assert encode_lines(keys, values) == reference(keys, values)


def test_a_partition_larger_than_a_chunk_is_written_whole_and_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "CHUNK_RECORDS", 7)  # many chunks, a short last one
    parts = [([f"k{i:03d}" for i in range(50)], [[i, "v"] for i in range(50)]),
             ([], []),
             (["only"], [1])]
    written = write_output(tmp_path, iter(parts))
    assert [os.path.basename(p) for p in written] == ["part-00000", "part-00001",
                                                      "part-00002"]
    assert sorted(os.listdir(tmp_path)) == ["_SUCCESS", "part-00000", "part-00001",
                                            "part-00002"]
    for path, (keys, values) in zip(written, parts):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert text == reference(keys, values)
        assert [json.loads(line) for line in text.splitlines()] == [
            [k, v] for k, v in zip(keys, values)]


def test_a_value_json_cannot_write_fails_as_before(tmp_path):
    class Loop(list):
        pass

    loop = Loop()
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        write_output(tmp_path, [(["k"], [loop])])
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate cannot be UTF-8
        write_output(tmp_path / "b", [(["\ud800"], [1])])
    assert not os.path.exists(tmp_path / "_SUCCESS")
