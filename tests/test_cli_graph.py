"""`pol graph`: the compiled decision tree as DOT and Mermaid, through the real command.

Golden outputs live in `tests/golden/cli/graph/<set>_<policy>.<dot|mmd>`; `small/` holds a
policy set made to exercise first_match, a fan-out, values sharing a subtree, a dispatch
too wide to draw whole, and text that needs escaping. After an intended change,
regenerate and review the diff (and the README block, which a test keeps equal):

    UPDATE_GOLDEN=1 /tmp/v/bin/python -m pytest tests/test_cli_graph.py
"""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT, UPDATE_GOLDEN, assert_golden, pol

GOLDEN = ROOT / "tests" / "golden" / "cli" / "graph"
SETS = {"shipped": "policies", "small": "tests/golden/cli/graph/small"}
DRAWN = [("shipped", "human_smuggling"), ("small", "triage"), ("small", "wide")]
SUFFIX = {"dot": "dot", "mermaid": "mmd"}




def graph(case: str, policy: str, fmt: str) -> str:
    result = pol("graph", SETS[case], "--policy", policy, "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


# ---- structure checks: a small reader for each syntax ---------------------------------------

_DOT_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|->|[{}\[\];=,]|[A-Za-z_][A-Za-z0-9_]*|\S')


def check_dot(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    """Tokenise DOT (quoted strings whole): a `digraph` with balanced braces and brackets,
    every statement ended, and every edge endpoint declared as a node. Returns nodes and edges."""
    tokens = _DOT_TOKEN.findall(text)
    assert tokens[0] == "digraph" and tokens[2] == "{" and tokens[-1] == "}", tokens[:3]
    depth = 0
    for t in tokens:
        depth += {"{": 1, "}": -1, "[": 1, "]": -1}.get(t, 0)
        assert depth >= 0
    assert depth == 0
    for t in tokens:
        if t.startswith('"'):
            body = t[1:-1]
            assert not re.search(r'(?<!\\)(\\\\)*"', body), f"unescaped quote in {t}"
    statements: list[list[str]] = [[]]
    for t in tokens[3:-1]:
        if t == ";":
            statements.append([])
        else:
            statements[-1].append(t)
    assert statements[-1] == [], "the last statement is not ended by `;`"
    nodes: set[str] = set()
    edges: list[tuple[str, str]] = []
    for parts in statements[:-1]:
        s = " ".join(parts)
        if parts[0] in ("node", "edge", "rankdir"):
            continue
        if len(parts) > 2 and parts[1] == "->":
            edges.append((parts[0], parts[2]))
        else:
            assert re.fullmatch(r"n\d+", parts[0]), s
            nodes.add(parts[0])
    assert nodes and edges
    for a, b in edges:
        assert a in nodes and b in nodes, (a, b)
    return nodes, edges


_MERMAID_NODE = re.compile(r'^  (n\d+)(\(\[|\{|\[|\(\()"([^"]*)"(\]\)|\}|\]|\)\))$')
_MERMAID_EDGE = re.compile(r'^  (n\d+) (-->|-\.->)(?:\|"([^"]*)"\|)? (n\d+)$')


def check_mermaid(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    """A `flowchart TD`: every line a quoted-label node or an edge, every edge endpoint
    declared, labels free of raw characters Mermaid or GitHub's HTML would read."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: set[str] = set()
    edges: list[tuple[str, str]] = []
    for line in lines[1:]:
        if m := _MERMAID_NODE.match(line):
            nodes.add(m.group(1))
            label = m.group(3)
        elif m := _MERMAID_EDGE.match(line):
            edges.append((m.group(1), m.group(4)))
            label = m.group(3) or ""
        else:
            raise AssertionError(f"not a node or an edge: {line!r}")
        assert not re.search(r"[<>&|`]", label.replace("<br/>", "")), line
        assert not re.search(r"#(?!quot;|35;|amp;|lt;|gt;|124;|96;)", label), line
    assert nodes and edges
    for a, b in edges:
        assert a in nodes and b in nodes, (a, b)
    return nodes, edges


# ---- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["dot", "mermaid"])
@pytest.mark.parametrize(("case", "policy"), DRAWN)
def test_golden_graph(case: str, policy: str, fmt: str) -> None:
    """The exact diagram of the shipped policy and of the small first_match / fan-out / wide policies."""
    assert_golden(GOLDEN / f"{case}_{policy}.{SUFFIX[fmt]}", graph(case, policy, fmt))


@pytest.mark.parametrize(("case", "policy"), DRAWN)
def test_dot_is_a_well_formed_digraph(case: str, policy: str) -> None:
    """DOT output: one digraph, balanced braces, escaped quotes, every edge between declared nodes."""
    nodes, edges = check_dot(graph(case, policy, "dot"))
    assert len(edges) == len(nodes) - 1  # a tree: the policy node, the tree, the otherwise


@pytest.mark.parametrize(("case", "policy"), DRAWN)
def test_mermaid_is_a_flowchart_with_declared_nodes(case: str, policy: str) -> None:
    """Mermaid output: `flowchart TD`, quoted labels with entity codes, every referenced id declared."""
    nodes, edges = check_mermaid(graph(case, policy, "mermaid"))
    assert len(edges) == len(nodes) - 1


def test_formats_draw_the_same_graph() -> None:
    """DOT and Mermaid have the same nodes and edges for the same policy."""
    for case, policy in DRAWN:
        assert check_dot(graph(case, policy, "dot")) == check_mermaid(graph(case, policy, "mermaid"))


def test_the_drawing_shows_the_tree() -> None:
    """Dispatch fields, branch values, every rule with its action and remaining condition, and otherwise."""
    text = graph("shipped", "human_smuggling", "dot")
    assert 'shape=diamond, label="topic"' in text and 'shape=diamond, label="intent"' in text
    assert 'label="\\"human_smuggling\\""' in text
    assert "rule offer_smuggling → remove when confidence >= 0.8\\l" in text
    assert "shadow rule new_account_offer → remove when has author.account_age_days and author.account_age_days < 7\\l" in text
    assert "otherwise allow\\nNo rule of the human smuggling policy applies." in text


def test_wide_dispatch_is_folded_and_shared_subtrees_grouped() -> None:
    """At most 12 edges leave a dispatch, the last one "… N more values"; values sharing a subtree share an edge."""
    text = graph("small", "wide", "mermaid")
    out_of_dispatch = [line for line in text.splitlines() if line.startswith("  n1 -->")]
    assert len(out_of_dispatch) == 12
    assert out_of_dispatch[0] == '  n1 -->|"#quot;nn#quot;, #quot;oo#quot;, #quot;pp#quot;, #quot;qq#quot; and 2 more"| n2'
    assert out_of_dispatch[-1].endswith('|"… 3 more values"| n13')


def test_default_format_is_dot_and_a_lone_policy_needs_no_name() -> None:
    """Without --format the output is DOT; a set with one policy is drawn without --policy."""
    result = pol("graph", "policies")
    assert result.returncode == 0
    assert result.stdout == graph("shipped", "human_smuggling", "dot")


def test_unknown_policy_exits_2_listing_the_known() -> None:
    """--policy naming no policy of the set: exit 2, one line listing the known ones."""
    result = pol("graph", SETS["small"], "--policy", "nope")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "pol graph: unknown policy `nope`; loaded: triage, wide\n"


def test_several_policies_need_a_name() -> None:
    """A set of several policies and no --policy: exit 2, naming them."""
    result = pol("graph", SETS["small"])
    assert result.returncode == 2
    assert result.stderr == "pol graph: name the policy to draw with --policy; loaded: triage, wide\n"


def test_missing_path_exits_2() -> None:
    """A path that does not exist is a usage error."""
    result = pol("graph", "no/such/dir", "--policy", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("pol graph: no/such/dir")


def test_readme_diagram_is_the_current_output() -> None:
    """The README's decision tree is exactly `pol graph policies --policy human_smuggling --format mermaid`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The decision tree\n", 1)
    assert len(section) == 2, "README.md has no '## The decision tree' section"
    block = re.search(r"```mermaid\n(.*?)```", section[1], re.S)
    assert block, "no ```mermaid block in the decision tree section"
    expected = graph("shipped", "human_smuggling", "mermaid")
    if UPDATE_GOLDEN and block.group(1) != expected:
        start = len(section[0]) + len("\n## The decision tree\n") + block.start(1)
        (ROOT / "README.md").write_text(readme[:start] + expected + readme[start + len(block.group(1)) :], encoding="utf-8")
        return
    assert block.group(1) == expected, "README diagram is stale: run UPDATE_GOLDEN=1 on this test"
