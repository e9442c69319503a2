"""The broker's history of finished jobs: past the result TTL, across restarts with
``--state-dir``, bounded, paged, and never a job's code or data."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from types import SimpleNamespace

import pytest

from pymapreduce import Client, JobFailed, run_sequential
from pymapreduce.observe.history import History
from pymapreduce.patterns import security

from .conftest import FAST
from .jobs import WordCount
from .test_observe import MARKER, get, get_json, start_broker, wait_for


def records(n: int = 30) -> list:
    return [(i, f"w{i % 5} {MARKER} x{i % 3}") for i in range(n)]


def test_history_outlives_the_result_ttl_and_a_restart(daemons, tmp_path):
    state = tmp_path / "state"
    address, url = start_broker(daemons, *FAST, "--state-dir", str(state),
                                "--result-ttl", "0.5")
    daemons.worker(address, 1)
    data = records()
    with Client(address) as client:
        handle = client.submit(WordCount(), data)
        job_id = handle.job_id
        assert handle.result(60) == run_sequential(WordCount(), data)
        failing = client.submit(WordCount(), [(0, None)])  # map raises on None
        with pytest.raises(JobFailed):
            failing.wait(60)
    # the TTL passes: the broker forgets both jobs and their results ...
    wait_for(lambda: not get_json(url + "api/jobs")["jobs"])
    status, _ = get(url + f"api/jobs/{job_id}")
    assert status == 404
    # ... but not what they were
    page = get_json(url + "api/history")
    assert [j["id"] for j in page["jobs"]] == [failing.job_id, job_id]  # newest first
    row = page["jobs"][1]
    assert row["name"] == "WordCount" and row["state"] == "succeeded"
    assert row["records"] == len(data) and row["maps"][0] == row["maps"][1] >= 1
    assert row["reduces"][0] == row["reduces"][1] >= 1 and row["bytes_out"] > 0
    assert row["submitted"] <= row["ended"] and row["secs"] >= 0 and row["error"] is None
    bad = page["jobs"][0]
    assert bad["state"] == "failed" and bad["error"]["message"]

    # a restarted broker (killed: nothing is written on the way out) still shows them
    broker = daemons.procs[0]
    broker.kill()
    broker.wait()
    address2, url2 = start_broker(daemons, *FAST, "--state-dir", str(state))
    after = get_json(url2 + "api/history")
    assert [j["id"] for j in after["jobs"]] == [failing.job_id, job_id]
    assert after["jobs"][1] == row  # the same facts, sequence number included
    # a new job goes on top; pages follow the cursor, newest first
    daemons.worker(address2, 1)
    with Client(address2) as client:
        third = client.submit(WordCount(), data[:5])
        third.wait(60)
    wait_for(lambda: get_json(url2 + "api/history")["jobs"][0]["id"] == third.job_id)
    seen, before = [], None
    while True:
        page = get_json(url2 + "api/history?limit=1" + (f"&before={before}" if before else ""))
        assert len(page["jobs"]) == 1
        seen.append(page["jobs"][0]["id"])
        before = page["next"]
        if before is None:
            break
    assert seen == [third.job_id, failing.job_id, job_id]
    status, body = get(url2 + "api/history?before=x")
    assert status == 400 and b"integer" in body
    status, body = get(url2 + "api/history")  # never the data (every record holds it)
    assert status == 200 and MARKER.encode() not in body


def _job(i: int, state: str = "succeeded", tenant: str = "") -> SimpleNamespace:
    now = time.monotonic()
    return SimpleNamespace(
        id=f"J-{i}", name="Job", tenant=tenant, state=state, finished=now - 1,
        submitted=now - 3, steps=[], done_maps=2, maps=[0, 1], done_reduces=1, reducers=1,
        map_only=False, records=10 * i, bytes_in=100, backups=0, skipped=[], recovered=0,
        error={"message": "boom", "task": "map-1", "traceback": "T"} if state == "failed"
        else None)


def test_the_history_is_bounded_journaled_and_reads_back_damaged_rows_leniently(tmp_path):
    from pymapreduce.broker.journal import Journal

    journal = Journal(str(tmp_path / "state"))
    try:
        history = History(journal, keep=5)
        for i in range(8):
            history.record(_job(i, tenant="key Abc" if i % 2 else "connection 00ff"),
                           7, time.monotonic())
        history.record(_job(7), 0, time.monotonic())  # once per job
        page = history.page(limit=100)
        assert [j["id"] for j in page["jobs"]] == [f"J-{i}" for i in range(7, 2, -1)]
        assert page["total"] == 5 and page["next"] is None
        assert page["jobs"][0]["owner"] == "key Abc" and page["jobs"][1]["owner"] == ""
        assert history.page(limit=2, owner="key Abc")["jobs"][0]["id"] == "J-7"
        assert history.get("J-3")["records"] == 30 and history.get("J-0") is None
        assert "traceback" not in json.dumps(page)  # the message, not the traceback
        assert journal.flush()  # (rows go with the journal's next transaction)
        rows = journal.db.execute("SELECT count(*) FROM history").fetchone()[0]
        assert rows == 5  # the journal is bounded too
        # a damaged row (a bit flipped) and a foreign one are skipped, never served
        journal.db.execute("UPDATE history SET row = X'00' || substr(row, 2) WHERE id='J-4'")
        journal.db.execute("INSERT INTO history (id, row, crc) VALUES ('x', X'c0', 0)")
    finally:
        journal.close()
    journal = Journal(str(tmp_path / "state"))
    try:
        again = History(journal, keep=5)
        assert [j["id"] for j in again.page()["jobs"]] == ["J-7", "J-6", "J-5"]  # (of the newest 5)
        again.record(_job(9, "failed"), 0, time.monotonic())
        top = again.page(limit=1)
        assert top["jobs"][0]["id"] == "J-9" and top["jobs"][0]["error"] == {
            "message": "boom", "task": "map-1"}
        assert again.page(limit=1, before=top["next"])["jobs"][0]["id"] == "J-7"
    finally:
        journal.close()


def test_a_history_whose_table_cannot_be_used_keeps_jobs_in_memory(tmp_path):
    db = sqlite3.connect(str(tmp_path / "j.sqlite"))
    db.execute("CREATE TABLE history (x)")  # not our table: the SELECT fails
    history = History(SimpleNamespace(db=db))
    history.record(_job(1), 0, time.monotonic())
    assert [j["id"] for j in history.page()["jobs"]] == ["J-1"]
    db.close()


@pytest.fixture
def keys(tmp_path):
    """A key directory with a second client key, "other"."""
    directory = security.cluster_keys(str(tmp_path / "keys"))
    security.generate(directory, "other")
    security.authorize(directory, security.CLIENT, os.path.join(directory, "other.key"))
    return directory


def test_with_keys_the_history_needs_the_token_and_names_the_owner_key(daemons, keys):
    address, http = start_broker(daemons, "--keys", keys, *FAST)
    daemons.worker(address, 1, "--keys", keys)
    with Client(address, keys=keys, key_name="other") as client:
        handle = client.submit(WordCount(), records(6))
        handle.result(60)
    for token in (None, "x" * 32):
        status, body = get(http + "api/history", token)
        assert status == 401 and b"WordCount" not in body
    token = open(os.path.join(keys, "http.token")).read().strip()
    (row,) = wait_for(lambda: get_json(http + "api/history", token)["jobs"])
    public = open(os.path.join(keys, "other.key")).read()
    assert row["id"] == handle.job_id and row["owner"].startswith("key ")
    assert row["owner"][4:] in public  # its client's public key, nothing secret
    assert get_json(http + "api/history?owner=nobody", token)["jobs"] == []
