"""``Job.run(progress=True)`` in a real Jupyter kernel (nbclient + ipykernel): a notebook
gets tqdm's widget bars (ipywidgets installed), or tqdm's text bars when ipywidgets is
missing, and either way they reach 100%."""

from __future__ import annotations

import json

import pytest

from .conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

SETUP = f"""
import sys
sys.path.insert(0, {ROOT!r})  # this checkout's pymapreduce, as the tests use it
"""
NO_WIDGETS = """
sys.modules["ipywidgets"] = None  # as if it were not installed: import fails
"""
RUN = """
from pymapreduce import Job

class WordCount(Job):
    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)

counts = WordCount().run([(i, f"a b{i % 3}") for i in range(60)], workers=1, map_tasks=6,
                         reducers=2, progress=True)
print("result:", sorted(counts.items()))
"""
EXPECTED = "result: [('a', 60), ('b0', 20), ('b1', 20), ('b2', 20)]"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def run_notebook(tmp_path, *cells: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # (raises CellExecutionError, with the traceback, if a cell fails)
    outputs = [o for c in nb.cells for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return nb, outputs, text


def test_a_notebook_draws_widget_bars_that_fill(tmp_path):
    pytest.importorskip("ipywidgets")
    nb, outputs, text = run_notebook(tmp_path, SETUP, RUN)
    assert EXPECTED in text
    views = [o for o in outputs if o.output_type == "display_data" and WIDGET_VIEW in o.data]
    assert len(views) == 2, outputs  # a bar per phase: map and reduce
    assert "\r" not in text and "%|" not in text  # no text bars beside the widgets
    # the widgets' last state, as the kernel left it: each progress bar full, its label
    # "100%"
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    assert sorted(b["max"] for b in bars) == [2, 6]
    assert all(b["value"] == b["max"] for b in bars)
    labels = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert sum("100%" in str(v) for v in labels) == 2, labels
    assert any(str(v).startswith("map") for v in labels)
    json.dumps(nb)  # (a notebook a user could save)


def test_without_ipywidgets_a_notebook_gets_text_bars_that_fill(tmp_path):
    nb, outputs, text = run_notebook(tmp_path, SETUP + NO_WIDGETS, RUN)
    assert EXPECTED in text
    assert not [o for o in outputs if WIDGET_VIEW in getattr(o, "data", {})]
    stderr = "".join(o.get("text", "") for o in outputs
                     if o.output_type == "stream" and o.name == "stderr")
    assert "map: 100%" in stderr and "6/6" in stderr
    assert "reduce: 100%" in stderr and "2/2" in stderr
    # one bar after the other: a notebook's output cannot move the cursor up to redraw
    # a bar above (a terminal's "\x1b[A" would show as garbage)
    assert "\x1b[" not in stderr
    assert stderr.rindex("map:") < stderr.index("reduce:")
