"""The web dashboard, driven in a real headless Chromium (Selenium) over a real broker.

A job with a record that fails once (its traceback carries HTML, which must show as text)
and a worker process killed mid-task: the page shows the job live, its progress reaching
100%, the failed and the killed attempts in the task timeline with their retries, and the
traceback with its input position. The page loads nothing from any other host, and a
broker with keys shows a "needs the token" page without it. Skipped, with the reason,
only where Chromium or its driver is not installed (.ci/run installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from importlib import resources

import pytest

from pymapreduce import Client, Job, run_sequential
from pymapreduce.patterns import security

from .conftest import ROOT, pmr, wait_workers
from .jobs import WordCount
from .test_observe import Troubled, get, get_json, start_broker, wait_for

HOSTILE = "<b id='injected'>bold</b><img src=x id='injected-img'>"
WAIT = 30.0  # seconds for the page to show what the broker already knows


class FailsOnce(Troubled):
    """Record 3 fails on its first try, with HTML in its message; record 11 dawdles, so
    its worker process can be killed mid-task. Every try is noted with its pid."""

    FIRST_TRY = "record 3 fails on its first try " + HOSTILE


class Recount(Job):
    """A second step: how many words have each count."""

    def map(self, word, n):
        yield n, 1

    def reduce(self, n, ones):
        return sum(ones)


class CountTwice(Job):
    def steps(self):
        return [WordCount(), Recount()]


class HeldRecount(Recount):
    """Recount whose map tasks wait until a file exists: the job stays in its step 2."""

    def __init__(self, path):
        self.path = path

    def map(self, word, n):
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield from super().map(word, n)


class CountTwiceHeld(Job):
    def __init__(self, path):
        self.path = path

    def steps(self):
        return [WordCount(), HeldRecount(self.path)]


def _chromium() -> tuple[str, str] | None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium with its performance log on; always quit at the end."""
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1300", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-breakpad", "--disable-crash-reporter",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # the driver installed with chromium, by path: Selenium must not fetch one
    service = webdriver.ChromeService(executable_path=found[1])
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver, check, timeout=WAIT, what="the page"):
    """Poll ``check(driver)`` until it is truthy; fail with the page's text if never."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check(driver)
        except Exception:  # the element is being re-rendered: look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            body = driver.find_element("tag name", "body").text[:3000]
            raise AssertionError(f"{what}: not shown within {timeout}s; the page says:\n{body}")
        time.sleep(0.1)


def css(driver, selector):
    return driver.find_elements("css selector", selector)


def requested_urls(driver, origin: str) -> list[str]:
    """Every URL a page loaded from ``origin`` asked for (Chrome's performance log, since
    the last call; Chromium's own pages, e.g. its start page, are not the dashboard's)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            if params.get("documentURL", "").startswith(origin) \
                    or params["request"]["url"].startswith(origin):
                urls.append(params["request"]["url"])
    return urls


def save_screenshot(driver, tmp_path, name: str) -> str:
    """Into the test's tmp dir (an artifact), and into $PYMAPREDUCE_SCREENSHOTS if set."""
    path = str(tmp_path / name)
    assert driver.save_screenshot(path)
    extra = os.environ.get("PYMAPREDUCE_SCREENSHOTS")
    if extra:
        os.makedirs(extra, exist_ok=True)
        shutil.copy(path, os.path.join(extra, name))
    return path


def test_the_dashboard_shows_a_job_its_progress_retries_kill_and_traceback(
        daemons, browser, tmp_path):
    address, http = start_broker(daemons, "--heartbeat", "1", "--liveness", "60",
                                 "--backup-after", "off")
    daemons.worker(address, 1)
    daemons.worker(address, 1)
    wait_workers(address, 2)
    browser.get(http + "#jobs")
    wait_until(browser, lambda d: "live" == d.find_element("id", "live").text,
               what="the live event stream")

    log = tmp_path / "runs"
    records = [(i, f"w{i % 5} x{i}") for i in range(12)]
    with Client(address) as client:
        handle = client.submit(FailsOnce(str(log)), records, map_tasks=12, reducers=2)
        job = handle.job_id
        # the job appears while it runs, without reloading the page
        wait_until(browser, lambda d: css(d, f"#jobs-live a.job-link[data-job='{job}']"),
                   what="the running job")
        running = None
        while running is None:
            lines = [x.split() for x in log.read_text().splitlines()] if log.exists() else []
            running = next((int(pid) for key, pid in lines if key == "11"), None)
            time.sleep(0.02)
        os.kill(running, signal.SIGKILL)  # a worker process, mid-task
        assert handle.result(60) == run_sequential(WordCount(), records)

    # finished: listed as such, then its own view (the list may be redrawn between
    # finding the link and clicking it: both are done again until the click lands)
    def open_finished(d):
        links = css(d, f"#jobs-recent a.job-link[data-job='{job}']")
        if links:
            links[0].click()
        return bool(links)
    wait_until(browser, open_finished, what="the finished job")
    wait_until(browser, lambda d: "succeeded" in d.find_element("id", "job-title").text,
               what="the job's state")
    for phase in ("map", "reduce"):
        wait_until(browser, lambda d, p=phase: css(
            d, f"#job-progress .bar[data-phase='{p}'][data-percent='100']"),
            what=f"{phase} progress at 100%")
    assert "12/12" in browser.find_element("id", "job-progress").text

    # the timeline: the failed attempt and its retry, the killed attempt and its re-run
    def attempt(task, outcome, number=None):
        sel = f"#timeline-svg g.attempt[data-task='{task}'][data-outcome='{outcome}']"
        return css(browser, sel + (f"[data-attempt='{number}']" if number else ""))
    wait_until(browser, lambda d: attempt("map-11", "killed", 1), what="the killed attempt")
    assert attempt("map-11", "done", 2), "the killed task's second attempt"
    assert attempt("map-3", "failed", 1) and attempt("map-3", "done", 2), "the retry"
    ran = attempt("map-3", "failed", 1) + attempt("map-3", "done", 2)  # their reports said
    assert all(g.get_attribute("data-queued") is not None for g in ran), "when each ran"
    # the killed attempt was never reported: drawn from its hand-out, and marked so
    assert attempt("map-11", "killed", 1)[0].get_attribute("data-run-from") == "hand-out"
    assert len(css(browser, "#timeline-svg g.attempt")) == 16  # 14 tasks, 2 re-runs
    # rows are laid out by the runs: a worker process's reported attempts share one row,
    # however many it held at once (12 map tasks over 2 processes, credit 32)
    rows: dict = {}
    for g in css(browser, "#timeline-svg g.attempt[data-run-from='report']"):
        y = g.find_element("css selector", "rect.ran").get_attribute("y")
        rows.setdefault(g.get_attribute("data-worker"), set()).add(y)
    assert rows and all(len(ys) == 1 for ys in rows.values()), rows
    # the reduce phase's records in: the map output records its tasks merged
    flow = {r.find_elements("css selector", "td")[0].text:
            [td.text for td in r.find_elements("css selector", "td")[1:]]
            for r in css(browser, "#job-flow tbody tr")}
    assert flow["map"][0] == "12" and flow["reduce"][0].replace(",", "").isdigit(), flow
    troubles = browser.find_element("id", "job-troubles").text
    assert "map-11" in troubles and "map-3" in troubles
    outcomes = [(r.find_elements("css selector", "td")[0].text,
                 r.find_elements("css selector", "td")[3].text)
                for r in css(browser, "#job-troubles tbody tr")]
    assert ("map-11", "lost with its worker") in outcomes and ("map-3", "failed") in outcomes
    assert not any(o == "killed" for _, o in outcomes), outcomes
    facts = browser.find_element("id", "job-facts").text
    assert "1\nfailed attempts" in facts and "1\nattempts lost with their worker" in facts

    # the failure: its traceback readable as text (its HTML not rendered), its position
    failure = browser.find_element("css selector", "#job-failures details[data-task='map-3']")
    traceback = failure.find_element("css selector", "pre.traceback").text
    assert "Traceback (most recent call last)" in traceback
    assert "record 3 fails on its first try " + HOSTILE in traceback
    assert not css(browser, "#injected") and not css(browser, "#injected-img")
    assert "split 3" in failure.text and "record 0" in failure.text
    lost = browser.find_element("css selector", "#job-failures details[data-task='map-11']")
    assert "was lost" in lost.text and "lost with its worker" in lost.text
    assert lost.get_attribute("data-outcome") == "lost" and ": failed:" not in lost.text
    assert "not a failure of its own" in lost.text  # (the engine counted it: it was killed)
    assert "map-11" in browser.find_element("id", "job-slowest").text

    browser.execute_script("window.scrollTo(0, 0)")
    shot = save_screenshot(browser, tmp_path, "dashboard.png")
    assert os.path.getsize(shot) > 10_000

    # a broken event stream reconnects from the last event the page saw
    urls = requested_urls(browser, http)  # (what was asked so far)
    cursor = browser.execute_script("state.source.onerror(); return state.cursor")
    assert cursor > 0
    wait_until(browser, lambda d: "live" == d.find_element("id", "live").text,
               what="the reconnected event stream")
    assert f"{http}api/events?since={cursor}" in requested_urls(browser, http)

    # the history: the finished job; the cluster: the workers (one lost a process)
    browser.get(http + "#history")
    wait_until(browser, lambda d: css(d, f"#history a.job-link[data-job='{job}']"),
               what="the job in the history")
    assert "succeeded" in browser.find_element("id", "history").text
    browser.get(http + "#cluster")
    wait_until(browser, lambda d: len(css(d, "#workers tbody tr")) >= 2, what="the workers")
    assert "alive" in browser.find_element("id", "workers").text
    # the killed process stays listed, as lost, with why and the attempt it lost
    # (the rows' texts, read at once: the view is redrawn as the cluster changes, and an
    # element found before a redraw is stale after it)
    gone = wait_until(browser, lambda d: [r.text for r in css(d, "#gone-workers tbody tr")],
                      what="the lost worker")
    assert len(gone) == 1 and f":{running} " in gone[0] + " ", gone[0]
    # (why, as the broker learnt it: its supervisor saw the process die, or its connection
    # closed, or its heartbeats stopped)
    assert any(why in gone[0] for why in ("killed by SIGKILL", "closed", "heartbeat")), \
        gone[0]

    # nothing was asked of any host but the broker (the page, its script, the API)
    urls += requested_urls(browser, http)
    assert any(u.startswith(http + "api/cluster") for u in urls)
    assert any(u.startswith(http + "static/dashboard.js") for u in urls)
    elsewhere = [u for u in urls if not u.startswith(http) and not u.startswith("data:")]
    assert elsewhere == []


def test_the_page_refers_to_no_other_host():
    """The shipped files name no absolute URL they would load (no CDN, no fonts)."""
    static = resources.files("pymapreduce.observe").joinpath("static")
    names = sorted(p.name for p in static.iterdir())
    assert {"index.html", "dashboard.js", "dashboard.css"} <= set(names)
    for name in names:
        text = static.joinpath(name).read_text()
        # the SVG namespace is a name, not a request
        text = text.replace('"http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text and "innerHTML" not in text, name


def test_with_keys_the_page_needs_the_token(daemons, browser, tmp_path):
    keys = security.cluster_keys(str(tmp_path / "keys"))
    address, http = start_broker(daemons, "--keys", keys)
    daemons.worker(address, 1, "--keys", keys)
    with Client(address, keys=keys) as client:
        handle = client.submit(WordCount(), [(i, f"w{i % 3}") for i in range(30)], map_tasks=3)
        handle.result(60)
        job = handle.job_id

    browser.get(http)
    heading = wait_until(browser, lambda d: css(d, "#needs-token"), what="the token message")
    assert "needs the broker's token" in heading[0].text
    assert "dashboard-url" in browser.page_source
    assert job not in browser.page_source and "WordCount" not in browser.page_source
    assert get(http + "static/dashboard.js")[0] == 401  # nor the page's own files
    browser.get(http + "?token=" + "x" * 32 + "#jobs")  # a wrong token: the same
    wait_until(browser, lambda d: css(d, "#needs-token"), what="the token message")
    assert job not in browser.page_source

    url = subprocess.run(pmr("dashboard-url", http, "--keys", keys), capture_output=True,
                         timeout=30, cwd=ROOT).stdout.decode().strip()
    assert "?token=" in url
    browser.get(url + "#jobs")
    wait_until(browser, lambda d: css(d, f"a.job-link[data-job='{job}']"), what="the job")
    wait_until(browser, lambda d: "live" == d.find_element("id", "live").text,
               what="the event stream with the token")
    assert not css(browser, "#needs-token")
    assert browser.find_element("id", "banner").get_attribute("hidden") is not None
    # read, the token leaves the address bar (history, screens, what is copied); the page
    # goes on with the cookie its first answer set, also when loaded again
    assert "token" not in browser.current_url and browser.current_url.endswith("#jobs")
    browser.refresh()
    wait_until(browser, lambda d: css(d, f"a.job-link[data-job='{job}']"),
               what="the job, after a reload without the token in the URL")
    assert not css(browser, "#needs-token")


def test_a_phone_sized_window_an_unknown_job_and_a_clean_console(daemons, browser, tmp_path):
    """At 390 px wide every view fits the window (wide tables scroll in their own box; the
    header wraps, its `live` badge in view) and ids are not broken at their hyphens; the
    console has no error (no favicon 404); a job of tasks under a millisecond does not say
    "0 ms"; the events feed names the phase; a job the broker does not hold shows nothing
    of the job opened before it."""
    address, http = start_broker(daemons)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(WordCount(), [(i, f"w{i % 3}") for i in range(30)],
                               map_tasks=3, reducers=2)
        handle.result(60)
        job = handle.job_id
    browser.set_window_size(390, 844)

    def fits(d):
        return d.execute_script("return document.documentElement.scrollWidth <= innerWidth")

    browser.get(http + "#jobs")
    link = wait_until(browser, lambda d: css(d, f"#jobs-recent a.job-link[data-job='{job}']"),
                      what="the finished job")[0]
    wait_until(browser, lambda d: "live" == d.find_element("id", "live").text, what="live")
    live = browser.find_element("id", "live")
    assert live.is_displayed() and browser.execute_script(
        "return arguments[0].getBoundingClientRect().right <= innerWidth", live)
    assert fits(browser), "the jobs view is wider than the window"
    one_line = "return arguments[0].getClientRects().length === 1 && " \
               "arguments[0].getBoundingClientRect().height < 24"
    assert browser.execute_script(one_line, link.find_element("xpath", "../div[@class='muted id']"))
    wait_until(browser, lambda d: "phase reduce" in d.find_element("id", "events-feed").text,
               what="the phase event with its phase")
    assert browser.execute_script("return [secs(0.0004), secs(0.00001), secs(0)]") == \
        ["0.4 ms", "< 0.1 ms", "0 s"]

    for view, ready in (("cluster", "#workers tbody tr"), ("history", "#history tbody tr"),
                        (f"job/{job}", "#timeline-svg g.attempt")):
        browser.get(http + "#" + view)
        wait_until(browser, lambda d, r=ready: css(d, r), what=f"the {view} view")
        assert fits(browser), f"the {view} view is wider than the window"
    assert "map-0" in browser.find_element("id", "job-slowest").text
    assert " 0 ms" not in browser.find_element("id", "job-slowest").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors

    # another job's id, one the broker does not hold: the job shown before goes
    browser.execute_script("location.hash = '#job/Gone-000000000000'")
    wait_until(browser, lambda d: "No job Gone-000000000000" in d.find_element("id", "banner").text,
               what="the unknown job's message")
    assert not browser.find_element("id", "job-body").is_displayed()
    assert not css(browser, "#timeline-svg") and not css(browser, "#job-facts div")
    assert "Gone-000000000000" in browser.find_element("id", "job-title").text


def test_a_multi_step_jobs_tasks_name_their_step(daemons, browser):
    """Each step of a multi-step job has its own map-0: the timeline, its hover text and
    the tables name the step with the task."""
    address, http = start_broker(daemons)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(CountTwice(), [(i, f"w{i % 3} w{i % 5}") for i in range(30)],
                               map_tasks=3, reducers=2)
        handle.result(60)
        job = handle.job_id
    browser.get(http + "#job/" + job)
    first = wait_until(browser, lambda d: css(
        d, "#timeline-svg g.attempt[data-task='map-0'][data-step='1']"), what="step 1's map-0")
    second = css(browser, "#timeline-svg g.attempt[data-task='map-0'][data-step='2']")
    assert second, "step 2's map-0"
    def title(g):
        return g.find_element("tag name", "title").get_attribute("textContent")
    assert title(first[0]).startswith("map-0 (step 1) attempt 1")
    assert title(second[0]).startswith("map-0 (step 2) attempt 1")
    # a bar wide enough for its label says "s2 map-0" (tasks this small mostly are not)
    labels = browser.execute_script(
        "return [...document.querySelectorAll('#timeline-svg g.attempt text')]"
        ".map(t => t.textContent)")
    assert all(re.match(r"^(\S+ )?s[12] (map|reduce)-\d", t) for t in labels), labels
    assert "(step " in browser.find_element("id", "job-slowest").text


def test_a_queued_then_cancelled_job_is_not_called_failed(daemons, browser):
    """A job that waits for a tag no worker has is counted as running or queued (not as
    running) in the header and on the cluster view; cancelled, its view says it was
    cancelled (not that it failed), and claims no task succeeded."""
    address, http = start_broker(daemons)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(WordCount(), [(i, f"w{i}") for i in range(8)], map_tasks=2,
                               requires=["gpu"])
        job = handle.job_id
        browser.get(http + "#cluster")
        wait_until(browser, lambda d: "1 running or queued" in d.find_element("id", "broker").text,
                   what="the queued job in the header")
        assert "jobs running or queued" in browser.find_element("id", "broker-facts").text
        handle.cancel()
        browser.get(http + "#job/" + job)
        wait_until(browser, lambda d: "cancelled" in d.find_element("id", "job-title").text,
                   what="the cancelled job")
    box = browser.find_element("id", "job-error")
    assert box.is_displayed() and box.text.startswith("The job was cancelled: ")
    assert "failed" not in box.text
    troubles = browser.find_element("id", "job-troubles").text
    assert "succeeded" not in troubles and "No retry, failure or lost attempt." in troubles


def test_a_multi_step_job_s_progress_says_its_step_and_never_goes_back(
        daemons, browser, tmp_path):
    """A job of two steps in its step 2: its phases' bars are step 2's tasks (as
    status() gives them, 0% of step 2's maps), so the page says "step 2 of 2" and shows
    the job's progress over its steps at 50% or more (it was at 100% of step 1), on the
    jobs list and on the job's page; done, at 100%."""
    address, http = start_broker(daemons)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    go = tmp_path / "go"
    with Client(address) as client:
        handle = client.submit(CountTwiceHeld(str(go)), [(i, f"w{i % 3} w{i % 5}")
                                                        for i in range(30)],
                               map_tasks=3, reducers=2)
        job = handle.job_id
        wait_for(lambda: get_json(f"{http}api/jobs/{job}")["job"]["step"] == [2, 2])
        browser.get(http + "#jobs")
        bar = wait_until(browser, lambda d: css(
            d, f"#jobs-live tr:has(a[data-job='{job}']) .bar.steps[data-step='2']"),
            what="the job's steps bar")[0]
        assert int(bar.get_attribute("data-percent")) >= 50, bar.get_attribute("data-percent")
        assert "step 2 of 2" in bar.text
        row = css(browser, f"#jobs-live tr:has(a[data-job='{job}'])")[0]
        assert css(row, ".bar.map[data-step='2']") and "s2 " in css(row, ".bar.map")[0].text

        browser.get(http + "#job/" + job)
        bar = wait_until(browser, lambda d: css(d, "#job-progress .bar.steps[data-step='2']"),
                         what="the job page's steps bar")[0]
        assert int(bar.get_attribute("data-percent")) >= 50
        assert "step 2 of 2" in browser.find_element("id", "job-facts").text
        assert "of step 2" in browser.find_element("id", "job-progress").text
        go.write_text("")
        handle.result(60)
    wait_until(browser, lambda d: css(d, "#job-progress .bar.steps[data-percent='100']"),
               what="the steps bar at 100%")


# attempts of one worker process, back to back: narrow failed, lost and retried ones
# right before wide ones (their labels cannot go beside them), and one at the right edge
TIGHT = [
    # task, attempt, outcome, start, run, end
    ("map-3", 1, "failed", 0.0, 0.0, 0.02),
    ("map-4", 1, "done", 0.0, 0.02, 1.0),
    ("map-3", 2, "done", 1.0, 1.0, 1.01),
    ("map-5", 1, "failed", 1.0, 1.01, 1.03),
    ("map-6", 1, "done", 1.0, 1.03, 2.0),
    ("map-7", 1, "failed", 2.0, 2.0, 2.01),
    ("map-8", 1, "killed", 0.5, None, 0.52),
    ("map-9", 1, "done", 0.52, 0.52, 2.01),
]


def test_timeline_labels_never_lie_on_another_bar(daemons, browser):
    """Labels of narrow bars (a failed attempt's "✕ map-3", a retry's) go beside their
    bar only where their row is free, else inside it cut to fit (or the mark alone), so
    none lies on another attempt's bar; the hover text names each in full."""
    address, http = start_broker(daemons)
    daemons.worker(address, 1)
    wait_workers(address, 1)
    with Client(address) as client:
        handle = client.submit(WordCount(), [(i, f"w{i}") for i in range(4)], map_tasks=2)
        handle.result(60)
        job = handle.job_id
    browser.get(http + "#job/" + job)
    wait_until(browser, lambda d: css(d, "#timeline-svg g.attempt"), what="the timeline")
    t0 = 1_800_000_000.0
    attempts = [{"task": task, "kind": "map", "index": int(task[4:]), "step": 1,
                 "attempt": number, "worker": "vm:1", "start": t0 + start,
                 "run": None if run is None else t0 + run,
                 "run_end": None if run is None else t0 + end,
                 "run_from": "hand-out" if run is None else "report", "end": t0 + end,
                 "outcome": outcome, "backup": False, "note": "boom" if outcome != "done" else ""}
                for task, number, outcome, start, run, end in TIGHT]
    crossed = browser.execute_script("""
        renderTimeline(arguments[0], arguments[1], false);
        const box = n => n.getBoundingClientRect();
        const meets = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 &&
                                a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
        const groups = [...document.querySelectorAll('#timeline-svg g.attempt')];
        const out = [];
        for (const g of groups) for (const t of g.querySelectorAll('text')) {
          for (const other of groups) if (other !== g)
            for (const r of other.querySelectorAll('rect.ran, rect.out'))
              if (meets(box(t), box(r))) out.push(t.textContent + ' on ' + other.dataset.task);
        }
        return out;""", attempts, t0 + 3)
    assert crossed == []
    groups = css(browser, "#timeline-svg g.attempt")
    assert len(groups) == len(TIGHT)
    titles = [g.find_element("tag name", "title").get_attribute("textContent") for g in groups]
    assert any(t.startswith("map-3 attempt 1 on vm:1: failed") for t in titles), titles
    texts = [t.text for t in css(browser, "#timeline-svg g.attempt text")]
    assert "map-4" in texts and "map-6" in texts  # (wide bars keep their whole label)
