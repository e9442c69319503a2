"""mrjob's inline runner, for comparison with pymapreduce's adapter (run as a script).

``python mrjob_reference.py [--sorted-parts] MODULE:CLASS [JOB ARGS...] INPUTS...``
writes the job's output to stdout, as ``python mr_job.py INPUTS`` does, and its counters
as JSON to stderr's last line. mrjob's runner reads a step's part files in the order the
file system lists them (os.walk, glob); ``--sorted-parts`` makes it read them in name
order, the order of their keys, which is the order pymapreduce's adapter writes.
"""

import importlib
import json
import sys

from mrjob.fs.local import LocalFilesystem


def main(argv):
    if argv[0] == "--sorted-parts":
        argv = argv[1:]
        listing = LocalFilesystem.ls
        LocalFilesystem.ls = lambda self, pattern: iter(sorted(listing(self, pattern)))
    module, _, name = argv[0].partition(":")
    job = getattr(importlib.import_module(module), name)(["--no-conf", *argv[1:]])
    with job.make_runner() as runner:
        runner.run()
        for chunk in runner.cat_output():
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        counters = {}
        for step in runner.counters():
            for group, names in step.items():
                for counter, n in names.items():
                    counters.setdefault(group, {}).setdefault(counter, 0)
                    counters[group][counter] += n
        print(json.dumps(counters), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
