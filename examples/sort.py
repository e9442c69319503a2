"""Distributed sort (the MapReduce paper, section 2.3): records in the order of their keys.

    python examples/sort.py [FILES_OR_DIRS...]      # default: the sample records
    pymapreduce run examples/sort.py:Sort FILES_OR_DIRS --output sorted/

"The map function extracts the key from each record, and emits a <key, record> pair. The
reduce function emits all pairs unchanged." Records are lines ``KEY<TAB>payload``.

With ``total_order = True`` the job samples its inputs and cuts the key space into ranges,
one per reducer (the paper's "partitioning function"), so the result and the part files
come out in one global key order whatever the number of reducers.
"""

from __future__ import annotations

from pymapreduce import Job, read_text


class Sort(Job):
    """``(key, record)`` for every record, in key order (records of one key in input order)."""

    total_order = True  # one key order across all reducers (sampled key ranges)

    def map(self, offset, record):
        key, _, _ = record.partition("\t")
        yield key, record

    def reduce(self, key, records):
        for record in records:
            yield key, record


def direct_sort(files: list[str]) -> list[tuple[str, str]]:
    """The same records sorted in this process: the reference (a stable sort by key)."""
    records = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            records.extend(line.rstrip("\n").removesuffix("\r") for line in f)
    return sorted(((r.partition("\t")[0], r) for r in records), key=lambda kr: kr[0])


if __name__ == "__main__":
    import sys

    import sample_data

    from pymapreduce.cli_output import quiet_when_stdout_closes

    pairs = Sort().run(read_text(sys.argv[1:] or [sample_data.sample("records")]))
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for _, record in pairs[:10]:
            print(record)
        print(f"... {len(pairs)} records, in key order: "
              f"{all(a[0] <= b[0] for a, b in zip(pairs, pairs[1:]))}", file=sys.stderr)
