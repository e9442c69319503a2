"""Timing defaults shared by the roles, named and explained once."""

from __future__ import annotations

# A peer that has sent nothing for LIVENESS seconds is taken for dead. Any message
# counts; idle peers send a heartbeat every HEARTBEAT_INTERVAL seconds.
HEARTBEAT_INTERVAL = 1.0
LIVENESS = 5.0

# How long a client waits for the broker to answer one request before it says the
# broker is unavailable (a job in progress is watched with heartbeats instead).
REQUEST_TIMEOUT = 10.0

# Set in every worker process: an embedded cluster refuses to start there (a job's module
# that runs a job at import, without `if __name__ == "__main__":`, would otherwise start a
# cluster in each worker that imports it, and so on).
WORKER_ENV = "PYMAPREDUCE_WORKER_PROCESS"
# A client's request unanswered after this much silence is sent again (a broker that
# restarted lost it); at once when the connection is made again. Requests are idempotent.
RESEND_AFTER = 2.5
