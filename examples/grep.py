"""Distributed grep (the MapReduce paper, section 2.3): the lines that match a pattern,
each with the file and byte offset it came from.

    python examples/grep.py PATTERN [FILES_OR_DIRS...]      # default: the sample web logs
    pymapreduce run examples/grep.py:Grep FILES_OR_DIRS      # the default pattern, 404s
    pymapreduce run examples/grep.py:Grep -p pattern=POST FILES_OR_DIRS

"The map function emits a line if it matches a supplied pattern. The reduce function is
an identity function that just copies the supplied intermediate data to the output." A job
without ``reduce`` is map-only, which is that identity without a shuffle. ``read_text(...,
with_path=True)`` gives each line's key as ``(path, offset)``, so a match names its file.
"""

from __future__ import annotations

import re

from pymapreduce import Job, read_text

DEFAULT_PATTERN = r'" 404 '  # in a Common Log Format line: requests answered 404


class Grep(Job):
    """The lines matching ``pattern`` (a regular expression): ``((path, offset), line)``."""

    def __init__(self, pattern: str = DEFAULT_PATTERN) -> None:
        self.pattern = pattern

    def read_inputs(self, paths, **options):
        """How ``pymapreduce run`` reads the files it is given: lines that know their file."""
        return read_text(paths, with_path=True, **options)

    def map_init(self):
        self.regex = re.compile(self.pattern)  # once per task, not once per line

    def map(self, key, line):
        if self.regex.search(line):
            yield key, line


def direct_grep(pattern: str, files: list[str]) -> list[tuple[tuple[str, int], str]]:
    """The same matches found in this process, file by file: the reference."""
    regex = re.compile(pattern)
    found = []
    for path in files:
        offset = 0
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")
                if regex.search(line):
                    found.append(((path, offset), line))
                offset += len(raw)
    return found


if __name__ == "__main__":
    import sys

    import sample_data

    from pymapreduce.cli_output import quiet_when_stdout_closes

    pattern = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PATTERN
    inputs = read_text(sys.argv[2:] or [sample_data.sample("logs")], with_path=True)
    matches = Grep(pattern).run(inputs)
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for (path, offset), line in sorted(matches):
            print(f"{path}:{offset}: {line}")
        print(f"{len(matches)} matching lines", file=sys.stderr)
