"""Rough edges a new user met from a clean clone and install (docs/cli.md, docs/logs.md,
docs/travel.md), each pinned by a test."""

from __future__ import annotations

import os
import sys
import textwrap

import cloudpickle

from pymapreduce.shipping import dumps_keeping_filenames, pickle_by_value

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_in(tmp_path, name: str, source: str):
    """Import ``source`` as module ``name`` from a file in tmp_path (the user's own code)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        __import__(name)
        return sys.modules[name], str(path)
    finally:
        sys.path.remove(str(tmp_path))


def test_code_pickled_by_value_keeps_its_file_name(tmp_path):
    # cloudpickle 3 (what a fresh `pip install` gets) names such code "<dynamic-code>",
    # and remote tracebacks then could not show the user's file and lines
    module, path = _module_in(tmp_path, "nu_filename_mod", """
        def parse(line):
            return int(line)
    """)
    cloudpickle.register_pickle_by_value(module)
    try:
        blob = dumps_keeping_filenames(module.parse)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["nu_filename_mod"]
    parse = cloudpickle.loads(blob)
    assert parse.__code__.co_filename == path
    assert parse("12") == 12


def test_a_job_from_a_users_module_keeps_its_file_name_on_the_way(tmp_path):
    module, path = _module_in(tmp_path, "nu_job_mod", """
        from pymapreduce import Job

        class Parse(Job):
            def map(self, key, line):
                yield key, int(line)
    """)
    try:
        blob = pickle_by_value(module.Parse())
    finally:
        del sys.modules["nu_job_mod"]
    job = cloudpickle.loads(blob)
    assert type(job).map.__code__.co_filename == path
