"""Compressed data-plane frames: bytes saved and CPU spent, compressed against plain, in one run.

    python benchmarks/bench_compression.py                                 # full sizes
    python benchmarks/bench_compression.py --wc-mb 8 --records 200000      # a quick check

Two workloads on an embedded LocalCluster (2 workers by default), each run plain
(``PYMAPREDUCE_COMPRESSION=off`` for the client and the daemons: no codec is announced,
so nothing is compressed) and compressed (``=on``: zstd for frames where it pays, as a
broker listening beyond loopback does by default), alternately:

- word count of the benchmark corpus (``benchmarks/corpus.py``), combiner on; the
  result (one count per distinct word) comes back to the client;
- TeraSort's shape: N 100-byte records (``bench_terasort.py``'s input), sorted by a
  ``total_order`` job; every record crosses the network twice (map output to the broker,
  then to its reducer) and comes back to the client (``results()``, checked by count and
  order-free checksum).

For each run: the wall time, CPU seconds of the broker, of all worker processes and of
the client, and the bytes through the broker's sockets as its ``/metrics`` count them
(received on the data plane, received and sent on the control plane: inline outputs,
tasks' inputs, fetched results). First, a table of the codecs on one partition of each
workload (ratio and MB/s), which is how zstd level 1 was chosen: lz4 (if installed,
``pip install lz4``) is shown beside it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import time
import urllib.request
import zlib
from collections import Counter
from typing import Any

import common
from bench_terasort import KEY, PeakMemory, TeraSort, input_file
from common import MIB, log
from corpus import build_corpus
from jobs import WordCount

from pymapreduce import Client, LocalCluster, read_text
from pymapreduce.patterns import compress as C
from pymapreduce.patterns.records import pack

MODES = ("plain", "zstd")
METRIC = re.compile(r'^(pymapreduce_(?:received|sent)_bytes)(?:_total)?\{plane="(\w+)"\} (\S+)$')


# -- the codecs on one partition ------------------------------------------------------------

def sample_partitions(files: list[str], sort_path: str) -> dict[str, bytes]:
    """One encoded partition of each workload, as a map task would push it."""
    with open(files[0], encoding="utf-8", errors="replace") as f:
        words = Counter(f.read(8 * MIB).split())
    with open(sort_path, encoding="ascii") as f:
        lines = [ln.rstrip("\n") for _, ln in zip(range(100_000), f)]
    return {"word count": pack([list(words), [[c] for c in words.values()]]),
            "sort": pack([[ln[:KEY] for ln in lines], [ln[KEY:] for ln in lines]])}


def codec_table(samples: dict[str, bytes]) -> None:
    import zstandard

    codecs: list[tuple[str, Any, Any]] = []
    for level in (-1, 1, 3):
        c = zstandard.ZstdCompressor(level=level, write_checksum=True)
        d = zstandard.ZstdDecompressor()
        codecs.append((f"zstd {level}", c.compress,
                       lambda b, n, d=d: d.decompress(b, max_output_size=n)))
    try:
        import lz4.block

        codecs.append(("lz4", lambda b: lz4.block.compress(b, store_size=False),
                       lambda b, n: lz4.block.decompress(b, uncompressed_size=n)))
    except ImportError:
        log("lz4 is not installed (pip install lz4): left out of the codec table")
    rows = []
    for name, blob in samples.items():
        for codec, comp, decomp in codecs:
            out, c_secs = best_of(lambda comp=comp, blob=blob: comp(blob))
            _, d_secs = best_of(lambda d=decomp, out=out, n=len(blob): d(out, n))
            rows.append([name, codec, f"{len(blob) / MIB:.1f}", f"{len(blob) / len(out):.2f}",
                         f"{len(blob) / c_secs / 1e6:.0f}", f"{len(blob) / d_secs / 1e6:.0f}"])
    common.print_table(["partition", "codec", "MiB", "ratio", "compress MB/s",
                        "decompress MB/s"], rows)


def best_of(fn: Any, n: int = 3) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


# -- the cluster runs -----------------------------------------------------------------------

def traffic(url: str) -> dict[str, int]:
    """Bytes through the broker's sockets, from its /metrics."""
    with urllib.request.urlopen(url.split("?")[0].rstrip("/") + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            out[f"{m.group(1).split('_')[1]} {m.group(2)}"] = int(float(m.group(3)))
    return out


def run(mode: str, workload: str, inputs: Any, workers: int) -> dict[str, Any]:
    """One job on a fresh cluster, with compression as ``mode`` says."""
    # (the daemons inherit it; the client reads it at submit; "on": the embedded broker
    # listens on loopback, where its default, auto, would not compress)
    os.environ[C.ENV] = "off" if mode == "plain" else "on"
    before = resource.getrusage(resource.RUSAGE_SELF)
    cluster = LocalCluster(workers=workers, http=True).start()
    try:
        memory = PeakMemory().watch(cluster.broker_pid, cluster.worker_pid)
        with Client(cluster.address) as client:
            t0 = time.perf_counter()
            if workload == "word count":
                result = client.submit(WordCount(), read_text(inputs)).result()
                check: Any = (len(result), sum(result.values()))
            else:
                handle = client.submit(TeraSort(), read_text(inputs), reducers=workers)
                n = crc = 0
                last = ""
                ordered = True
                for key, value in handle.results():
                    n += 1
                    crc += zlib.crc32((key + value).encode())
                    ordered = ordered and key >= last
                    last = key
                check = (n, crc, ordered)
            seconds = time.perf_counter() - t0
        memory.stop()
        sent = traffic(cluster.http_url)
    finally:
        cluster.close()
        os.environ.pop(C.ENV, None)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = memory.cpu_by_role()
    cpu["client"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"seconds": seconds, "cpu": cpu, "bytes": sent, "check": check}


def report(workload: str, results: dict[str, list[dict]]) -> list[list[Any]]:
    rows = []
    base = None
    for mode in MODES:
        best = min(results[mode], key=lambda r: r["seconds"])
        b = best["bytes"]
        total = sum(b.values())
        base = base or total
        cpu = best["cpu"]
        rows.append([workload, mode, f"{best['seconds']:.2f}", f"{cpu.get('broker', 0):.1f}",
                     f"{cpu.get('worker', 0):.1f}", f"{cpu.get('client', 0):.1f}",
                     f"{b.get('received data', 0) / MIB:.1f}",
                     f"{b.get('received control', 0) / MIB:.1f}",
                     f"{b.get('sent control', 0) / MIB:.1f}", f"{total / MIB:.1f}",
                     f"{100 * (1 - total / base):.0f}%"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wc-mb", type=int, default=256, help="word count corpus, MiB (256)")
    ap.add_argument("--records", type=int, default=2_000_000,
                    help="100-byte records to sort (2,000,000: 200 MB)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per mode; the best is shown")
    ap.add_argument("--corpus-root", default=common.DEFAULT_CORPUS_ROOT)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    info = common.print_machine(f"compression: word count {args.wc_mb} MiB, sort "
                                f"{args.records:,} records, {args.workers} workers")
    files = build_corpus(common.corpus_dir(args.wc_mb, args.corpus_root), args.wc_mb)
    sort_path = input_file(args.records, 1, args.corpus_root)
    codec_table(sample_partitions(files, sort_path))
    print()
    rows, figures = [], {}
    for workload, inputs in (("word count", files), ("sort", sort_path)):
        results: dict[str, list[dict]] = {m: [] for m in MODES}
        for i in range(args.repeat):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:  # alternately: no mode warms
                log(f"{workload}, {mode} ({i + 1}/{args.repeat}) ...")
                results[mode].append(run(mode, workload, inputs, args.workers))
        checks = {r["check"] for rs in results.values() for r in rs}
        if len(checks) != 1 or (workload == "sort" and not all(c[2] for c in checks)):
            raise SystemExit(f"{workload}: the runs disagree or are not sorted: {checks}")
        rows += report(workload, results)
        figures[workload] = results
    print()
    common.print_table(["workload", "frames", "seconds", "cpu broker", "cpu workers",
                        "cpu client", "MiB data in", "MiB ctl in", "MiB ctl out",
                        "MiB total", "saved"], rows)
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
