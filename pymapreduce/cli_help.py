"""The words of ``pymapreduce --help`` and ``--version``: plain text, kept apart from the
parser so that its options and this prose can change independently."""

from __future__ import annotations

DESCRIPTION = """\
pymapreduce runs MapReduce jobs written in Python: on this machine with no set-up (an
embedded cluster of one worker process per core), or on a cluster of a broker and workers."""

EPILOG = """\
examples:
  pymapreduce run examples/wordcount.py:WordCount 'data/*.txt'   count words, print JSON lines
  pymapreduce run job.py:MyJob data/ --output out/               write part-NNNNN files
  pymapreduce broker --bind tcp://0.0.0.0:5555 --keys KEYDIR     start a cluster's broker
  pymapreduce worker --connect tcp://HOST:5555 --keys KEYDIR     start workers on a host
  pymapreduce run job.py:MyJob data/ --connect tcp://HOST:5555   run a job on the cluster
  pymapreduce status --connect tcp://HOST:5555                   its jobs and workers

`pymapreduce COMMAND --help` shows a command's options.
exit codes: 0 done; 1 the job failed (or the job's code raised); 2 bad usage or input;
3 no broker answered; 4 address in use; 5 --timeout passed; 6 the broker's state directory
is damaged or full; 70 a bug in pymapreduce; 77 a key was refused; 130 interrupted;
143 terminated (SIGTERM to run: its job is cancelled, as on Ctrl-C)."""


def version() -> str:
    """The installed distribution's version, else the package's ``__version__`` (a
    source tree used without ``pip install``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pymapreduce")
    except PackageNotFoundError:
        from . import __version__

        return __version__
