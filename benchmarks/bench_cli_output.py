"""How fast ``pymapreduce run ... > file`` writes a large output.

    python benchmarks/bench_cli_output.py --pairs 1000000 --workers 2

Three figures, on one machine in one run:

- *print kernel*: the pairs printed as JSON lines into a file in this process, the way
  ``pymapreduce run`` printed them before (``print(json.dumps(pair))`` per pair) and the
  way it prints them now (``cli_output.print_pairs``: one encoder, batched writes);
- *end to end*: ``pymapreduce run job.py:Count FILE --workers N > out`` on a file of
  ``--pairs`` distinct words (one output pair per line), wall time and the client's peak
  RSS (streamed: it does not grow with the output), and the output checked complete.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pymapreduce.cli_output import print_pairs  # noqa: E402

JOB = '''
from pymapreduce import Job


class Count(Job):
    def map(self, key, line):
        yield line, 1

    def reduce(self, key, values):
        return sum(values)
'''


def old_print(pairs, out) -> None:
    """What ``pymapreduce run`` did per pair before (without its 10,000-pair cap)."""
    for k, v in pairs:
        print(json.dumps([k, v], ensure_ascii=False, default=repr), file=out)


def kernel(n: int, tmp: str) -> dict:
    pairs = [(f"w{i}", i) for i in range(n)]
    out = {}
    for name, fn in (("old", old_print),
                     ("new", lambda p, f: print_pairs(p, out=f, err=sys.stderr))):
        path = os.path.join(tmp, f"kernel-{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            start = time.perf_counter()
            fn(pairs, f)
            f.flush()
            out[name] = time.perf_counter() - start
    return out


def end_to_end(n: int, workers: int, tmp: str) -> dict:
    data = os.path.join(tmp, "words.txt")
    with open(data, "w") as f:
        f.writelines(f"w{i}\n" for i in range(n))
    job = os.path.join(tmp, "countjob.py")
    with open(job, "w") as f:
        f.write(JOB)
    out = os.path.join(tmp, "out.jsonl")
    env = {**os.environ, "PYTHONPATH": ROOT}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    with open(out, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "pymapreduce", "run", f"{job}:Count",
                               data, "--workers", str(workers)], stdout=f,
                              stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    with open(out) as f:
        lines = sum(1 for _ in f)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": wall, "lines": lines, "complete": lines == n,
            "peak_rss_mib": max(peak, before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        k = kernel(args.pairs, tmp)
        e = end_to_end(args.pairs, args.workers, tmp)
    n = args.pairs
    print(f"print kernel, {n} pairs into a file: before {k['old']:.2f}s "
          f"({n / k['old'] / 1e3:.0f}k pairs/s), now {k['new']:.2f}s "
          f"({n / k['new'] / 1e3:.0f}k pairs/s): {k['old'] / k['new']:.2f}x")
    print(f"pymapreduce run > file, {n} pairs, {args.workers} workers: {e['wall_s']:.2f}s "
          f"wall, {e['lines']} lines ({'complete' if e['complete'] else 'INCOMPLETE'}), "
          f"peak RSS of a child process {e['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
