"""Progress of a running job, drawn from the status the broker sends its watchers.

Three views of the same status (``maps``/``reduces`` ``[done, total]``, ``step``,
``records``/``bytes`` read, ``elapsed``):

- :class:`ProgressBars`: tqdm bars, one per phase (``tqdm.auto``: a text bar in a terminal,
  a widget in a Jupyter notebook), for ``Job.run(progress=True)``, ``handle.progress()``
  and ``pymapreduce run`` on a terminal;
- :class:`ProgressLines`: a plain line every few seconds, for ``pymapreduce run`` when
  stderr is a file or a pipe (CI logs, ``2> log``), where a bar's carriage returns would
  pile up into one unreadable line;
- :func:`summary_lines`: the final summary (state, time, records, bytes, tasks, counters).

Each is a callable taking a status dict, as :meth:`JobHandle.wait
<pymapreduce.client.handle.JobHandle.wait>`'s ``progress`` argument expects.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from .errors import ConfigError, JobFailed, JobTimeout

PERIOD_ENV = "PYMAPREDUCE_PROGRESS_EVERY"
DEFAULT_PERIOD = 5.0  # seconds between plain progress lines (CI logs stay short)

PHASES = (("map", "maps"), ("reduce", "reduces"))


def progress_period(given: float | None = None) -> float:
    """Seconds between plain progress lines: ``given`` (``--progress-every``), else the
    ``PYMAPREDUCE_PROGRESS_EVERY`` environment variable, else DEFAULT_PERIOD. 0 prints a
    line for every status the broker sends (about one a heartbeat)."""
    if given is None:
        text = os.environ.get(PERIOD_ENV, "").strip()
        try:
            given = float(text) if text else DEFAULT_PERIOD
        except ValueError:
            raise ConfigError(f"{PERIOD_ENV}={text!r}: give a number of seconds") from None
    if not given >= 0:  # (also NaN)
        raise ConfigError(f"the progress period must be 0 or more seconds, got {given}")
    return float(given)


def _pair(status: dict, key: str) -> tuple[int, int]:
    done, total = status.get(key) or (0, 0)
    return int(done), int(total)


def _step(status: dict) -> tuple[int, int]:
    step = status.get("step") or (1, 1)
    return int(step[0]), int(step[1])


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units, as the rest of pymapreduce's output has them (MB/s)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # (not reached)


def describe(status: dict) -> str:
    """One line of progress: ``[step 2/3] map 12/40 reduce 0/8, 1234 records, 5.6 MB
    read, 3.0s`` (the reduce phase only if the job has one)."""
    parts = []
    current, steps = _step(status)
    if steps > 1:
        parts.append(f"step {current}/{steps}")
    for label, key in PHASES:
        done, total = _pair(status, key)
        if total or label == "map":
            parts.append(f"{label} {done}/{total}")
    line = " ".join(parts)
    line += (f", {int(status.get('records', 0))} records, "
             f"{human_bytes(float(status.get('bytes', 0)))} read, "
             f"{float(status.get('elapsed', 0)):.1f}s")
    if status.get("waiting"):
        line += f" (waiting: {status['waiting']})"
    return line


class ProgressLines:
    """Plain progress lines on ``stream`` (``pymapreduce: map 12/40 reduce 0/8, ...``):
    the first status at once, then one at most every ``period`` seconds. The job's end
    is left to :func:`summary_lines`."""

    def __init__(self, stream: TextIO, period: float = DEFAULT_PERIOD, *,
                 clock=time.monotonic) -> None:
        self.stream = stream
        self.period = period
        self.clock = clock
        self._last: float | None = None

    def __call__(self, status: dict) -> None:
        if status.get("state") in ("succeeded", "failed", "cancelled"):
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.period:
            return
        self._last = now
        print(f"pymapreduce: {describe(status)}", file=self.stream, flush=True)

    def close(self, outcome: str = "succeeded") -> None:
        """Nothing to undo: each line is whole."""


class ProgressBars:
    """A tqdm bar per phase of a job (map, then reduce), each counting tasks done out of
    the phase's tasks; the map bar's postfix shows the input records and bytes read so
    far. A multi-step job's bars are relabelled and refilled for each step.

    Use it as a context manager around :meth:`JobHandle.wait`: on leaving, the bars are
    closed however the wait ended (done, JobFailed, a timeout, Ctrl-C), and one that did
    not finish is labelled with why, so the terminal is left clean and the bars' last
    state stays readable. ``file``: where the text bars go (default stderr; a notebook
    draws widgets instead). ``tqdm_class``: the bar class (default ``tqdm.auto.tqdm``).
    """

    def __init__(self, job_id: str = "", *, file: TextIO | None = None,
                 tqdm_class: Any = None, **tqdm_options: Any) -> None:
        if tqdm_class is None:
            from tqdm.auto import tqdm as tqdm_class
        self.job_id = job_id
        self.file = sys.stderr if file is None else file
        self.tqdm_class = tqdm_class
        self.options = {"leave": True, "unit": "task", "dynamic_ncols": True, **tqdm_options}
        self.bars: dict[str, Any] = {}
        self._step = (1, 1)
        self.closed = False
        self._first = True  # the first status heard: the job may have run for a while
        # text bars in a notebook (tqdm.auto without ipywidgets): its output cannot move
        # the cursor up to redraw a bar above, so the bars come one after the other
        self.one_at_a_time = (type(self.file).__module__.startswith("ipykernel")
                              and "notebook" not in getattr(tqdm_class, "__module__", ""))

    def _label(self, label: str) -> str:
        current, steps = self._step
        return f"step {current}/{steps} {label}" if steps > 1 else label

    def __call__(self, status: dict) -> None:
        if self.closed:
            return
        step = _step(status)
        # bars made at the first status heard start when the job did, not now: a quick
        # job's one status (all done) would otherwise show 3 tasks in 0.3 ms, 9000 task/s
        late = float(status.get("elapsed") or 0) if self._first else 0.0
        self._first = False
        if step != self._step and self.one_at_a_time:  # a new step: new bars
            self._step = step
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()
        if step != self._step:  # a new step: its own tasks, on the same bars
            self._step = step
            for label, bar in self.bars.items():
                bar.reset(total=max(_pair(status, dict(PHASES)[label])[1], 1))
                bar.set_description_str(self._label(label), refresh=False)
        for position, (label, key) in enumerate(PHASES):
            done, total = _pair(status, key)
            if not total:  # a map-only job has no reduce bar; no input, no map bar
                continue
            bar = self.bars.get(label)
            if bar is None and self.one_at_a_time:
                if any(b.n < b.total for b in self.bars.values()):
                    continue  # (after the bar before it is full)
                for b in self.bars.values():
                    b.close()  # (it stays printed, full)
                position = None
            if bar is None:
                bar = self.bars[label] = self.tqdm_class(**{
                    "total": total, "desc": self._label(label), "position": position,
                    "file": self.file, **self.options})
                if late > 0 and isinstance(getattr(bar, "start_t", None), float):
                    bar.start_t -= late
            if bar.total != total:
                bar.total = total
            if label == "map":
                bar.set_postfix_str(f"{int(status.get('records', 0))} records, "
                                    f"{human_bytes(float(status.get('bytes', 0)))} read",
                                    refresh=False)
            # a status carries totals, not increments; update() redraws at most every
            # mininterval, so a job of 10,000 quick tasks does not flood the terminal
            if done > bar.n:
                bar.update(done - bar.n)
            elif done < bar.n:  # (a step's bars refilled, or a broker that lost work)
                bar.n = done
                bar.refresh()

    def close(self, outcome: str = "succeeded") -> None:
        """Close every bar; ``outcome`` other than "succeeded" (failed, cancelled,
        interrupted, timed out) is added to the label of each bar that did not fill."""
        if self.closed:
            return
        self.closed = True
        for label, bar in self.bars.items():
            if outcome != "succeeded" and bar.total and bar.n < bar.total:
                bar.set_description_str(f"{self._label(label)} ({outcome})", refresh=False)
            bar.close()

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        self.close(outcome_of(exc))


def outcome_of(exc: BaseException | None) -> str:
    """The word for how a wait ended: succeeded, failed, cancelled, timed out, interrupted."""
    if exc is None:
        return "succeeded"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, JobTimeout):
        return "timed out"
    if isinstance(exc, JobFailed):
        return "cancelled" if " cancelled:" in str(exc) else "failed"
    return "stopped"


def watch(handle: Any, *, timeout: float | None, stream: TextIO,
          period: float = DEFAULT_PERIOD, started: float | None = None) -> dict:
    """``pymapreduce run``'s wait: bars on ``stream`` when it is a terminal, else plain
    lines every ``period`` seconds. A job that fails, is cancelled or times out, or a
    Ctrl-C, first closes the bars and prints the summary of what was done (from the last
    status heard), then raises. ``started``: the run's start (monotonic), for its wall
    time."""
    started = time.monotonic() if started is None else started
    view: Any = (ProgressBars(handle.job_id, file=stream) if _isatty(stream)
                 else ProgressLines(stream, period))
    seen: dict = {}

    def show(status: dict) -> None:
        seen.clear()
        seen.update(status)
        view(status)

    try:
        status = handle.wait(timeout=timeout, progress=show)
    except BaseException as exc:
        view.close(outcome_of(exc))
        if seen:
            last = {**seen, "state": seen.get("state") if seen.get("state") in
                    ("failed", "cancelled") else f"{seen.get('state', '?')}, "
                    f"{outcome_of(exc)}"}
            for line in summary_lines(last, wall=time.monotonic() - started):
                print(line, file=stream)
            stream.flush()
        raise
    view.close("succeeded")
    return status


def plain_progress(stream: TextIO) -> bool:
    """Whether progress on ``stream`` is better as plain lines than as bars: it is neither
    a terminal nor a Jupyter kernel's output (which redraws a bar's carriage returns)."""
    return not _isatty(stream) and not type(stream).__module__.startswith("ipykernel")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: not a terminal
        return False


def summary_lines(status: dict, *, wall: float, output: str | None = None) -> list[str]:
    """The final summary of ``pymapreduce run``: what the job did, its time (on the
    cluster and in all, cluster start-up and result printing included), input records
    and bytes and their rate, tasks per phase, backups, recovered and skipped records,
    then its counters one per line."""
    state = str(status.get("state", "?"))
    seconds = float(status.get("elapsed") or wall)
    nbytes = int(status.get("bytes", 0))
    mb = nbytes / 1e6
    tasks = ", ".join(f"{label} {'{}/{}'.format(*_pair(status, key))}"
                      for label, key in PHASES if _pair(status, key)[1] or label == "map")
    current, steps = _step(status)
    if steps > 1:
        tasks = f"step {current}/{steps}: {tasks}"
    line = (f"{status.get('job_id', '?')}: {int(status.get('records', 0))} records, "
            f"{nbytes} bytes; the job ran {seconds:.2f}s on the cluster "
            f"({mb / max(seconds, 1e-9):.1f} MB/s), {wall:.2f}s in all; {state}; "
            f"tasks {tasks}")
    extras = [f"{status[key]} {key}" for key in ("backups", "recovered") if status.get(key)]
    if status.get("skipped"):
        extras.append(f"{len(status['skipped'])} bad records skipped")
    if extras:
        line += "; " + ", ".join(extras)
    if output:
        line += f"; output in {output}"
    lines = [line]
    counters = status.get("counters") or {}
    if counters:
        lines.append("counters:")
        lines.extend(f"  {name}: {value}" for name, value in sorted(counters.items()))
    return lines
