"""The C sort of str keys (``speedups.sort_strs``, ``str_order``) against Python's own,
on the shapes that make a prefix sort work hardest and on the ones a job meets.

    python benchmarks/bench_sort_strs.py
    python benchmarks/bench_sort_strs.py --scale 0.2     # smaller lists, quicker

Each shape is a list of str keys; ``sort_strs(keys)`` is timed against ``sorted(keys)``
and ``str_order(keys)`` against ``sorted(range(len(keys)), key=keys.__getitem__)``, in
this process, the best of ``--repeat`` runs each, the collector off; every result is
checked equal to Python's. A ratio below 1 is the C sort taking less time. The shapes:
a reduce task's words, TeraSort's keys, keys sharing long beginnings (sorted, shuffled,
reversed with one repeat), equal keys, NUL runs, non-Latin words, sorted runs.
"""

from __future__ import annotations

import argparse
import gc
import random
import time

import common

from pymapreduce import speedups

LETTERS = "abcdefghijklmnopqrstuvwxyz"
PRINTABLE = [chr(c) for c in range(32, 127)]
CYRILLIC = [chr(c) for c in range(0x430, 0x450)]


def shapes(scale: float, rnd: random.Random) -> dict[str, list[str]]:
    """The lists to sort, by name."""
    n = max(100, int(200_000 * scale))
    words = ["".join(rnd.choice(LETTERS) for _ in range(rnd.randrange(3, 12)))
             for _ in range(n)]
    long = ["x" * 256 + "".join(rnd.choice(LETTERS) for _ in range(8)) for _ in range(n)]
    reversed_long = sorted(long, reverse=True)
    reversed_long.insert(n // 2, reversed_long[n // 2])  # (one repeat: not strictly down)
    cyrillic = ["".join(rnd.choice(CYRILLIC) for _ in range(rnd.randrange(3, 12)))
                for _ in range(n)]
    urls = ["http://www.example.com/path/" + "".join(rnd.choice(LETTERS) for _ in range(10))
            for _ in range(n)]
    return {
        "words, random": words,
        "words, sorted": sorted(words),
        "TeraSort keys, random": ["".join(rnd.choices(PRINTABLE, k=10)) for _ in range(n)],
        "Cyrillic words, random": cyrillic,
        "Cyrillic words, reversed": sorted(cyrillic, reverse=True),
        "256 x then 8 letters, random": long,
        "256 x then 8 letters, sorted": sorted(long),
        "256 x then 8 letters, reversed, one repeat": reversed_long,
        "equal 300-character keys (each its own object)": ["".join(["q"] * 300)
                                                             for _ in range(n)],
        "NUL runs of random lengths": ["\0" * rnd.randrange(300) for _ in range(n)],
        "URLs in 8 sorted runs": [u for i in range(8) for u in sorted(urls[i::8])],
    }


def best(fn, repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - start)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="list sizes (1: 200,000 keys)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (best taken)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if not speedups.built():
        print("the C extension is not built here (or PYMAPREDUCE_PURE=1): nothing to time")
        return 1
    info = common.print_machine("sort_strs and str_order against sorted()")
    rows, data = [], {}
    gc.disable()
    for name, keys in shapes(args.scale, random.Random(args.seed)).items():
        if speedups.sort_strs(keys) != sorted(keys) or speedups.str_order(keys) != sorted(
                range(len(keys)), key=keys.__getitem__):
            print(f"{name}: the C sort differs from sorted()")
            return 1
        plain = best(lambda k=keys: sorted(k), args.repeat)
        fast = best(lambda k=keys: speedups.sort_strs(k), args.repeat)
        plain_order = best(lambda k=keys: sorted(range(len(k)), key=k.__getitem__),
                           args.repeat)
        fast_order = best(lambda k=keys: speedups.str_order(k), args.repeat)
        rows.append([name, len(keys), f"{plain * 1e3:.1f}", f"{fast / plain:.2f}x",
                     f"{plain_order * 1e3:.1f}", f"{fast_order / plain_order:.2f}x"])
        data[name] = {"keys": len(keys), "sorted_s": plain, "sort_strs_s": fast,
                      "argsort_s": plain_order, "str_order_s": fast_order}
    gc.enable()
    common.print_table(["keys", "n", "sorted() ms", "sort_strs / sorted()",
                        "sorted(range) ms", "str_order / it"], rows)
    common.write_json(args.json, {"machine": info, "shapes": data})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
