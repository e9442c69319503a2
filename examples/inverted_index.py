"""Inverted index (the MapReduce paper, section 2.3): for every word, the documents it
occurs in.

    python examples/inverted_index.py [FILES_OR_DIRS...]     # default: the sample documents
    pymapreduce run examples/inverted_index.py:InvertedIndex FILES_OR_DIRS

"The map function parses each document, and emits a sequence of <word, document ID>
pairs. The reduce function accepts all pairs for a given word, sorts the corresponding
document IDs and emits a <word, list(document ID)> pair."

A document's ID is its file's path: ``read_text(..., with_path=True)`` gives each line's
key as ``(path, offset)``, so ``map`` knows which document a line belongs to even where
one map task reads the end of one file and the start of the next.
"""

from __future__ import annotations

import re

from pymapreduce import Job, read_text

WORD = re.compile(r"\w+")


def words(line: str) -> set[str]:
    """The distinct words of a line, lower case (letters, digits and underscores)."""
    return set(WORD.findall(line.lower()))


class InvertedIndex(Job):
    """``(word, [paths of the documents holding it, sorted])``."""

    def read_inputs(self, paths, **options):
        """How ``pymapreduce run`` reads the files it is given: lines that know their file."""
        return read_text(paths, with_path=True, **options)

    def map(self, key, line):
        path, _offset = key
        for word in words(line):
            yield word, path

    def reduce(self, word, paths):
        return sorted(set(paths))


def direct_index(files: list[str]) -> dict[str, list[str]]:
    """The same index built in this process: the reference."""
    index: dict[str, set] = {}
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                for word in words(line):
                    index.setdefault(word, set()).add(path)
    return {word: sorted(paths) for word, paths in index.items()}


if __name__ == "__main__":
    import sys

    import sample_data

    from pymapreduce.cli_output import quiet_when_stdout_closes

    inputs = read_text(sys.argv[1:] or [sample_data.sample("docs")], with_path=True)
    index = InvertedIndex().run(inputs)
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for word, paths in sorted(index.items())[:30]:
            print(f"{word:12s} {len(paths):3d}  {', '.join(p.rsplit('/', 1)[-1] for p in paths)}")
        print(f"{len(index)} words", file=sys.stderr)
