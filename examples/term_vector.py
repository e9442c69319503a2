"""Term-vector per host (the MapReduce paper, section 2.3): the most important words of
each host's pages, as ``(word, frequency)`` pairs.

    python examples/term_vector.py [SITE_DIRS...]     # default: the sample crawl
    pymapreduce run examples/term_vector.py:TermVector SITE_DIR

"The map function emits a <hostname, term vector> pair for each input document (where the
hostname is extracted from the URL of the document). The reduce function is passed all
per-document term vectors for a given host. It adds these term vectors together, throwing
away infrequent terms, and then emits a final <hostname, term vector> pair."

Each page is read whole (``read_files``) from a crawl stored one directory per host
(``SITE/HOST/PAGE.html``); a document's term vector is a ``Counter`` of its words (tags and
stop words left out), which travels between processes as it is. The combiner adds the
vectors of one map task's pages of a host before they leave the worker.
"""

from __future__ import annotations

import os
import re
from collections import Counter

from pymapreduce import Job, read_files

TAG = re.compile(r"<[^>]*>")
WORD = re.compile(r"[a-z]+")
STOP_WORDS = frozenset("the of and to in a is for on with as by at from".split())
MIN_COUNT = 10  # terms seen fewer times on a host are thrown away


def host_of(path: str) -> str:
    """The host a crawled page came from: its directory's name (``SITE/HOST/PAGE``)."""
    return os.path.basename(os.path.dirname(path))


def term_vector(html: bytes) -> Counter:
    """The words of a page's text (not its tags), lower case, stop words left out."""
    text = TAG.sub(" ", html.decode("utf-8", "replace")).lower()
    return Counter(w for w in WORD.findall(text) if w not in STOP_WORDS)


def important(total: Counter, min_count: int) -> list[tuple[str, int]]:
    """The terms seen at least ``min_count`` times, most frequent first."""
    return sorted(((w, n) for w, n in total.items() if n >= min_count),
                  key=lambda wn: (-wn[1], wn[0]))


class TermVector(Job):
    """``(host, [(word, frequency), ...])``, most frequent first, infrequent terms dropped."""

    def __init__(self, min_count: int = MIN_COUNT) -> None:
        self.min_count = min_count

    def read_inputs(self, paths, **options):
        """How ``pymapreduce run`` reads the files it is given: each page whole."""
        return read_files(paths, split_bytes=options.get("split_bytes"))

    def map(self, path, html):
        yield host_of(path), term_vector(html)

    def combine(self, host, vectors):
        total = Counter()
        for vector in vectors:
            total.update(vector)
        return total

    def reduce(self, host, vectors):
        return important(self.combine(host, vectors), self.min_count)


def direct_term_vectors(files: list[str], min_count: int = MIN_COUNT) -> dict[str, list]:
    """The same vectors computed in this process: the reference."""
    totals: dict[str, Counter] = {}
    for path in files:
        with open(path, "rb") as f:
            totals.setdefault(host_of(path), Counter()).update(term_vector(f.read()))
    return {host: important(total, min_count) for host, total in totals.items()}


if __name__ == "__main__":
    import sys

    import sample_data

    from pymapreduce.cli_output import quiet_when_stdout_closes

    vectors = TermVector().run(read_files(sys.argv[1:] or [sample_data.sample("site")]))
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for host, vector in sorted(vectors.items()):
            print(f"{host}: " + ", ".join(f"{w} {n}" for w, n in vector[:8]))
