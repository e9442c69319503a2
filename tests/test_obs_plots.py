"""The scaling figure: benchmarks/bench_scaling.py's own JSON (run here at a tiny size,
only to check that it works) drawn by benchmarks/plots.py as throughput against workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT
from .test_progress import check_png, run_plots

BENCH = os.path.join(ROOT, "benchmarks")


def test_the_scaling_benchmark_s_results_draw_throughput_against_workers(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "results"
    results.mkdir()
    run = subprocess.run(
        [sys.executable, "bench_scaling.py", "--size-mb", "1", "--workers", "1,2",
         "--corpus-root", str(tmp_path / "corpus"), "--json", str(results / "scaling.json")],
        capture_output=True, text=True, timeout=240, cwd=BENCH,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    data = json.loads((results / "scaling.json").read_text())
    assert data["benchmark"] == "scaling" and data["machine"]["load_average"]
    rows = {(r["system"], r["workers"]): r for r in data["results"]}
    assert set(rows) == {(s, n) for s in ("pymapreduce", "mp") for n in (1, 2)}
    assert all(r["equal"] and r["mib_per_s"] > 0 for r in rows.values())  # checked results
    out = tmp_path / "figures"
    drawn = run_plots(results, out)
    assert drawn.returncode == 0, drawn.stderr
    assert os.listdir(out) == ["scaling.png"]
    width, height = check_png(out / "scaling.png")
    assert width >= 600 and height >= 400
