"""The one DOT quoting function, checked against Graphviz's own parser on hostile names."""

from __future__ import annotations

import json
import re
import subprocess

import graphviz
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz import Graph
from gradviz.draw.dot import quote
from gradviz.graph.model import Node, SavedTensor

# Quotes, backslashes (alone, doubled, at the end), escString look-alikes, line breaks,
# HTML-like brackets, DOT keywords and ports, unicode beyond the BMP.
HOSTILE = st.text(
    alphabet=st.sampled_from(list('"\\\n\r<>{}[];:=,. -_aZ09nlrN&é中😀\t')) | st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\0"
    ),
    max_size=24,
) | st.sampled_from(["node", "Graph", "strict", "<b>x</b>", "<<b>x</b>>", "a\\", '\\"', "-1.5",
                    "a\n", "7\n"])


def _parse(source: str) -> dict:
    done = subprocess.run(
        ["dot", "-Tjson0"], input=source.encode(), capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout, strict=False)  # dot writes control characters raw


def _unescape(label: str) -> str:
    # What a label means once Graphviz reads its escString: \\ is one backslash, \n a break.
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), label)


def _expected(text: str) -> str:
    return text.replace("\r", "\n")  # each \r a break: joined lines stay apart


@settings(max_examples=60)
@given(st.lists(HOSTILE, min_size=1, max_size=6))
def test_quote_reads_back_through_dot(texts):
    body = "".join(
        f"  {quote(f'id {i} {t}')} [label={quote(t)} tooltip={quote(t)}]\n"
        for i, t in enumerate(texts)
    )
    objects = _parse(f"digraph {{\n{body}}}\n")["objects"]
    assert len(objects) == len(texts)  # no statement swallowed another, no id merged
    for obj, text in zip(objects, texts, strict=True):
        assert _unescape(obj["label"]) == _expected(text)
        assert _unescape(obj["name"]) == _expected(f"id {objects.index(obj)} {text}")


def test_quote_keeps_plain_names_bare_and_never_makes_html():
    assert quote("n12") == "n12" and quote("-4.2") == "-4.2" and quote("Helvetica") == "Helvetica"
    assert quote("node") == '"node"' and quote("") == '""'
    # A final line break is not part of a bare ID ("$" in a regex matches before one).
    assert quote("a\n") == '"a\\n"' and quote("12\n") == '"12\\n"'
    # A line ending in \r, joined to the next by \n, keeps both breaks (found by the test below).
    assert quote("\n".join(["a\r", "b"])) == '"a\\n\\nb"'
    assert quote("<b>x</b>") == '"<b>x</b>"'  # the graphviz package would pass it as HTML
    for text in ("spam eggs", "#eeeeee", "rounded,filled", "a:b"):
        assert quote(text) == graphviz.quoting.quote(text)


@settings(max_examples=25)
@given(
    labels=st.lists(HOSTILE, min_size=2, max_size=5),
    module=st.lists(HOSTILE.filter(lambda s: "." not in s and s), min_size=1, max_size=3),
)
def test_whole_drawing_of_hostile_graph_parses_and_reads_back(labels, module):
    path = ".".join(module)
    nodes = [Node("n0", "output", labels[0], (2,), "float32")]
    nodes += [
        Node(f"n{i}", "op", text, (2,), "float32", path, (SavedTensor(text, (2,), "float32"),),
             "XBackward0", ((text, text),))
        for i, text in enumerate(labels[1:], start=1)
    ]
    edges = tuple((f"n{i}", f"n{i - 1}") for i in range(1, len(nodes)))
    graph = Graph(tuple(nodes), edges, ((path, labels[-1]),))
    dot = graph.to_dot(show_saved=True, show_attrs=True, budget=None, title=labels[0])
    parsed = _parse(dot.source)
    by_name = {o["name"]: o for o in parsed["objects"] if "_gvid" in o and "nodes" not in o}
    for node in nodes:
        first = _unescape(by_name[node.id]["label"]).split("\n")
        assert first[: len(_expected(node.label).split("\n"))] == _expected(node.label).split("\n")
    clusters = {_unescape(o["name"]): o for o in parsed["objects"] if "nodes" in o}
    innermost = clusters[_expected(f"cluster_{path}")]
    assert _unescape(innermost["label"]) == _expected(f"{path}: {labels[-1]}")
    assert {by_name[n.id]["_gvid"] for n in nodes[1:]} <= set(innermost["nodes"])
    assert len(parsed.get("edges", [])) >= len(edges)
