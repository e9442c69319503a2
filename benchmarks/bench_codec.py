"""Encode and decode speed of task outputs (``patterns/records.py``).

A word-count partition (many short str keys, small int values) is the common case and must
not pay for the safe extension types; a partition with tuple keys and set values shows the
cost of the extension types themselves; one with dict values, the cost of maps (which
the safe decoder builds itself, to check their keys' hashes first). Run: ``python benchmarks/bench_codec.py``.
"""

from __future__ import annotations

import argparse
import inspect
import timeit

from pymapreduce.patterns import records


def partitions(n: int) -> dict[str, list]:
    """Columns ``[keys, values]`` shaped like the outputs the engine moves."""
    words = [f"w{i}é" if i % 7 == 0 else f"word{i}" for i in range(n)]
    return {
        "wordcount": [words, [i % 1000 for i in range(n)]],
        "grouped": [words, [[1, 2, 3] for _ in range(n)]],
        "tuples+sets": [[(w, i) for i, w in enumerate(words)],
                        [{i, i + 1} for i in range(n)]],
        "dicts": [words, [{"n": i, "first": i % 7, "last": 2 * i} for i in range(n)]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    safe = "allow_pickle" in inspect.signature(records.unpack).parameters
    print(f"{'partition':12} {'pack ms':>9} {'unpack ms':>10} {'unpack safe ms':>15}")
    for name, cols in partitions(args.keys).items():
        blob = records.pack(cols)

        def best(fn, cols=cols, blob=blob) -> float:
            return min(timeit.repeat(lambda: fn(cols, blob), number=1, repeat=args.repeat))

        with records.paused_gc():
            t_pack = best(lambda c, b: records.pack(c))
            if safe:
                t_un = best(lambda c, b: records.unpack(b, allow_pickle=True))
                t_safe = best(lambda c, b: records.unpack(b))
            else:  # (the codec before the safe decoder: unpack always unpickled)
                t_un, t_safe = best(lambda c, b: records.unpack(b)), float("nan")
        print(f"{name:12} {t_pack * 1e3:9.1f} {t_un * 1e3:10.1f} {t_safe * 1e3:15.1f}")

if __name__ == "__main__":
    main()
