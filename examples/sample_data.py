"""Small, deterministic inputs for the MapReduce paper's examples.

    python examples/sample_data.py DIR        # writes DIR/logs, DIR/site, DIR/docs, DIR/records

- ``logs/access-N.log``: web server request logs in the Common Log Format
  (``host - - [date] "GET /path HTTP/1.1" status bytes``), a few malformed lines among them;
- ``site/HOST/PAGE.html``: crawled web pages, stored as a mirror does (one directory per
  host), each with a title, paragraphs of words and ``<a href>`` links to pages of the same
  host (relative) and of other hosts (absolute);
- ``docs/*.txt``: plain text documents;
- ``records/part-N.txt``: ``KEY<TAB>payload`` records to sort.

The same seed gives the same bytes on every machine (``random.Random(seed)`` only).
"""

from __future__ import annotations

import os
import random

HOSTS = ["www.example.com", "blog.example.org", "shop.example.net", "news.example.io"]
# A small vocabulary drawn with skewed weights, so some words are frequent and many rare
# (term vectors then have something to throw away).
WORDS = ("map reduce key value worker master task split shuffle sort merge combine "
         "partition record input output file line word count index link page host "
         "cluster machine disk network failure retry backup straggler locality the of and "
         "to in a is for on with as by at from data large simple program parallel").split()
STATUSES = [200] * 12 + [304, 404, 404, 500]
MONTHS = ["Nov"]


def _words(rng: random.Random, n: int) -> list[str]:
    weights = [1 / (i + 1) for i in range(len(WORDS))]
    return rng.choices(WORDS, weights, k=n)


def page_url(host: str, page: int) -> str:
    """The URL of a generated page."""
    return f"http://{host}/p{page}.html"


def write_logs(root: str, files: int = 3, lines: int = 2000, seed: int = 1) -> list[str]:
    """Request logs: mostly well-formed Common Log Format lines, about 1% malformed."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    paths = []
    for f in range(files):
        out = []
        for i in range(lines):
            if rng.random() < 0.01:
                out.append("-- log rotated --" if i % 2 else "")
                continue
            client = f"10.0.{rng.randrange(8)}.{rng.randrange(1, 255)}"
            page = int(rng.paretovariate(1.2)) % 40
            path = rng.choice(["/", f"/p{page}.html", f"/img/{page % 7}.png",
                               f"/search?q={rng.choice(WORDS)}"])
            method = "POST" if rng.random() < 0.05 else "GET"
            status = rng.choice(STATUSES)
            stamp = (f"{1 + (i // 600) % 28:02d}/{MONTHS[0]}/2026:{(i // 60) % 24:02d}:"
                     f"{i % 60:02d}:{rng.randrange(60):02d} +0000")
            out.append(f'{client} - - [{stamp}] "{method} {path} HTTP/1.1" {status} '
                       f"{rng.randrange(200, 90000)}")
        path = os.path.join(root, f"access-{f}.log")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")
        paths.append(path)
    return paths


def write_site(root: str, pages_per_host: int = 25, seed: int = 2) -> list[str]:
    """Crawled pages under ``root/HOST/pN.html``; some links are repeated, some point to
    pages that were not crawled (a reverse link graph has them as targets only)."""
    rng = random.Random(seed)
    paths = []
    for host in HOSTS:
        os.makedirs(os.path.join(root, host), exist_ok=True)
        for page in range(pages_per_host):
            links = []
            for _ in range(rng.randint(0, 6)):
                if rng.random() < 0.6:
                    links.append(f"/p{rng.randrange(pages_per_host + 3)}.html")
                else:
                    links.append(page_url(rng.choice(HOSTS), rng.randrange(pages_per_host)))
            body = []
            for _ in range(rng.randint(1, 4)):
                words = _words(rng, rng.randint(20, 80))
                if links:  # a link inside the text, sometimes across a line break
                    href = links.pop()
                    words.insert(rng.randrange(len(words)),
                                 f'<a class="x"\n href="{href}">{rng.choice(WORDS)}</a>')
                body.append("<p>" + " ".join(words) + "</p>")
            body.extend(f'<a href="{href}">more</a>' for href in links)
            html = (f"<html><head><title>Page {page} of {host}</title></head>\n<body>\n"
                    + "\n".join(body) + "\n</body></html>\n")
            path = os.path.join(root, host, f"p{page}.html")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(html)
            paths.append(path)
    return paths


def write_docs(root: str, docs: int = 12, seed: int = 3) -> list[str]:
    """Plain text documents of a few lines each; one is not ASCII, one has CRLF lines."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    paths = []
    for d in range(docs):
        lines = [" ".join(_words(rng, rng.randint(3, 15))).capitalize() + "."
                 for _ in range(rng.randint(2, 30))]
        if d == 1:
            lines.append("Données réparties: the café's naïve index.")
        path = os.path.join(root, f"doc-{d:02d}.txt")
        with open(path, "w", encoding="utf-8", newline="\r\n" if d == 2 else "\n") as fh:
            fh.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def write_records(root: str, files: int = 3, records: int = 3000, seed: int = 4) -> list[str]:
    """``KEY<TAB>payload`` lines, keys 10 random letters (a few repeated)."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    paths = []
    for f in range(files):
        lines = []
        for i in range(records):
            key = "".join(rng.choices(letters, k=10)) if i % 50 else "duplicate!"
            lines.append(f"{key}\t{f}-{i} {' '.join(_words(rng, 4))}")
        path = os.path.join(root, f"part-{f}.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def write_all(root: str) -> dict[str, str]:
    """Every sample input under ``root``; returns the directory of each kind."""
    dirs = {kind: os.path.join(root, kind) for kind in ("logs", "site", "docs", "records")}
    write_logs(dirs["logs"])
    write_site(dirs["site"])
    write_docs(dirs["docs"])
    write_records(dirs["records"])
    return dirs


def sample(kind: str) -> str:
    """The directory of one kind of sample input, written under the system's temporary
    directory if it is not there yet (what an example runs on when given no inputs)."""
    import tempfile

    root = os.path.join(tempfile.gettempdir(), "pymapreduce-samples")
    if not os.path.isdir(os.path.join(root, kind)):
        write_all(root)
    return os.path.join(root, kind)


if __name__ == "__main__":
    import sys

    from pymapreduce.cli_output import quiet_when_stdout_closes

    if len(sys.argv) != 2:
        sys.exit("usage: python examples/sample_data.py DIR")
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for kind, path in write_all(sys.argv[1]).items():
            print(f"{kind:8s} {path}")
