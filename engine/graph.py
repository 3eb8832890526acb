"""Graph: a compiled policy's decision tree as a diagram, in DOT (Graphviz) or Mermaid.

The tree is laid out once as plain nodes and edges, then written in either syntax:

- the policy (a rounded box: its name and how it combines) points at the root of the tree,
  and, dashed, at its `otherwise` (what decides when no rule matches);
- a dispatch is a diamond labelled with the field; each edge is labelled with the values
  that lead to one subtree (values whose subtrees are identical share one edge), at most
  `MAX_EDGES` edges, the rest folded into one "… N more values" edge;
- a leaf is a box listing each rule still to check: its action and its remaining condition
  (none when the dispatches above were the whole condition);
- a fan-out (`Seq`: independent subtrees, every one checked) is a small circle "all of".

Labels are escaped for each syntax: DOT labels are double-quoted strings, so only `"` and
`\\` need escaping (no record or HTML-like shapes are used, so `<`, `>`, `{`, `}` and `|`
are plain text); Mermaid labels are double-quoted too, with `"`, `#`, `&`, `<`, `>`, `|`
and the backtick written as Mermaid entity codes (`#quot;` and friends), so any policy
text renders, on GitHub included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .compile import CompiledPolicy, Leaf, Node, RuleInfo, Seq, rules_under
from .format import expr_text, literal_text

__all__ = ["FORMATS", "MAX_EDGES", "to_dot", "to_mermaid"]

FORMATS = ("dot", "mermaid")
MAX_EDGES = 12  # per dispatch node, the "… N more values" edge included
MAX_RULES = 12  # lines per leaf, the "… N more rules" line included
MAX_VALUES = 4  # values written on one edge
MAX_CONDITION = 90  # characters of a rule's condition in a leaf; longer ones are cut with "…"


@dataclass
class _Node:
    id: str
    kind: str  # "policy" | "dispatch" | "leaf" | "fanout" | "otherwise" | "more"
    lines: list[str]


@dataclass
class _Edge:
    source: str
    target: str
    label: str | None = None
    dashed: bool = False


@dataclass
class _Graph:
    name: str
    nodes: list[_Node] = field(default_factory=list)
    edges: list[_Edge] = field(default_factory=list)

    def node(self, kind: str, lines: list[str]) -> str:
        node_id = f"n{len(self.nodes)}"
        self.nodes.append(_Node(node_id, kind, lines))
        return node_id


def _layout(policy: CompiledPolicy) -> _Graph:
    g = _Graph(policy.name)
    how = "the first matching rule decides" if policy.combine == "first_match" else "the most severe matching rule decides"
    start = g.node("policy", [f"policy {policy.name}", f"combine {policy.combine}: {how}"])
    _subtree(g, policy, policy.tree, start, None)
    ow = policy.otherwise
    otherwise = g.node("otherwise", [f"otherwise {_action(ow)}", ow.because])
    g.edges.append(_Edge(start, otherwise, "no rule matches", dashed=True))
    return g


def _subtree(g: _Graph, policy: CompiledPolicy, node: Node, parent: str, label: str | None) -> None:
    """Draw `node` under `parent`: its own node and the edge to it first, then its children."""
    if isinstance(node, Leaf):
        g.edges.append(_Edge(parent, g.node("leaf", _leaf_lines(policy, node)), label))
        return
    if isinstance(node, Seq):
        me = g.node("fanout", ["all of"])
        g.edges.append(_Edge(parent, me, label))
        for child in node.children:
            _subtree(g, policy, child, me, None)
        return
    me = g.node("dispatch", [node.field.dotted])
    g.edges.append(_Edge(parent, me, label))
    groups: dict[Node, list[object]] = {}  # identical subtrees share one edge, in first-value order
    for value, child in node.branches:
        groups.setdefault(child, []).append(value)
    items = list(groups.items())
    shown = items if len(items) <= MAX_EDGES else items[: MAX_EDGES - 1]
    for child, values in shown:
        _subtree(g, policy, child, me, _values_label(values))
    if len(shown) < len(items):
        rest = items[len(shown) :]
        n_values = sum(len(v) for _, v in rest)
        n_rules = len({i for child, _ in rest for i in rules_under(child)})
        more = g.node("more", [f"{len(rest)} more subtrees, not drawn", f"{n_rules} rules in them"])
        g.edges.append(_Edge(me, more, f"… {n_values} more values"))


def _leaf_lines(policy: CompiledPolicy, leaf: Leaf) -> list[str]:
    """One line per rule: `rule NAME → ACTION when CONDITION` (the condition cut when long)."""
    if not leaf.checks:
        return ["no rules"]
    lines = []
    checks = leaf.checks if len(leaf.checks) <= MAX_RULES else leaf.checks[: MAX_RULES - 1]
    for index, residual in checks:
        rule = policy.rules[index]
        head = f"{'shadow rule' if rule.shadow else 'rule'} {rule.name} → {_action(rule)}"
        lines.append(head + (f" when {_cut(expr_text(residual))}" if residual is not None else ""))
    if len(checks) < len(leaf.checks):
        lines.append(f"… {len(leaf.checks) - len(checks)} more rules")
    return lines


def _values_label(values: list[object]) -> str:
    shown = ", ".join(literal_text(v) for v in values[:MAX_VALUES])
    return shown if len(values) <= MAX_VALUES else f"{shown} and {len(values) - MAX_VALUES} more"


def _action(rule: RuleInfo) -> str:
    if rule.verdict != "intervene":
        return rule.verdict
    return "intervene " + ", ".join(name for name, _ in rule.interventions)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CONDITION else text[: MAX_CONDITION - 1] + "…"


# ---- DOT ------------------------------------------------------------------------------------

_DOT_SHAPES = {
    "policy": 'shape=box, style="rounded,bold"',
    "dispatch": "shape=diamond",
    "leaf": "shape=box",
    "fanout": "shape=circle, fontsize=9",
    "otherwise": 'shape=box, style="rounded,dashed"',
    "more": 'shape=box, style="dashed"',
}


def _dot_string(text: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_label(node: _Node) -> str:
    if node.kind == "leaf":  # one rule per line, left-aligned: each line ends in \l
        return '"' + "".join(_dot_string(line)[1:-1] + "\\l" for line in node.lines) + '"'
    return '"' + "\\n".join(_dot_string(line)[1:-1] for line in node.lines) + '"'


def to_dot(policy: CompiledPolicy) -> str:
    """The decision tree of `policy` as a Graphviz digraph."""
    g = _layout(policy)
    out = [
        f"digraph {_dot_string('policy ' + g.name)} {{",
        "  rankdir=TB;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for n in g.nodes:
        out.append(f"  {n.id} [{_DOT_SHAPES[n.kind]}, label={_dot_label(n)}];")
    for e in g.edges:
        attrs = []
        if e.label is not None:
            attrs.append(f"label={_dot_string(e.label)}")
        if e.dashed:
            attrs.append("style=dashed")
        out.append(f"  {e.source} -> {e.target}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


# ---- Mermaid ------------------------------------------------------------------------------------

_MERMAID_ENTITIES = {'"': "#quot;", "#": "#35;", "&": "#amp;", "<": "#lt;", ">": "#gt;", "|": "#124;", "`": "#96;", "\n": "<br/>", "\r": ""}
_MERMAID_SHAPES = {  # (open, close) around the quoted label
    "policy": ("([", "])"),
    "dispatch": ("{", "}"),
    "leaf": ("[", "]"),
    "fanout": ("((", "))"),
    "otherwise": ("[", "]"),
    "more": ("[", "]"),
}


def _mermaid_text(text: str) -> str:
    """Text safe inside a Mermaid double-quoted label: special characters as entity codes."""
    return "".join(_MERMAID_ENTITIES.get(ch, ch) for ch in text)


def to_mermaid(policy: CompiledPolicy) -> str:
    """The decision tree of `policy` as a Mermaid flowchart (renders on GitHub)."""
    g = _layout(policy)
    out = ["flowchart TD"]
    for n in g.nodes:
        left, right = _MERMAID_SHAPES[n.kind]
        label = "<br/>".join(_mermaid_text(line) for line in n.lines)
        out.append(f'  {n.id}{left}"{label}"{right}')
    for e in g.edges:
        arrow = "-.->" if e.dashed else "-->"
        label = f'|"{_mermaid_text(e.label)}"|' if e.label is not None else ""
        out.append(f"  {e.source} {arrow}{label} {e.target}")
    return "\n".join(out) + "\n"
