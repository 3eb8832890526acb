"""`pol check`: every diagnostic of one or more policy sets, sorted by location.

Formats: `text` for people (colour on a terminal), `json` (schema in docs/ci.md),
`github` (workflow annotations), `sarif` (SARIF 2.1.0, for code scanning). Paths are
printed joined to the PATH given, so they name real files from where pol ran.
"""

from __future__ import annotations

import sys

from . import output
from .main import EXIT_OK, EXIT_PROBLEMS, load

HELP = "report every diagnostic of policy sets"
FORMATS = ("text", "json", "github", "sarif")
#: Version of the `--format json` document; bumped only for an incompatible change.
JSON_VERSION = 1


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a policy directory, or a .pol file and what it imports")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    output.add_color_argument(parser)
    parser.add_argument("--docs-url", metavar="URL", help="absolute URL of docs/errors.md: SARIF rules link to their section there")


def run(args) -> int:
    from engine.diagnostics import sort_key

    checked = []  # (PATH, CheckResult), all loaded before anything is printed
    for path in args.paths:
        checked.append((path, load(path)))
    diagnostics, seen = [], set()
    for path, result in checked:
        relocate = output.Relocator(path, result.sources)
        for d in result.diagnostics:
            d = relocate.diagnostic(d)
            key = sort_key(d)
            if key not in seen:  # the same file reached through two PATHs
                seen.add(key)
                diagnostics.append(d)
    diagnostics.sort(key=sort_key)
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    text = _FORMATTERS[args.format](args, checked, diagnostics, errors, warnings)
    sys.stdout.write(text)
    failed = errors > 0 or (args.strict and warnings > 0)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _text(args, checked, diagnostics, errors, warnings) -> str:
    color = output.use_color(args.color)
    out = [output.render_diagnostic(d, color) + "\n\n" for d in diagnostics]
    for path, result in checked:
        files = output.plural(len(result.sources), "file")
        if result.ok:
            ps = result.policy_set
            rules = sum(len(p.rules) for p in ps.policies.values())
            out.append(f"{path}: {files}, {output.plural(len(ps.policies), 'policy', 'policies')}, {output.plural(rules, 'rule')}\n")
        else:
            out.append(f"{path}: {files}, not compiled because of errors\n")
    summary = f"{output.plural(errors, 'error')}, {output.plural(warnings, 'warning')}"
    if warnings and not errors and not args.strict:
        summary += " (warnings fail only with --strict)"
    out.append(summary + "\n")
    return "".join(out)


def _json(args, checked, diagnostics, errors, warnings) -> str:
    import json

    document = {
        "version": JSON_VERSION,
        "diagnostics": [_diagnostic_dict(d) for d in diagnostics],
        "summary": {"errors": errors, "warnings": warnings, "files": sum(len(r.sources) for _, r in checked)},
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _diagnostic_dict(d) -> dict:
    out = d.to_dict()
    notes = []
    for note, span in d.notes:
        line, col = span.source.line_col(span.start)
        notes.append({"message": note, "path": span.path, "line": line, "column": col})
    out["notes"] = notes
    return out


def _github(args, checked, diagnostics, errors, warnings) -> str:
    return "".join(output.github_annotation(d) + "\n" for d in diagnostics)


def _sarif(args, checked, diagnostics, errors, warnings) -> str:
    import json

    return json.dumps(output.sarif_log(diagnostics, args.docs_url), indent=2, ensure_ascii=False) + "\n"


_FORMATTERS = {"text": _text, "json": _json, "github": _github, "sarif": _sarif}
