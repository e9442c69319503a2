"""Word count from an S3-compatible server beside the same job from local files, and
part files written by the reducers beside the client writing them.

    python benchmarks/bench_store.py --mb 256 --workers 2 --repeat 3
    python benchmarks/bench_store.py --mb 16 --code /path/to/other/checkout  # old side

Starts moto's S3 server (``python -m moto.server -p0``, a real process on loopback),
uploads ``--mb`` MiB of text (``benchmarks/corpus.py``'s words, 8 files) and runs, on one
embedded cluster per run, in one process:

- ``local``: ``read_text(local files)``, the result fetched (no output_dir);
- ``s3``: ``read_text("s3://.../in/")``, the same result (the issue's bar: at most 1.3x);
- ``out-local``: local input, ``output_dir=`` a local directory, result kept (default);
- ``out-local-only``: the same with ``results=False`` (nothing comes home);
- ``out-s3-only``: ``output_dir="s3://..."``, ``results=False``.

Each result is checked against the local run. ``--code DIR`` runs the local cases with
the pymapreduce found in DIR instead (a checkout from before direct output: there the
client writes the part files), for a before/after in one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from procs import cpu_seconds  # (benchmarks/ is on the path: python benchmarks/...)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}

RUN = r'''
import json, sys, time
args = json.loads(sys.argv[1])
from pymapreduce import Job, read_text

class WordCount(Job):
    def map(self, key, line):
        for w in line.split():
            yield w, 1
    def combine(self, w, ones):
        return sum(ones)
    def reduce(self, w, ones):
        return sum(ones)

opts = {"storage_options": args["storage"]} if args["url"] else {}
kw = {}
if args["out"]:
    kw["output_dir"] = args["out"]
    if args["only"]:
        kw["results"] = False
    if args["out"].startswith("s3://"):
        kw["storage_options"] = args["storage"]
start = time.perf_counter()
result = WordCount().run(read_text(args["input"], **opts), workers=args["workers"], **kw)
secs = time.perf_counter() - start
total = sum(result.values()) if isinstance(result, dict) and "state" not in result else None
print(json.dumps({"secs": secs, "total": total, "distinct": len(result) if total else None}))
'''


def start_moto(tmp: str) -> tuple[subprocess.Popen, str]:
    log = os.path.join(tmp, "moto.log")
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p0"],
                                stdout=sink, stderr=sink, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        m = re.search(r"Running on (http://\S+)", open(log).read())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("moto's server did not start: " + open(log).read())
        time.sleep(0.05)


def make_corpus(folder: str, mb: int) -> list[str]:
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from corpus import build_corpus  # (the word-count benchmark's text)

    return build_corpus(folder, mb, files=8)


def run_case(code: str, spec: dict) -> dict:
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": code}
    proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(spec)], capture_output=True,
                          text=True, env=env, cwd=code, timeout=3600)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--code", default=ROOT, help="the pymapreduce checkout to measure")
    args = p.parse_args()
    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory() as tmp:
        moto, endpoint = start_moto(tmp)
        try:
            import s3fs

            storage = {"endpoint_url": endpoint}
            fs = s3fs.S3FileSystem(**storage)
            fs.mkdir("bench")
            paths = make_corpus(os.path.join(tmp, "in"), args.mb)
            for path in paths:
                fs.put_file(path, f"bench/in/{os.path.basename(path)}")
            local_in = os.path.join(tmp, "in")
            cases = [("local", local_in, None, False), ("out-local", local_in, "out", False),
                     ("out-local-only", local_in, "out", True)]
            if args.code == ROOT:  # (URLs and results=False: this checkout only)
                cases[1:1] = [("s3", "s3://bench/in/", None, False)]
                cases.append(("out-s3-only", local_in, "s3://bench/out", True))
            else:
                cases.pop()
            best: dict = {}
            server_cpu: dict = {}  # case -> moto's CPU seconds during its best run
            reference = None
            for _ in range(args.repeat):
                for name, inp, out, only in cases:
                    if out == "out":
                        out = os.path.join(tmp, f"out-{name}")
                    spec = {"input": inp, "url": inp.startswith("s3://"), "out": out,
                            "only": only, "storage": storage, "workers": args.workers}
                    cpu0 = cpu_seconds(moto.pid) or 0.0
                    got = run_case(args.code, spec)
                    # (the S3 server's share; its threads end with their requests, so
                    # /proc/PID/stat's totals, which keep ended threads' time)
                    server = (cpu_seconds(moto.pid) or 0.0) - cpu0
                    if got["total"] is not None:
                        reference = reference or got["total"]
                        assert got["total"] == reference, (name, got, reference)
                    if got["secs"] < best.get(name, 1e9):
                        best[name], server_cpu[name] = got["secs"], server
        finally:
            moto.terminate()
            moto.wait()
    base = best["local"]
    print(f"word count of {args.mb} MiB, {args.workers} workers, best of {args.repeat} "
          f"(code: {args.code})")
    for name, secs in best.items():
        print(f"  {name:15s} {secs:7.2f} s  {args.mb / secs:7.1f} MB/s  {secs / base:5.2f}x local"
              f"  (S3 server CPU {server_cpu.get(name, 0.0):5.2f} s)")


if __name__ == "__main__":
    main()
