"""Jobs used by the tests (importable by the worker processes, which run from the repo root)."""

from __future__ import annotations

import os

from pymapreduce import Job


def note(path, *words) -> None:
    """Append one line to a file: how test jobs record, from the workers, what ran where."""
    with open(path, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\n")


class WordCount(Job):
    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


class NoOp(Job):
    """A map that yields nothing: many tasks, each costing the engine alone."""

    def map(self, key, value):
        return ()


class WordCountCombined(WordCount):
    def combine(self, word, counts):
        return sum(counts)


class InMapper(Job):
    """In-mapper combining: a Counter per task, its items yielded by map_final."""

    def map_init(self):
        from collections import Counter

        self.counts = Counter()

    def map(self, key, line):
        self.counts.update(line.split())

    def map_final(self):
        return self.counts.items()

    def reduce(self, word, counts):
        return sum(counts)


class Lengths(Job):
    """Map-only: the length of every line."""

    def map(self, key, line):
        yield key, len(line)


def read_lines(paths):
    """The records a text input yields, read here in one process: the reference."""
    from pymapreduce.inputs import read_file_split

    for path in paths:
        yield from read_file_split(path, 0, os.path.getsize(path))
