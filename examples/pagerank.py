"""PageRank by iteration: a multi-step job, each step one iteration, inside the cluster.

    python examples/pagerank.py [NODES] [ITERATIONS]

The example makes a random directed graph (seeded), ranks its nodes with ``ITERATIONS``
MapReduce steps (the output of one step is the input of the next, without coming back to
the client), computes the same ranks directly in this process, and checks that the two
agree. Input records are ``(node, (rank, [links...]))``; each step's map sends a node's
rank in equal shares along its links (and passes the links on), and its reduce adds the
shares up with the damping factor.
"""

from __future__ import annotations

import random

from pymapreduce import Job

DAMPING = 0.85


class Iteration(Job):
    """One PageRank iteration over ``(node, (rank, links))`` records."""

    def __init__(self, nodes: int, damping: float = DAMPING) -> None:
        self.nodes = nodes
        self.damping = damping

    def map(self, node, value):
        rank, links = value
        yield node, ("links", links)
        for target in links:
            yield target, ("share", rank / len(links))

    def reduce(self, node, values):
        links: list = []
        total = 0.0
        for kind, value in values:
            if kind == "links":
                links = value
            else:
                total += value
        return (1 - self.damping) / self.nodes + self.damping * total, links


class PageRank(Job):
    """``iterations`` steps of :class:`Iteration`."""

    def __init__(self, nodes: int, iterations: int = 10) -> None:
        self.nodes = nodes
        self.iterations = iterations

    def steps(self):
        return [Iteration(self.nodes) for _ in range(self.iterations)]


def make_graph(nodes: int, seed: int = 7) -> dict[int, list[int]]:
    """A random graph in which every node links to 1 to 5 others (no dangling nodes)."""
    rng = random.Random(seed)
    return {n: sorted(rng.sample([m for m in range(nodes) if m != n], rng.randint(1, 5)))
            for n in range(nodes)}


def initial_records(graph: dict[int, list[int]]) -> list[tuple[int, tuple]]:
    return [(n, (1.0 / len(graph), links)) for n, links in graph.items()]


def direct_pagerank(graph: dict[int, list[int]], iterations: int,
                    damping: float = DAMPING) -> dict[int, float]:
    """The same iterations computed directly, as the reference."""
    n = len(graph)
    rank = {node: 1.0 / n for node in graph}
    for _ in range(iterations):
        incoming = {node: 0.0 for node in graph}
        for node, links in graph.items():
            for target in links:
                incoming[target] += rank[node] / len(links)
        rank = {node: (1 - damping) / n + damping * incoming[node] for node in graph}
    return rank


def check(result: dict, graph: dict[int, list[int]], iterations: int) -> float:
    """The largest difference between the job's ranks and the direct ones (asserts it
    is within rounding)."""
    expected = direct_pagerank(graph, iterations)
    assert set(result) == set(expected), "the job lost or invented nodes"
    worst = max(abs(result[n][0] - expected[n]) for n in expected)
    assert worst < 1e-12, f"ranks differ by {worst}"
    return worst


if __name__ == "__main__":
    import sys

    from pymapreduce.cli_output import quiet_when_stdout_closes

    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    graph = make_graph(nodes)
    result = PageRank(nodes, iterations).run(initial_records(graph))
    worst = check(result, graph, iterations)
    top = sorted(result.items(), key=lambda kv: -kv[1][0])[:10]
    with quiet_when_stdout_closes():  # (its reader gone, `| head`: no traceback)
        print(f"{nodes} nodes, {iterations} iterations; largest difference from the direct "
              f"computation: {worst:.2e}")
        for node, (rank, _) in top:
            print(f"{node:6d}  {rank:.6f}")
