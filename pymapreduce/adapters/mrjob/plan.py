"""What the client learns from an ``MRJob`` before running it: its steps, the arguments
its tasks get, its side files and jobconf, read once and shipped to the workers."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

# A whole file of this size or more is not shipped with the job (it travels in the job's
# pickle): put it where the workers can read it and pass its path instead.
MAX_SIDE_FILE_BYTES = 64 << 20

# mrjob features that need Hadoop, Spark or a shell, which the adapter does not run
# (a mapper's command or pre-filter runs: adapters/mrjob/commands.py)
UNSUPPORTED_KEYS = ("combiner_cmd", "reducer_cmd", "combiner_pre_filter", "reducer_pre_filter")


@dataclass
class Plan:
    """An ``MRJob`` as the workers run it: ``task()`` makes the MRJob instance one mrjob
    task would have, as mrjob's runners make it (``--step-num=N --mapper ARGS...``)."""

    job_cls: type
    extra_args: list
    steps: list  # per step: {"mapper", "combiner", "reducer": bool, "source": str}
    sort_values: bool
    files: dict = field(default_factory=dict)  # name in the working dir -> bytes
    env: dict = field(default_factory=dict)  # jobconf as environment variables
    display: dict = field(default_factory=dict)  # input file (absolute) -> as mrjob names it
    token: str = field(default_factory=lambda: os.urandom(16).hex())

    def task(self, n: int, kind: str, stderr: Any) -> tuple:
        """A fresh MRJob instance for one task (its ``__init__``, ``configure_args`` and
        ``load_args`` run as in mrjob's tasks), and its step ``n``."""
        task = self.job_cls([f"--step-num={n}", f"--{kind}", *self.extra_args])
        task._stderr = stderr
        return task, task.steps()[n]

    def tagged(self, n: int) -> bool:
        """Whether step ``n``'s values must be put back in mrjob's order (see steps.py)."""
        return n > 0 and self.steps[n - 1]["reducer"] and not self.sort_values


def make_plan(job: Any, inputs: list[str]) -> Plan:
    """The plan of an MRJob instance made with the user's arguments (``job._cl_args``)."""
    from mrjob.compat import translate_jobconf_for_all_versions
    from mrjob.step import MRStep

    steps = []
    for n, step in enumerate(job.steps()):
        if not isinstance(step, MRStep):
            raise ConfigError(f"{type(job).__name__} step {n + 1} is a {type(step).__name__}: "
                              "it needs Hadoop or Spark; pymapreduce runs MRStep steps only")
        for key in UNSUPPORTED_KEYS:
            if step._steps.get(key):
                raise ConfigError(f"{type(job).__name__} step {n + 1} has {key}: pymapreduce "
                                  "runs Python combiners and reducers, and a mapper's "
                                  "command, not a combiner's or reducer's command")
        desc = step.description(n)
        raw = bool(step._steps.get("mapper_raw"))
        mapper = desc.get("mapper") or {}
        steps.append({"mapper": "mapper" in desc, "combiner": "combiner" in desc,
                      "reducer": "reducer" in desc,
                      "source": "raw" if raw else "text" if n == 0 else "lines",
                      "command": mapper.get("command"), "pre_filter": mapper.get("pre_filter")})
        if raw and n:
            raise ConfigError(f"{type(job).__name__}: only the first step may use mapper_raw")
    if not steps:
        raise ConfigError(f"{type(job).__name__} defines no mapper, combiner or reducer")

    kwargs = job._non_option_kwargs()
    files: dict = {}
    extra_args = []
    for arg in kwargs["extra_args"]:
        if isinstance(arg, dict):  # a file option (add_file_arg): ship it, pass its name
            name = arg.get("name") or os.path.basename(arg["path"])
            files[name] = _read_side_file(arg["path"])
            arg = name
        extra_args.append(arg)
    job_kwargs = job._job_kwargs()
    for spec in job_kwargs["upload_files"]:  # FILES, files(), --files
        path, _, name = str(spec).partition("#")
        path = os.path.expanduser(os.path.expandvars(path))
        files[name or os.path.basename(path)] = _read_side_file(path)
    if job_kwargs["upload_archives"] or job_kwargs["upload_dirs"]:
        raise ConfigError("ARCHIVES and DIRS (--archives, --dirs) are not supported by "
                          "pymapreduce's mrjob adapter; ship files with FILES")
    env = {}
    for name, value in (job_kwargs["jobconf"] or {}).items():
        if value is None:
            continue
        for variant in translate_jobconf_for_all_versions(name):
            env[variant.replace(".", "_")] = str(value)
    return Plan(job_cls=type(job), extra_args=extra_args, steps=steps,
                sort_values=bool(job.sort_values()), files=files, env=env,
                display=display_names(inputs))


def _read_side_file(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size >= MAX_SIDE_FILE_BYTES:
            raise ConfigError(f"side file {path!r} is {size >> 20} MiB; the adapter ships "
                              f"side files with the job (under {MAX_SIDE_FILE_BYTES >> 20} "
                              "MiB): pass a path the workers can read instead")
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read side file {path!r}: {exc}") from exc


def display_names(patterns: list[str]) -> dict:
    """Each input file's absolute path -> the path mrjob's runner names it by (for
    ``mapreduce.map.input.file``): as the user wrote it, globs expanded as written,
    a directory's files joined to the directory's name."""
    names: dict = {}
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.expanduser(pattern))):
            if os.path.isdir(path):
                for root, _, filenames in os.walk(path):
                    for f in filenames:
                        names.setdefault(os.path.abspath(os.path.join(root, f)),
                                         os.path.join(root, f))
            else:
                names.setdefault(os.path.abspath(path), path)
    return names
