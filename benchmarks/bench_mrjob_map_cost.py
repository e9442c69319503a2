"""An mrjob text step's map task in instructions: the adapter's per-line cost over the
job's own ``mapper``, under valgrind's cachegrind.

    python benchmarks/bench_mrjob_map_cost.py                                # this tree
    python benchmarks/bench_mrjob_map_cost.py --trees /tmp/before,.          # before/after
    python benchmarks/bench_mrjob_map_cost.py --job mrjob.examples.mr_word_freq_count:MRWordFreqCount

A map task of an mrjob job on pymapreduce is the engine's record loop
(``kernels.map_grouped`` over the line reader) calling the adapter's ``map``, which calls
the job's ``mapper`` per line (``adapters/mrjob/steps.py``). Run here in one process, no
cluster: ``map_init``, the loop over one file's lines, ``map_final``. Beside it, the floor:
the job's ``mapper`` (its first step's) called on each decoded line in a plain loop, its
output dropped: what any runner must pay before it encodes, combines and sorts anything. Instructions rather than seconds: this machine's CPU time per task moves by 2x
with the host's load; cachegrind's count is the same run to run. Each case runs one and
two rounds over the file, and the difference is one round's count, net of imports and
start-up. Needs valgrind (``apt-get install valgrind``) and mrjob.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys

import common
from corpus import build_corpus


def _job_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def child(tree: str, case: str, spec: str, path: str, rounds: int) -> None:
    """Inside valgrind: ``rounds`` map tasks (case "adapter") or plain loops ("mapper")."""
    if case == "mapper":
        cls = _job_class(spec)
        for _ in range(rounds):
            job = cls([path])
            mapper = job.steps()[0]["mapper"]  # (the first step's: a job of several steps)
            with open(path, "rb") as f:
                for raw in f:
                    out = mapper(None, raw.rstrip(b"\r\n").decode("utf-8", "replace"))
                    if out:
                        for _pair in out:
                            pass
        return
    common.import_tree(tree)
    from pymapreduce.adapters.mrjob import as_job, prepare
    from pymapreduce.kernels import map_grouped
    from pymapreduce.lines import read_split

    _, plan, _ = prepare(_job_class(spec), [path])
    for _ in range(rounds):
        records = read_split([(path, 0, os.path.getsize(path))], "latin-1", with_path=True)
        job = as_job(plan)
        steps = job.steps()  # (a Job's steps: None for one step)
        if steps:  # (several steps: the first one's map task)
            job = steps[0]
        map_grouped(job, records)


def count(tree: str, case: str, spec: str, path: str, rounds: int) -> int:
    return common.cachegrind_instructions([os.path.abspath(__file__), "--child", tree, case,
                                           spec, path, str(rounds)])


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=common.REPO_ROOT,
                    help="source trees to compare, comma-separated (default: this one)")
    ap.add_argument("--job", default="mrjob.examples.mr_wc:MRWordCountUtility",
                    help="module:Class of an mrjob job reading text (default: mr_wc)")
    ap.add_argument("--kib", type=int, default=2048, help="input size in KiB (default 2048)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        ap.error("needs valgrind on the PATH (apt-get install valgrind)")
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    info = common.print_machine(f"an mrjob map task in instructions (cachegrind), {args.job}, "
                                f"{args.kib} KiB of text")
    corpus = build_corpus(common.corpus_dir(8), 8)[0]
    path = os.path.join(common.corpus_dir(8), f"head-{args.kib}k.txt")
    with open(corpus, "rb") as src, open(path, "wb") as dst:
        data = src.read(args.kib * 1024)
        dst.write(data[:data.rfind(b"\n") + 1])  # whole lines
    figures = {}
    floor = count(trees[0], "mapper", args.job, path, 2) - count(
        trees[0], "mapper", args.job, path, 1)
    rows = []
    for tree in trees:
        one = count(tree, "adapter", args.job, path, 1)
        per = count(tree, "adapter", args.job, path, 2) - one
        figures[tree] = per
        rows.append([tree, per, f"{100 * (per / floor - 1):+.1f}%"])
        common.log(f"{tree}: {per:,} instructions per map task")
    rows.append(["(the job's mapper in a plain loop)", floor, ""])
    common.print_table(["tree", "instructions per map task", "over the mapper alone"], rows)
    common.write_json(args.json, {"machine": info, "args": vars(args), "figures": figures,
                                  "mapper_alone": floor})
    return 0


if __name__ == "__main__":
    sys.exit(main())
