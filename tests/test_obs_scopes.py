"""Client tokens: an HTTP token that shows one client key's jobs only (and what a client
holding one, or forging one, can see)."""

from __future__ import annotations

import os
import subprocess

import pytest
import zmq

from pymapreduce import Client
from pymapreduce.observe import scopes
from pymapreduce.observe.cli import TOKEN_FILE, load_token
from pymapreduce.patterns import security

from .conftest import FAST, ROOT, pmr
from .jobs import WordCount
from .test_observe import MARKER, get, get_json, start_broker, wait_for


@pytest.fixture
def keys(tmp_path):
    directory = security.cluster_keys(str(tmp_path / "keys"))
    security.generate(directory, "other")
    security.authorize(directory, security.CLIENT, os.path.join(directory, "other.key"))
    return directory


def dashboard_url(http: str, keys: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(pmr("dashboard-url", http, "--keys", keys, *extra),
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_a_client_token_shows_its_client_s_jobs_only(daemons, keys):
    address, http = start_broker(daemons, "--keys", keys, *FAST)
    daemons.worker(address, 1, "--keys", keys)
    records = [(i, f"w{i % 3} {MARKER}") for i in range(12)]
    jobs = {}
    for name in ("client", "other"):
        with Client(address, keys=keys, key_name=name) as client:
            handle = client.submit(WordCount(), records, map_tasks=2)
            handle.result(60)
            jobs[name] = handle.job_id
    admin = open(os.path.join(keys, "http.token")).read().strip()
    wait_for(lambda: len(get_json(http + "api/jobs", admin)["jobs"]) == 2)  # (snapshots)
    made = dashboard_url(http, keys, "--client", "other")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().split("?token=")[1]
    assert token.startswith("client.") and admin not in token
    mine, theirs = jobs["other"], jobs["client"]

    owners = {j["id"]: j["owner"] for j in get_json(http + "api/history", admin)["jobs"]}
    assert owners[mine] == scopes.scope_of(admin, token), (owners, mine)
    assert [j["id"] for j in get_json(http + "api/jobs", token)["jobs"]] == [mine]
    assert get_json(http + f"api/jobs/{mine}", token)["job"]["id"] == mine
    assert get(http + f"api/jobs/{theirs}", token)[0] == 404  # as if there were none
    assert [j["id"] for j in get_json(http + "api/history", token)["jobs"]] == [mine]
    assert get_json(http + "api/history?owner=key%20x", token)["jobs"][0]["id"] == mine
    events = get_json(http + "api/events?format=json", token)["events"]
    assert events and {e["job"] for e in events} == {mine}  # nor the workers' events
    assert get(http + f"api/events?format=json&job={theirs}", token)[0] == 404
    status, body = get(http + "metrics", token)
    assert status == 403 and b"token" in body
    cluster = get_json(http + "api/cluster", token)
    assert all(theirs not in t for w in cluster["workers"] for t in w["tasks"])
    assert get(http, token)[0] == 200  # the page itself
    # the broker's own token still sees both
    assert len(get_json(http + "api/jobs", admin)["jobs"]) == 2
    # forged: another key with this MAC, this key with a changed MAC, garbage
    other_key = bytes.fromhex(token.split(".")[1])
    forged = [token[:-1] + ("0" if token[-1] != "0" else "1"),
              "client." + bytes(32).hex() + "." + token.split(".")[2],
              "client." + other_key.hex() + ".x", "client.zz", token + "0"]
    for bad in forged:
        assert get(http + "api/jobs", bad)[0] == 401, bad
    for body in (get(http + "api/history", token)[1], get(http + "api/jobs", token)[1]):
        assert MARKER.encode() not in body


def test_client_tokens_are_made_and_checked_without_a_list():
    master = "m" * 24
    public = zmq.curve_keypair()[0].decode()
    token = scopes.client_token(master, public)
    assert scopes.scope_of(master, token) == "key " + public
    assert scopes.scope_of("n" * 24, token) is None  # another broker's (or a new token)
    assert scopes.scope_of(master, master) is None and scopes.scope_of(master, "") is None


def test_dashboard_url_for_a_client_needs_the_token_and_a_known_key(tmp_path, keys):
    http = "http://127.0.0.1:1/"
    load_token(os.path.join(keys, TOKEN_FILE), create=True)  # (as a broker would)
    missing = dashboard_url(http, keys, "--client", "nobody")
    assert missing.returncode != 0 and "no client key 'nobody'" in missing.stderr
    no_token = subprocess.run(pmr("dashboard-url", http, "--client", "other"),
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert no_token.returncode != 0 and "--keys" in no_token.stderr
    by_file = dashboard_url(http, keys, "--client", os.path.join(keys, "other.key"))
    assert by_file.returncode == 0 and "?token=client." in by_file.stdout
    assert by_file.stdout == dashboard_url(http, keys, "--client", "other").stdout


def test_a_client_token_goes_with_its_key_and_a_refused_token_says_why(daemons, keys):
    # an operator revokes a client key (removes its file from clients/): its client token
    # must stop showing that client's jobs too, as `pymapreduce status` stops
    address, http = start_broker(daemons, "--keys", keys, *FAST)
    made = dashboard_url(http, keys, "--client", "other")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().split("?token=")[1]
    assert get(http + "api/jobs", token)[0] == 200
    allowed = os.path.join(keys, "clients", "other.key")
    os.rename(allowed, allowed + ".revoked")
    wait_for(lambda: get(http + "api/jobs", token)[0] == 401)  # (re-read each heartbeat)
    status, body = get(http + "api/jobs", token)
    assert "not accepted" in body.decode() and "allowlist" in body.decode(), body
    status, page = get(http, token)
    assert status == 401 and b'id="refused-token"' in page and b"needs-token" in page
    os.rename(allowed + ".revoked", allowed)  # authorized again: the same token works
    wait_for(lambda: get(http + "api/jobs", token)[0] == 200)
    # no token at all is told that one is needed, not that its token was refused
    status, body = get(http + "api/jobs")
    assert status == 401 and "a token is needed" in body.decode(), body
    status, page = get(http)
    assert status == 401 and b"refused-token" not in page
    # a stale token (the token file was replaced): refused, saying so
    status, body = get(http + "api/jobs", "x" * 32)
    assert status == 401 and "token file was replaced" in body.decode(), body


def test_a_client_token_s_event_stream_ends_when_its_key_is_revoked(daemons, keys):
    # a stream opened before the key was removed from clients/ must not go on showing
    # that client's events for the stream's ten minutes
    import urllib.request

    address, http = start_broker(daemons, "--keys", keys, *FAST)
    made = dashboard_url(http, keys, "--client", "other")
    token = made.stdout.strip().split("?token=")[1]
    request = urllib.request.Request(http + "api/events",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=8) as stream:  # (keep-alives: every 10 s)
        assert stream.status == 200 and stream.readline() == b"retry: 1000\n"
        allowed = os.path.join(keys, "clients", "other.key")
        os.rename(allowed, allowed + ".revoked")
        while stream.readline():  # the broker ends the stream (EOF), not 600 s later
            pass
    assert get(http + "api/events?format=json", token)[0] == 401
