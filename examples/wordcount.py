"""Word count, the MapReduce paper's first example.

    pymapreduce run examples/wordcount.py:WordCount 'data/*.txt'
"""

from pymapreduce import Job


class WordCount(Job):
    """Counts each whitespace-separated word of the input lines."""

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def combine(self, word, counts):
        return sum(counts)

    def reduce(self, word, counts):
        return sum(counts)


if __name__ == "__main__":
    import sys

    from pymapreduce import read_text
    from pymapreduce.cli_output import quiet_when_stdout_closes

    counts = WordCount().run(read_text(sys.argv[1:] or [__file__]))
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        for word, n in sorted(counts.items(), key=lambda kv: -kv[1])[:20]:
            print(f"{n:8d}  {word}")
