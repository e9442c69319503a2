"""Seeing inside a running broker: its event log, metrics, and read-only HTTP server.

``events.py`` records job and task events in bounded rings (no sockets, no threads of its
own); ``snapshot.py`` builds the immutable views the HTTP thread serves; ``metrics.py``
turns them into Prometheus metrics; ``http.py`` serves the JSON API, server-sent events and
``/metrics``; ``follow.py`` is the client side of ``pymapreduce events``.

Nothing is imported here: a client's command line reads ``cli.py`` without the broker's
event log.
"""
