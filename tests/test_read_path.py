"""The read path (lines.py): whatever the block size and split points, every line is read
once, with its byte offset in its file, without its newline or a trailing carriage return,
invalid bytes replaced; checked against a direct reading of the same bytes."""

from __future__ import annotations

import random

import pytest

from pymapreduce import lines
from pymapreduce.lines import read_split

PIECES = [b"a", b"bc", b" ", b"\n", b"\n", b"\r\n", b"\r", "é".encode(), "€".encode(),
          b"\xff", b"\xc3"]


def direct(path: str, data: bytes) -> list:
    """(offset, line) for each line of the bytes, the slow and obvious way."""
    out, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line = data[start:end].decode("utf-8", "replace")
        out.append(((path, start), line[:-1] if line.endswith("\r") else line))
        start = end + 1
    return out


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_records_are_every_line_once_with_its_byte_offset(tmp_path, monkeypatch, block):
    monkeypatch.setattr(lines, "READ_BLOCK", block)
    rng = random.Random(block)
    for trial in range(200):
        files, expected, ranges = [], [], []
        for f in range(rng.randint(1, 3)):
            data = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 120)))
            path = tmp_path / f"t{trial}-{f}.txt"
            path.write_bytes(data)
            files.append(str(path))
            expected += direct(str(path), data)
            cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
            bounds = [0, *cuts, len(data)]
            ranges += [(str(path), a, b) for a, b in zip(bounds, bounds[1:]) if a < b]
        got = list(read_split(ranges, with_path=True))
        assert got == expected
        plain = list(read_split(ranges))
        assert plain == [(offset, line) for (_, offset), line in expected]
