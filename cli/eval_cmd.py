"""`pol eval`: decide annotated content read as JSON; print each decision as JSON."""

from __future__ import annotations

import json
import sys

from .main import EXIT_OK, EXIT_PROBLEMS, UsageError, load


def _decide(ps, text: str, policies: list[str]) -> tuple[dict, bool]:
    import engine

    try:
        annotations = json.loads(text)
    except json.JSONDecodeError as e:
        return {"error": {"code": "invalid_json", "message": f"invalid JSON: {e}"}}, False
    except RecursionError:
        return {"error": {"code": "invalid_json", "message": "invalid JSON: nested too deeply"}}, False
    try:
        return ps.evaluate(annotations, policies or None).to_dict(), True
    except engine.InputError as e:
        return {
            "error": {
                "code": "invalid_argument",
                "message": str(e),
                "violations": [{"field": v.field, "description": v.description} for v in e.violations],
            }
        }, False
    except engine.UnknownPolicyError as e:
        raise UsageError(str(e)) from None

HELP = "decide annotated content (JSON) with a policy set"


def add_arguments(parser) -> None:
    parser.add_argument("input", nargs="?", default="-", metavar="FILE", help="JSON file, or - for stdin (default)")
    parser.add_argument("--policies", default="policies", metavar="DIR")
    parser.add_argument("--policy", action="append", default=[], metavar="NAME", help="decide with this policy only (repeatable)")
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per line in, one decision per line out")


def run(args) -> int:
    import engine

    result = load(args.policies)
    if not result.ok:
        print(engine.render_all(result.diagnostics), file=sys.stderr)
        return EXIT_PROBLEMS
    ps = result.policy_set
    try:
        stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{args.input}: {e.strerror}") from None
    ok = True
    with stream:
        if args.jsonl:
            for line in stream:
                if not line.strip():
                    continue
                out, good = _decide(ps, line, args.policy)
                ok = ok and good
                print(json.dumps(out, ensure_ascii=False, sort_keys=False))
        else:
            out, good = _decide(ps, stream.read(), args.policy)
            ok = good
            print(json.dumps(out, ensure_ascii=False, indent=2))
    return EXIT_OK if ok else EXIT_PROBLEMS
