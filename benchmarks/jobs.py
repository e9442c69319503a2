"""The jobs the benchmarks run, on pymapreduce and (through the same methods) on the baselines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymapreduce import Job


class WordCount(Job):
    """Count whitespace-separated words."""

    def map(self, key: Any, value: str) -> Iterable[tuple[str, int]]:
        for w in value.split():
            yield w, 1

    def combine(self, key: str, values: list[int]) -> int:
        return sum(values)

    def reduce(self, key: str, values: list[int]) -> int:
        return sum(values)


class NoOp(Job):
    """A map that emits nothing: measures the per-task cost of the engine itself."""

    def map(self, key: Any, value: Any) -> Iterable[tuple[Any, Any]]:
        return ()


class OnePair(Job):
    """A map that emits its record as it came: one pair per task, the per-task cost with an
    output to store and bring home (as a ``multiprocessing.Pool`` task returns its value)."""

    def map(self, key: Any, value: Any) -> Iterable[tuple[Any, Any]]:
        yield key, value


class CharCount(Job):
    """The seed's CountCharacters: count every character of every value."""

    def map(self, key: Any, value: str) -> Iterable[tuple[str, int]]:
        for char in value:
            yield char, 1

    def reduce(self, key: str, values: list[int]) -> int:
        return sum(values)


class CharCountCombined(CharCount):
    """CharCount with a combiner: each map task's output is a few hundred keys."""

    def combine(self, key: str, values: list[int]) -> int:
        return sum(values)
