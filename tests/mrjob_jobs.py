"""mrjob jobs for tests/test_mrjob.py that use what mrjob's examples do not: counters,
other protocols, passthrough options read in a task, combiner hooks, order-sensitive
reducers after a reduce step, and reducer_init/reducer_final output."""

import json
import re

from mrjob.compat import jobconf_from_env
from mrjob.job import MRJob
from mrjob.protocol import RawProtocol, ReprProtocol
from mrjob.step import MRStep

WORD_RE = re.compile(r"[\w']+")


class MRLettersInOrder(MRJob):
    """Two steps, the second's reducer order-sensitive: it lists the values in the order
    they arrive, which is the order of the first step's reduce keys in mrjob."""

    INTERNAL_PROTOCOL = ReprProtocol
    OUTPUT_PROTOCOL = RawProtocol

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--min-len", type=int, default=1)

    def steps(self):
        return [MRStep(mapper_init=self.m_init, mapper=self.m_words,
                       combiner_init=self.c_init, combiner=self.c_sum,
                       combiner_final=self.c_final, reducer=self.r_sum),
                MRStep(mapper=self.m_by_letter, reducer=self.r_list)]

    def m_init(self):
        self.min_len = self.options.min_len
        self.path = None

    def m_words(self, _, line):
        self.increment_counter("lines", "read")
        if not line.strip():
            self.increment_counter("lines", "blank, or white space")
        for word in WORD_RE.findall(line):
            word = word.lower()
            if len(word) >= self.min_len:
                self.increment_counter("words", "kept")
                yield (word, jobconf_from_env("mapreduce.map.input.file")[-7:]), 1
            else:
                self.increment_counter("words", "short, dropped")

    def c_init(self):
        self.combined = 0

    def c_sum(self, key, counts):
        self.combined += 1
        yield key, sum(counts)

    def c_final(self):
        self.increment_counter("combiner", "groups", 0)
        return ()

    def r_sum(self, key, counts):
        word, where = key
        yield word, (sum(counts), where)

    def m_by_letter(self, word, count_where):
        yield word[0], [word, count_where[0], count_where[1]]

    def r_list(self, letter, values):
        values = list(values)
        yield letter, " ".join(f"{w}:{n}@{f}" for w, n, f in values[:50]) + f" ({len(values)})"


class MRSortedValues(MRJob):
    """SORT_VALUES: a reducer that yields its values in the order they arrive."""

    SORT_VALUES = True

    def mapper(self, _, line):
        words = line.split()
        if words:
            yield words[0][:1], [len(words), words[-1]]

    def reducer(self, first, values):
        yield first, list(values)


class MRTaskHooks(MRJob):
    """reducer_init / reducer_final output (one line per reduce task: the task count
    differs between runners, the lines' content does not)."""

    def mapper_init(self):
        yield "init", 1

    def mapper(self, _, line):
        yield "lines", 1

    def reducer_init(self):
        self.keys = 0
        yield "reducer", "init"

    def reducer(self, key, values):
        self.keys += 1
        yield key, sum(values)

    def reducer_final(self):
        yield "reducer", "final"


class MRReprInput(MRJob):
    """Input lines read by ReprProtocol: a line that is no Python literal fails its task."""

    INPUT_PROTOCOL = ReprProtocol

    def mapper(self, key, value):
        yield key, value


class MRFailingCommand(MRJob):
    """A mapper command that writes its input to its stderr and exits with status 3."""

    def steps(self):
        return [MRStep(mapper_cmd="sh -c 'cat >&2; exit 3'")]


class Folded(str):
    """A str equal to any other of the same lower case (as a dict key too)."""

    def __eq__(self, other):
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self):
        return hash(self.lower())


class MRGroupedByKey(MRJob):
    """A combiner over the adapter's map-side groups by key (adapters/mrjob/grouping.py):
    str and word-pair keys with int counts of one and of several digits, negative ones,
    and in lines holding "zebra" a pair key as a tuple and then as a list (the same JSON:
    one group) and a key 1 with the value True; a map task that meets one of those turns
    its groups into encoded ones from there on. What the combiner yields does not depend
    on how the input is split into tasks: the key's type as the combiner got it, the
    sum, and (SORT_VALUES) its first value, which is the least as text."""

    SORT_VALUES = True

    def mapper(self, _, line):
        words = WORD_RE.findall(line)
        for word in words:
            yield word.lower(), len(word) * (-1 if word.istitle() else 1)
        for first, second in zip(words, words[1:]):
            yield (first.lower(), second.lower()), 9 + len(words) % 4  # (10 < 9 as text)
        if "zebra" in words:
            yield ("pair", words[0]), 9
            yield ["pair", words[0]], 100
            yield 1, True

    def combiner(self, key, values):
        values = list(values)
        yield key, [type(key).__name__, sum(values), values[0] if self.SORT_VALUES else 0]

    def reducer(self, key, values):
        values = list(values)
        yield key, [sorted({v[0] for v in values}), sum(v[1] for v in values),
                    min((v[2] for v in values), key=json.dumps)]


class MRGroupedByKeyUnsorted(MRGroupedByKey):
    """The same without SORT_VALUES."""

    SORT_VALUES = False


class MRGroupedByKeyInOneTask(MRGroupedByKey):
    """For one map task run in a test's process: the combiner shows each group whole, and
    for some groups yields another key, and the key it got after changing it; a "zebra"
    line's last word comes first as a str that equals its lower case (other bytes)."""

    def mapper(self, _, line):
        words = WORD_RE.findall(line)
        if "zebra" in words:
            yield Folded(words[-1].upper()), 7
        yield from super().mapper(_, line)

    def combiner(self, key, values):
        values = list(values)
        yield key, [type(key).__name__, values]
        if values[0] == 12:
            yield [key, "again"], 1
            if type(key) is list:
                key.append("more")
                yield key, 2


class MRHugeCounts(MRJob):
    """Counts of more digits than int-to-text allows (mrjob fails writing them)."""

    def mapper(self, _, line):
        for word in line.split():
            yield word, 10 ** 5000
            yield word, -10 ** 5000

    def combiner(self, key, values):
        yield key, len(list(values))

    def reducer(self, key, values):
        yield key, sum(values)
