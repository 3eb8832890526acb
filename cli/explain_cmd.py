"""`pol explain`: decide one annotated item (JSON) and explain the decision to a person.

Prints the verdict and the deciding policy and rule with its reason and citation; the path
taken through each decision tree; why the deciding rule wins over the other matches;
shadow matches and warnings; and the nearest single-field change that would flip the
verdict. The same decision as `pol eval` (whose `--explain` gives this as JSON).

Exit status: 0 explained; 1 the input is not JSON or breaks the schema (the fields are
named on stderr), or the policy set has errors; 2 unknown policy, unreadable file.
"""

from __future__ import annotations

import sys

from .eval_cmd import add_input_arguments, input_error, load_for_input, parse
from .main import EXIT_OK, EXIT_PROBLEMS

HELP = "decide annotated content (JSON) and explain the decision to a person"


def add_arguments(parser) -> None:
    add_input_arguments(parser)


def run(args) -> int:
    import engine
    from engine.explain import explain_decision

    ps, stream = load_for_input(args)
    if ps is None:
        return EXIT_PROBLEMS
    with stream:
        annotations, error = parse(stream.read())
    if error is None:
        try:
            explanation = explain_decision(ps, annotations, args.policy or None)
        except engine.InputError as e:
            error = input_error(e)
    if error is not None:
        print(f"pol explain: {error['message']}", file=sys.stderr)
        return EXIT_PROBLEMS
    sys.stdout.write(explanation.text())
    return EXIT_OK
