"""`pol graph`: draw a policy's compiled decision tree as DOT (Graphviz) or Mermaid.

`--format dot` (the default) pipes into Graphviz: `pol graph policies --policy NAME | dot -Tsvg`.
`--format mermaid` prints a `flowchart TD` to paste into a ```mermaid block, which GitHub
renders; the README's diagram is made this way.

Exit status: 0 drawn; 1 the policy set has errors (diagnostics on stderr); 2 unknown
policy (the known ones listed), unreadable path, or no --policy in a set of several.
"""

from __future__ import annotations

import sys

from .main import EXIT_OK, EXIT_PROBLEMS, UsageError, load

HELP = "draw a policy's decision tree (DOT or Mermaid)"


def add_arguments(parser) -> None:
    parser.add_argument("path", metavar="PATH", help="the policy set: a directory, or one .pol file")
    parser.add_argument("--policy", metavar="NAME", help="the policy to draw (may be left out when the set has one)")
    parser.add_argument("--format", choices=("dot", "mermaid"), default="dot", help="dot (default) or mermaid")


def run(args) -> int:
    import engine
    from engine.graph import to_dot, to_mermaid

    result = load(args.path)
    if not result.ok:
        print(engine.render_all(result.diagnostics), file=sys.stderr)
        return EXIT_PROBLEMS
    ps = result.policy_set
    name = args.policy
    if name is None:
        if len(ps.policies) != 1:
            raise UsageError(f"name the policy to draw with --policy; loaded: {', '.join(ps.policy_names) or 'none'}")
        name = ps.policy_names[0]
    if name not in ps.policies:
        raise UsageError(str(engine.UnknownPolicyError(name, ps.policies)))
    policy = ps.policies[name]
    sys.stdout.write(to_dot(policy) if args.format == "dot" else to_mermaid(policy))
    return EXIT_OK
