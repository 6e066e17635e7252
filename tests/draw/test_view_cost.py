"""The default view stays quick for `dot` whatever the topology: its layout cost (nodes plus
edge segments) is bounded, not only its node count, so dense concatenations and many skip
edges get collapsed or cut instead of taking minutes."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz import capture, trace
from gradviz.draw.cost import COST_BUDGET, item_edges, layout_cost
from gradviz.draw.plan import plan, plan_view
from gradviz.draw.state import assign, default_state


def test_cost_counts_nodes_and_every_rank_an_edge_crosses():
    chain = [("a", "b", 1), ("b", "c", 1), ("c", "d", 1)]
    assert layout_cost("abcd", chain) == 4 + 3
    # a skip edge a → d crosses three ranks: three more segments for dot to place.
    assert layout_cost("abcd", [*chain, ("a", "d", 1)]) == 4 + 3 + 3


@st.composite
def dense_dags(draw):
    """Random DAGs of sums: node i adds a random subset of the earlier ones (densenet-like
    when the subsets are large)."""
    n = draw(st.integers(2, 120))
    parents = [draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=min(i, 40),
                             unique=True)) for i in range(1, n)]
    return parents


def _graph(parents):
    x = torch.ones(2, requires_grad=True)
    values = [x * 1.5]
    for ps in parents:
        values.append(torch.stack([values[p] for p in ps]).sum(0) * 0.5)
    return trace(values[-1].sum())


@settings(max_examples=30, deadline=None)
@given(dense_dags(), st.integers(20, 500))
def test_default_views_of_any_dag_stay_within_the_layout_cost(parents, budget):
    graph = _graph(parents)
    view = plan_view(graph, budget=budget)
    ids = [i.id for i in view.items]
    fits = layout_cost(ids, view.edges) <= COST_BUDGET
    # Cut down to the smallest view the planner makes, a view may still cost more only
    # when a handful of nodes carry that many edges.
    assert fits or len(view.items) <= 17
    assert len(view.items) <= budget
    # Every graph node is drawn by exactly one item.
    assert sorted(n.id for n in graph.nodes) == sorted(m for i in view.items for m in i.members)
    if not fits or len(view.items) < len(graph.nodes):
        assert view.notes  # the reader is told the picture is not everything


class Dense(torch.nn.Module):
    """A dense block: each layer sees the concatenation of every earlier output."""

    def __init__(self, layers: int, width: int = 4) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(width * (i + 1), width) for i in range(layers)
        )

    def forward(self, x):
        feats = [x]
        for layer in self.layers:
            feats.append(torch.relu(layer(torch.cat(feats, 1))))
        return feats[-1]


def test_a_dense_block_collapses_to_fit_the_cost_in_both_planners():
    model = torch.nn.Sequential(Dense(40), Dense(40))
    with capture(model):
        loss = model(torch.randn(2, 4)).sum()
    graph = trace(loss, model=model)
    full = layout_cost([n.id for n in graph.nodes], item_edges(graph, {n.id: n.id for n in
                                                                      graph.nodes}))
    # Under the node budget, yet far over the cost: a count-only planner drew it all.
    assert len(graph.nodes) < 500 and full > COST_BUDGET
    view = plan_view(graph)
    assert layout_cost([i.id for i in view.items], view.edges) <= COST_BUDGET
    item_of, items = assign(graph, default_state(graph))
    assert layout_cost(items, item_edges(graph, item_of)) <= COST_BUDGET
    assert len(plan(graph).items) == len(items)
