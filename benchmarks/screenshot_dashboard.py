"""Draw docs/images/dashboard.png: the dashboard's view of a job that met trouble.

A broker with ``--http`` and three worker daemons run a word count of 24 map tasks and
4 reducers; one record fails on its first try (it is retried) and a worker process is
killed mid-task (its task runs again elsewhere). Headless Chromium (Selenium, Debian's
``chromium`` and ``chromium-driver``) watches: the jobs view and the cluster view while the
job runs (``dashboard-jobs.png``, ``dashboard-cluster.png`` beside ``--out``), then the
job's own view once it has ended (``--out``).

    python3 benchmarks/screenshot_dashboard.py [--out docs/images/dashboard.png]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from pymapreduce import Client, Job

READY = re.compile(r"pymapreduce broker ready: (\S+) .*; http (http://\S+/)\)")


class WordCount(Job):
    """Counts words; line 17 of split 5 fails on its first try, split 9 dawdles (so that
    its worker process can be killed mid-task); each map task takes a little while."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    def map(self, key, line):
        with open(self.log_path, "a") as f:
            f.write(f"{key} {os.getpid()}\n")
        if key == 5 * 100 + 17:
            with open(self.log_path) as f:
                if sum(1 for x in f if x.startswith(f"{key} ")) == 1:
                    raise ValueError(f"cannot parse line {key}: unbalanced quote")
        if key % 100 == 0:  # a task's first record: its work takes a while
            time.sleep(2.0 if key == 900 else 0.15 + (key // 100 % 5) * 0.08)
        for word in line.split():
            self.count("words")
            yield word, 1

    def reduce(self, word, counts):
        return sum(counts)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pymapreduce", *args,
                             "--log-level", "WARNING", "--parent-pid", str(os.getpid())],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def shoot(driver, path: str) -> None:
    driver.save_screenshot(path)
    print(f"{path}: {os.path.getsize(path)} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/dashboard.png")
    args = parser.parse_args()
    from selenium import webdriver

    procs = []
    work = tempfile.mkdtemp(prefix="pmr-shot-")
    driver = None
    try:
        broker = start(["broker", "--bind", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0",
                        "--heartbeat", "1", "--liveness", "60", "--backup-after", "off"])
        procs.append(broker)
        m = READY.search(broker.stdout.readline().decode())
        address, http = m.group(1), m.group(2)
        for _ in range(3):
            procs.append(start(["worker", "--connect", address, "--processes", "1"]))
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,1400", f"--user-data-dir={work}/chromium"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(
            executable_path=shutil.which("chromedriver")))
        log = os.path.join(work, "runs")
        records = [(s * 100 + i, " ".join(f"w{(s + i * j) % 40}" for j in range(8)))
                   for s in range(24) for i in range(40)]
        time.sleep(1.0)  # the workers register
        out_dir = os.path.dirname(args.out) or "."
        os.makedirs(out_dir, exist_ok=True)
        driver.set_window_size(1280, 640)
        driver.get(f"{http}#jobs")
        with Client(address) as client:
            handle = client.submit(WordCount(log), records, map_tasks=24, reducers=4)
            killed = None
            while killed is None:
                time.sleep(0.02)
                if os.path.exists(log):
                    with open(log) as f:
                        killed = next((int(p) for k, p in (x.split() for x in f) if k == "900"),
                                      None)
            time.sleep(0.6)
            os.kill(killed, signal.SIGKILL)  # mid-task: the task runs again elsewhere
            time.sleep(0.4)
            shoot(driver, os.path.join(out_dir, "dashboard-jobs.png"))
            driver.get(f"{http}#cluster")
            time.sleep(0.5)
            shoot(driver, os.path.join(out_dir, "dashboard-cluster.png"))
            handle.result(120)
            job = handle.job_id
        driver.set_window_size(1280, 1400)
        driver.get(f"{http}#job/{job}")
        deadline = time.monotonic() + 30
        while "succeeded" not in driver.find_element("id", "job-title").text:
            assert time.monotonic() < deadline, "the job's view did not load"
            time.sleep(0.2)
        time.sleep(1.0)
        shoot(driver, args.out)
    finally:
        if driver is not None:
            driver.quit()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
