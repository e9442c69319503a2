"""Mistakes a new user made with issue 11's features, each answered by one clear error
before anything runs: no credentials for a store, a URL with one slash, results=False
with nowhere to put the output, a budget written without its unit, an unknown
PYMAPREDUCE_COMPRESSION."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pymapreduce import Client, ConfigError, InputError, LocalCluster, read_text

from .conftest import ROOT, pmr
from .jobs import WordCount


def test_no_credentials_for_a_store_is_a_config_error_saying_where_to_set_them():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent", PYTHONPATH=ROOT)
    code = ("from pymapreduce.store.urls import list_url\n"
            "list_url('s3://bucket/in/', {'client_kwargs': "
            "{'endpoint_url': 'http://127.0.0.1:9'}})\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pymapreduce.errors.ConfigError: s3://bucket/in/")
    assert "no credentials" in last and "AWS_ACCESS_KEY_ID" in last


def test_a_url_with_one_slash_is_refused_with_the_url_it_meant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("a b\n")
    with pytest.raises(ConfigError, match="did you mean 's3://bucket/out'"):
        WordCount().run(read_text(str(tmp_path / "in.txt")), output_dir="s3:/bucket/out")
    assert not (tmp_path / "s3:").exists()  # no local directory made for it
    with pytest.raises(InputError, match="did you mean 's3://bucket/in'"):
        WordCount().run(read_text("s3:/bucket/in"))


def test_results_false_without_an_output_dir_is_refused():
    with pytest.raises(ConfigError, match="results=False needs output_dir"):
        WordCount().run([(0, "a")], results=False)
    with LocalCluster(workers=1) as cluster, Client(cluster.address) as client:
        with pytest.raises(ConfigError, match="results=False needs output_dir"):
            client.submit(WordCount(), [(0, "a")], results=False)


def test_a_budget_without_its_unit_and_an_unknown_compression_setting_are_explained():
    proc = subprocess.run(pmr("worker", "--connect", "tcp://127.0.0.1:9", "--memory", "256"),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and "did you mean 256MB?" in proc.stderr
    env = {**os.environ, "PYMAPREDUCE_COMPRESSION": "bogus"}
    for cmd in (("broker", "--bind", "tcp://127.0.0.1:0"),
                ("worker", "--connect", "tcp://127.0.0.1:9")):
        proc = subprocess.run(pmr(*cmd), capture_output=True, text=True, timeout=60,
                              cwd=ROOT, env=env)
        assert proc.returncode != 0
        assert "PYMAPREDUCE_COMPRESSION must be on or off, not 'bogus'" in proc.stderr
