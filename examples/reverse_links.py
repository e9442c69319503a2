"""Reverse web-link graph (the MapReduce paper, section 2.3): for every URL, the pages
that link to it.

    python examples/reverse_links.py [SITE_DIRS...]     # default: the sample crawl
    pymapreduce run examples/reverse_links.py:ReverseLinks SITE_DIR

"The map function outputs <target, source> pairs for each link to a target URL found in
a page named source. The reduce function concatenates the list of all source URLs
associated with a given target URL and emits the pair: <target, list(source)>."

The pages are a crawl stored one directory per host (``SITE/HOST/PAGE.html``, as
``wget --mirror`` leaves them), so a page's URL is ``http://HOST/PAGE.html``. Each page is
read whole with ``read_files`` (an ``<a ...>`` tag may span lines), and relative links
are resolved against the page's URL.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urljoin

from pymapreduce import Job, read_files

HREF = re.compile(rb"""<a\s[^>]*?href\s*=\s*["']([^"'#]+)""", re.IGNORECASE)


def url_of(path: str) -> str:
    """The URL a crawled page was fetched from: ``SITE/HOST/PAGE`` -> ``http://HOST/PAGE``."""
    host = os.path.basename(os.path.dirname(path))
    return f"http://{host}/{os.path.basename(path)}"


def links(source: str, html: bytes) -> list[str]:
    """The absolute URLs a page links to, in order (repeats kept)."""
    return [urljoin(source, href.decode("utf-8", "replace").strip())
            for href in HREF.findall(html)]


class ReverseLinks(Job):
    """``(target url, [source urls, sorted])`` for every URL some page links to."""

    def read_inputs(self, paths, **options):
        """How ``pymapreduce run`` reads the files it is given: each page whole."""
        return read_files(paths, split_bytes=options.get("split_bytes"))

    def map(self, path, html):
        source = url_of(path)
        for target in links(source, html):
            yield target, source

    def reduce(self, target, sources):
        return sorted(set(sources))


def direct_reverse_links(files: list[str]) -> dict[str, list[str]]:
    """The same graph built in this process: the reference."""
    graph: dict[str, set] = {}
    for path in files:
        with open(path, "rb") as f:
            html = f.read()
        source = url_of(path)
        for target in links(source, html):
            graph.setdefault(target, set()).add(source)
    return {target: sorted(sources) for target, sources in graph.items()}


if __name__ == "__main__":
    import sys

    import sample_data

    from pymapreduce.cli_output import quiet_when_stdout_closes

    graph = ReverseLinks().run(read_files(sys.argv[1:] or [sample_data.sample("site")]))
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for target, sources in sorted(graph.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:15]:
            print(f"{len(sources):4d}  {target}  <-  {', '.join(sources[:3])}"
                  + (" ..." if len(sources) > 3 else ""))
        print(f"{len(graph)} linked URLs", file=sys.stderr)
