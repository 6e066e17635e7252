"""Two explorer sessions on threads, as two browser tabs of one Streamlit process: what
one opens never shows in the other's drawing, sharing a graph or not."""

from __future__ import annotations

import threading

from gradviz import explorer as ex
from gradviz import to_dot, trace_example


def _session(graph, opens: list[str], rounds: int, out: list[str], errors: list[BaseException]):
    try:
        for _ in range(rounds):
            state = ex.default_state(graph)
            for target in opens:
                state = ex.expand(state, target)
            out.append(to_dot(graph, state).source)
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


def _alone(graph, opens: list[str]) -> str:
    state = ex.default_state(graph)
    for target in opens:
        state = ex.expand(state, target)
    return to_dot(graph, state).source


def test_two_sessions_on_threads_see_only_their_own_view():
    shared = trace_example("transformer-24")
    other = trace_example("resnet50")
    plans = [
        (shared, ["roll/layers.0..layers.23"]),  # session A opens the rolled stack
        (shared, []),  # session B keeps the first view of the same graph
        (other, []),
    ]
    expected = [_alone(g, opens) for g, opens in plans]
    assert expected[0] != expected[1]  # the sessions really ask for different pictures
    outs: list[list[str]] = [[] for _ in plans]
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_session, args=(g, opens, 6, out, errors))
        for (g, opens), out in zip(plans, outs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    for out, want in zip(outs, expected, strict=True):
        assert out and all(dot == want for dot in out)


def test_derived_facts_live_on_the_graph_and_go_with_it():
    a = trace_example("transformer-2")
    b = trace_example("transformer-2")
    assert a == b and a is not b
    ex.plan(a)
    # The memo is per object, not per equal value (a dict keyed by id() mixed them up).
    assert "assignments" in a._memo and "assignments" not in b._memo
    import pickle

    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and "assignments" not in copy._memo
