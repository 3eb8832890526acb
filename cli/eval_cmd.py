"""`pol eval`: decide annotated content read as JSON; print each decision as JSON.

One JSON object in (a file, or stdin), one decision out. With `--jsonl`, one object per
line in and one decision per line out, in order: a line that is not valid JSON or breaks
the schema gets an error object naming the line (and the fields), and the other lines
are still decided. `--explain` adds the path through each decision tree, why the
deciding rule wins, and the nearest single-field changes that flip the verdict, under
`"trace"`.

Exit status: 0 every item decided; 1 some input was rejected, or the policy set has
errors (diagnostics on stderr); 2 unknown policy, unreadable file or directory.
"""

from __future__ import annotations

import json
import sys

from .main import EXIT_OK, EXIT_PROBLEMS, UsageError, load

HELP = "decide annotated content (JSON) with a policy set"


def add_arguments(parser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per line in, one decision per line out")
    parser.add_argument("--explain", action="store_true", help="add the trace: the path through each tree, why the rule decides, the nearest flip")


def add_input_arguments(parser) -> None:
    """The options `pol eval` and `pol explain` share."""
    parser.add_argument("input", nargs="?", default="-", metavar="FILE", help="JSON file, or - for stdin (default)")
    parser.add_argument("--policies", default="policies", metavar="DIR", help="the policy set (default: policies)")
    parser.add_argument("--policy", action="append", default=[], metavar="NAME", help="decide with this policy only (repeatable; default: every policy)")


def load_for_input(args):
    """The policy set and the open input stream; None when the set has errors (printed)."""
    import engine

    result = load(args.policies)
    if not result.ok:
        print(engine.render_all(result.diagnostics), file=sys.stderr)
        return None, None
    ps = result.policy_set
    for name in args.policy:
        if name not in ps.policies:
            raise UsageError(str(engine.UnknownPolicyError(name, ps.policies)))
    try:
        stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # bytes: bad UTF-8 is one item's error
    except OSError as e:
        raise UsageError(f"{args.input}: {e.strerror or e}") from None
    return ps, stream


def parse(data: bytes) -> tuple[object, dict | None]:
    """(annotations, None), or (None, error) for input that is not JSON."""
    try:
        return json.loads(data), None
    except json.JSONDecodeError as e:
        return None, {"code": "invalid_json", "message": f"invalid JSON: {e}"}
    except UnicodeDecodeError as e:
        return None, {"code": "invalid_json", "message": f"invalid JSON: not UTF-8 text ({e.reason} at byte {e.start})"}
    except RecursionError:
        return None, {"code": "invalid_json", "message": "invalid JSON: nested too deeply"}


def input_error(e) -> dict:
    """The error object of annotations that break the schema (an `engine.InputError`)."""
    return {
        "code": "invalid_argument",
        "message": str(e),
        "violations": [{"field": v.field, "description": v.description} for v in e.violations],
    }


def _decide(ps, data: bytes, policies: list[str], explain: bool) -> tuple[dict, dict | None]:
    """(output, error): the decision as JSON, or an error object."""
    import engine

    annotations, error = parse(data)
    if error is not None:
        return {"error": error}, error
    try:
        if explain:
            from engine.explain import explain_decision

            explanation = explain_decision(ps, annotations, policies or None)
            return {**explanation.decision.to_dict(), "trace": explanation.to_dict()}, None
        return ps.evaluate(annotations, policies or None).to_dict(), None
    except engine.InputError as e:
        error = input_error(e)
        return {"error": error}, error


def run(args) -> int:
    ps, stream = load_for_input(args)
    if ps is None:
        return EXIT_PROBLEMS
    ok = True
    with stream:
        if args.jsonl:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                out, error = _decide(ps, line, args.policy, args.explain)
                if error is not None:
                    ok = False
                    out = {"line": number, **out}
                    print(f"pol eval: line {number}: {error['message']}", file=sys.stderr)
                print(json.dumps(out, ensure_ascii=False))
        else:
            out, error = _decide(ps, stream.read(), args.policy, args.explain)
            if error is not None:
                ok = False
                print(f"pol eval: {error['message']}", file=sys.stderr)
            print(json.dumps(out, ensure_ascii=False, indent=2))
    return EXIT_OK if ok else EXIT_PROBLEMS
