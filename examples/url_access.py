"""Count of URL access frequency (the MapReduce paper, section 2.3): how many times each
URL was requested, from web server logs.

    python examples/url_access.py [LOG_FILES_OR_DIRS...]     # default: the sample logs
    pymapreduce run examples/url_access.py:UrlAccessCount LOG_FILES_OR_DIRS

"The map function processes logs of web page requests and outputs <URL, 1>. The reduce
function adds together all values for the same URL and emits a <URL, total count> pair."
Lines in the Common Log Format; a line that is not one is counted (``malformed lines`` in
the job's counters) and skipped.
"""

from __future__ import annotations

import re

from pymapreduce import Job, read_text

# host ident user [date] "METHOD URL PROTOCOL" status bytes
REQUEST = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(?:[A-Z]+) (\S+)[^"]*" \d{3} ')


class UrlAccessCount(Job):
    """``(url, number of requests)`` for every URL in the logs."""

    def map(self, offset, line):
        match = REQUEST.match(line)
        if match is None:
            self.count("malformed lines")
            return
        yield match.group(1), 1

    def combine(self, url, counts):
        return sum(counts)

    def reduce(self, url, counts):
        return sum(counts)


def direct_counts(files: list[str]) -> dict[str, int]:
    """The same counts computed in this process: the reference."""
    from collections import Counter

    counts: Counter = Counter()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                match = REQUEST.match(line)
                if match:
                    counts[match.group(1)] += 1
    return dict(counts)


if __name__ == "__main__":
    import sys

    import sample_data

    from pymapreduce.cli_output import quiet_when_stdout_closes

    counts = UrlAccessCount().run(read_text(sys.argv[1:] or [sample_data.sample("logs")]))
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for url, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]:
            print(f"{n:8d}  {url}")
        print(f"{len(counts)} distinct URLs", file=sys.stderr)
