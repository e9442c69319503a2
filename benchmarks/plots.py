"""Draw the benchmark figures as PNG plots, from the JSON files in benchmarks/results/.

    python benchmarks/plots.py                      # benchmarks/results/*.json -> benchmarks/figures/
    python benchmarks/plots.py --results DIR --out DIR

Reads every ``*.json`` in ``--results``: what the scripts write with ``--json`` (e.g.
``bench_wordcount.py --json benchmarks/results/wordcount.json``) and the figures transcribed
from RESULTS.md (their ``source`` field says from which table). Each file's kind comes from
its ``benchmark`` field or, for the scripts' own output, from its shape. Writes:

- ``throughput.png``: word count MiB/s per system (pymapreduce and its peers: the single
  loop, multiprocessing, Dask, PySpark, and any other system a file names, e.g. Ray or
  mrjob), one bar per file (run), with "x single" on each bar;
- ``scaling.png``: word count MiB/s against the number of workers, per system
  (``bench_scaling.py``), with the machine's core count marked;
- ``faults.png``: what each failure costs a job, as its time over the undisturbed time of
  the same run (``bench_faults.py``), one panel per run.

matplotlib (the ``bench`` extras) draws with its Agg backend: no display needed. A kind
with no file is skipped with a message.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import textwrap
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
FIGURES_DIR = os.path.join(BENCH_DIR, "figures")
# systems in the order a reader compares them; others follow in the order met
SYSTEM_ORDER = ("single", "single-nogc", "pymapreduce", "mp", "dask", "spark", "ray", "mrjob")
OURS = "pymapreduce"


def kind_of(data: dict) -> str | None:
    """``wordcount``, ``scaling``, ``faults``, or None for a file plots.py does not draw."""
    if isinstance(data.get("benchmark"), str):
        return data["benchmark"]
    results = data.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        if "workers" in results[0]:
            return "scaling"
        if "system" in results[0]:
            return "wordcount"
    if "times" in data and "correct" in data:  # bench_faults.py --json
        return "faults"
    return None


def load(results_dir: str) -> dict[str, list[tuple[str, dict]]]:
    """The result files by kind: ``{kind: [(file name, data), ...]}``, sorted by name."""
    found: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        kind = kind_of(data) if isinstance(data, dict) else None
        if kind is None:
            print(f"plots: {os.path.basename(path)}: not a figure this script draws; skipped",
                  file=sys.stderr)
            continue
        found.setdefault(kind, []).append((os.path.basename(path), data))
    return found


def label_of(name: str, data: dict) -> str:
    """A run's legend label: its ``label``, else its date, else its file name."""
    machine = data.get("machine") or {}
    return str(data.get("label") or machine.get("date") or os.path.splitext(name)[0])


def _ordered(systems: set[str]) -> list[str]:
    known = [s for s in SYSTEM_ORDER if s in systems]
    return known + sorted(systems - set(known))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def _footer(fig: Any, runs: list[tuple[str, dict]]) -> float:
    """The machine, where the figures come from and each run's command, in small print
    under the plot; returns the fraction of the figure's height to keep free for it."""
    machines = sorted({f"{(d.get('machine') or {}).get('cores', '?')} cores "
                       f"({(d.get('machine') or {}).get('cpu', '?')})" for _, d in runs})
    recorded = ["transcribed" in str(d.get("source", "")) for _, d in runs]
    origin = ("figures recorded in benchmarks/RESULTS.md (see each file's source)"
              if all(recorded) else "measured" if not any(recorded)
              else "measured and recorded in benchmarks/RESULTS.md")
    lines = [f"{', '.join(machines)}; {origin}"]
    for name, d in runs:
        machine = d.get("machine") or {}
        load = machine.get("load_average")
        lines.append(f"{label_of(name, d)}: {machine.get('command', '')}"
                     + (f" (load average {load[0]:.1f} at the start)" if load else ""))
    # (a long command is wrapped, not cut at the figure's edge)
    lines = [part for line in lines for part in textwrap.wrap(
        line, width=int(fig.get_figwidth() * 19), subsequent_indent="    ") or [""]]
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=6, va="bottom", ha="left", color="0.35")
    return (0.15 + 0.11 * len(lines)) / fig.get_figheight()


def plot_throughput(runs: list[tuple[str, dict]], path: str) -> None:
    """Grouped bars: a group per system, a bar per run, MiB/s, "x single" on each bar."""
    plt = _pyplot()
    systems = _ordered({r["system"] for _, d in runs for r in d["results"] if "seconds" in r})
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(9, 4.8 + 0.12 * len(runs)))
    for i, (name, data) in enumerate(runs):
        rows = {r["system"]: r for r in data["results"] if "seconds" in r}
        xs = [j + (i - (len(runs) - 1) / 2) * width for j, s in enumerate(systems) if s in rows]
        ys = [rows[s]["mib_per_s"] for s in systems if s in rows]
        bars = ax.bar(xs, ys, width * 0.95, label=label_of(name, data))
        for bar, s in zip(bars, [s for s in systems if s in rows]):
            ratio = rows[s].get("speedup_vs_single")
            if ratio:
                ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2,
                                              bar.get_height()), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(systems)))
    ax.set_xticklabels([f"{s}\n(this engine)" if s == OURS else s for s in systems])
    size = runs[0][1].get("size_mib")
    workers = runs[0][1].get("workers")
    ax.set_title(f"Word count{f', {size:.0f} MiB' if size else ''}"
                 f"{f', {workers} workers' if workers else ''}: throughput "
                 "(labels: x the single-process loop of the same run)")
    ax.set_ylabel("MiB/s (higher is better)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, _footer(fig, runs), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(runs: list[tuple[str, dict]], path: str) -> None:
    """Lines: MiB/s against workers, per system and run; the cores and the single loop
    marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cores = None
    for name, data in runs:
        cores = cores or (data.get("machine") or {}).get("cores")
        for system in _ordered({r["system"] for r in data["results"]}):
            rows = sorted((r for r in data["results"] if r["system"] == system),
                          key=lambda r: r["workers"])
            suffix = f" ({label_of(name, data)})" if len(runs) > 1 else ""
            ax.plot([r["workers"] for r in rows], [r["mib_per_s"] for r in rows],
                    marker="o", linewidth=2.5 if system == OURS else 1.5,
                    label=system + suffix)
        if data.get("single_s") and data.get("size_mib"):
            ax.axhline(data["size_mib"] / data["single_s"], color="0.5", linestyle="--",
                       linewidth=1, label="single-process loop" + (
                           f" ({label_of(name, data)})" if len(runs) > 1 else ""))
    if cores:
        ax.axvline(cores, color="0.7", linestyle=":", linewidth=1)
        ax.annotate(f"{cores} cores", (cores, 0.02), xycoords=ax.get_xaxis_transform(),
                    xytext=(3, 0), textcoords="offset points", fontsize=8, color="0.4")
    size = runs[0][1].get("size_mib")
    ax.set_title(f"Word count{f', {size:.0f} MiB' if size else ''}: throughput against "
                 "workers")
    ax.set_xlabel("workers (processes)")
    ax.set_ylabel("MiB/s (higher is better)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, _footer(fig, runs), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fault_ratios(data: dict) -> list[tuple[str, float, bool]]:
    """``(scenario, median time / undisturbed median, results correct)`` per scenario,
    from a run's ``times`` (samples), or a transcribed table's ``ratios`` (as recorded)
    or ``medians``."""
    correct = data.get("correct") or {}
    if data.get("ratios"):
        return [(name, float(r), bool(correct.get(name, True)))
                for name, r in data["ratios"].items()]
    medians = data.get("medians") or {
        name: statistics.median(samples) for name, samples in data["times"].items() if samples}
    base = medians.get("undisturbed")
    if not base:
        return []
    return [(name, m / base, bool(correct.get(name, True))) for name, m in medians.items()]


def plot_faults(runs: list[tuple[str, dict]], path: str) -> None:
    """A panel per run: horizontal bars of each scenario's time over the undisturbed."""
    plt = _pyplot()
    panels = [(name, data, fault_ratios(data)) for name, data in runs]
    panels = [p for p in panels if p[2]]
    heights = [0.9 + 0.38 * len(p[2]) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    top = max(r for _, _, ratios in panels for _, r, _ in ratios)
    for ax, (name, data, ratios) in zip(axes[:, 0], panels):
        names = [n for n, _, _ in ratios][::-1]
        values = [r for _, r, _ in ratios][::-1]
        colours = ["0.6" if n == "undisturbed" else ("C3" if not ok else "C0")
                   for n, _, ok in ratios][::-1]
        bars = ax.barh(names, values, color=colours)
        for bar, value in zip(bars, values):
            ax.annotate(f"{value:.2f}x", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax.axvline(1, color="0.3", linewidth=0.8)
        ax.set_xlim(0, top * 1.15)
        ax.set_title(label_of(name, data), fontsize=9, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("job time / the undisturbed job's time in the same run "
                           "(lower is better)")
    all_correct = all(ok for _, _, ratios in panels for _, _, ok in ratios)
    fig.suptitle("What a failure costs a job (3 worker daemons of 1 process; "
                 + ("every result checked correct)" if all_correct else
                    "red: a WRONG result)"))
    fig.tight_layout(rect=(0, _footer(fig, [(n, d) for n, d, _ in panels]), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = {"wordcount": ("throughput.png", plot_throughput),
         "scaling": ("scaling.png", plot_scaling),
         "faults": ("faults.png", plot_faults)}


def draw(results_dir: str = RESULTS_DIR, out_dir: str = FIGURES_DIR) -> list[str]:
    """Draw every plot whose data is in ``results_dir`` into ``out_dir``; returns the paths."""
    found = load(results_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for kind, (filename, plot) in PLOTS.items():
        runs = found.get(kind)
        if not runs:
            print(f"plots: no {kind} results in {results_dir}; {filename} not drawn",
                  file=sys.stderr)
            continue
        path = os.path.join(out_dir, filename)
        plot(runs, path)
        written.append(path)
        print(f"wrote {path} ({', '.join(name for name, _ in runs)})")
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=RESULTS_DIR,
                    help="folder of result JSON files (default benchmarks/results)")
    ap.add_argument("--out", default=FIGURES_DIR,
                    help="folder for the PNG files (default benchmarks/figures)")
    args = ap.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plots: matplotlib is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    return 0 if draw(args.results, args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
