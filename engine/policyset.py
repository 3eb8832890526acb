"""PolicySet: a directory of .pol files, checked and compiled, identified by a hash.

The pipeline reads as its stages: parse every file, check the set, analyze it,
compile each policy, generate its evaluator. A set with errors is never built;
the diagnostics say why.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .analyze import analyze
from .check import Program, check
from .compile import CompiledPolicy, compile_policy
from .diagnostics import Diagnostic, sort_key
from .evaluate import Decision, decide_policy, evaluator, make_tree
from .parse import parse_file
from .source import Source, Span
from .types import SchemaInfo
from .validate import compile_validator

__all__ = ["CheckResult", "LoadError", "PolicyError", "PolicySet", "UnknownPolicyError", "compile_sources", "load", "load_path"]


class LoadError(OSError):
    """The policy files could not be read (missing path, permissions): a usage error."""


class PolicyError(Exception):
    """The policy set has errors; `diagnostics` holds all of them."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        errors = [d for d in diagnostics if d.is_error]
        super().__init__(f"policy set has {len(errors)} error(s); first: {errors[0].span.path}:{errors[0].span.line}: {errors[0].message}" if errors else "policy set has errors")


class UnknownPolicyError(KeyError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(name)

    def __str__(self) -> str:
        name = self.name if len(self.name) <= 100 else f"{self.name[:100]}... ({len(self.name) - 100} more characters)"
        return f"unknown policy `{name}`; loaded: {', '.join(self.known) or 'none'}"


@dataclass
class CheckResult:
    diagnostics: list[Diagnostic]
    policy_set: PolicySet | None
    sources: dict[str, Source] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.policy_set is not None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]


def _evaluate(compiled: Mapping[str, CompiledPolicy], validators: Mapping[str, object], policy_set_hash: str, annotations: object, policies: Sequence[str] | None = None) -> Decision:
    """`PolicySet.evaluate`, policy by policy: for named policies, and sets of several schemas."""
    decisions = []
    validated: dict[str, tuple] = {}
    input_warnings: list[tuple[str, str]] = []
    for name in policies or sorted(compiled):
        p = compiled.get(name)
        if p is None:
            raise UnknownPolicyError(name, compiled)
        values = validated.get(p.schema)
        if values is None:
            values, warns = validators[p.schema](annotations)
            validated[p.schema] = values
            if warns:
                input_warnings.extend(warns)
        decisions.append(decide_policy(p, values))
    return Decision(tuple(decisions), policy_set_hash, input_warnings)


class PolicySet:
    """Immutable compiled policies; `evaluate` is pure and thread-safe."""

    def __init__(
        self,
        files: dict[str, bytes],
        program: Program,
        policies: dict[str, CompiledPolicy],
        diagnostics: list[Diagnostic],
    ) -> None:
        self.files = files
        self.hash = set_hash(files)
        self.schemas: dict[str, SchemaInfo] = program.schemas
        self.policies = policies
        self.tests: list[tuple[ast.Test, str]] = program.tests
        self.program = program
        self.diagnostics = diagnostics
        self._validators = {name: compile_validator(s) for name, s in program.schemas.items()}
        self._order = tuple(sorted(policies))
        self._bind()

    def _bind(self) -> None:
        """Give the set its own `evaluate`: the C evaluator of every policy when they share one schema
        (the usual set), which hands named policies to `_evaluate`; else `_evaluate`. Neither holds a
        reference to the set, so a replaced set is freed at once."""
        named = functools.partial(_evaluate, self.policies, self._validators, self.hash)
        schemas = {p.schema for p in self.policies.values()}
        if len(schemas) == 1:
            self.evaluate = evaluator(self._validators[schemas.pop()], tuple(self.policies[n] for n in self._order), self.hash, named)
        else:
            self.evaluate = named

    @property
    def policy_names(self) -> tuple[str, ...]:
        return self._order

    def evaluate(self, annotations: object, policies: Sequence[str] | None = None) -> Decision:
        """Decide `annotations` (plain JSON) with the named policies (default: all).

        Raises `InputError` naming each field that breaks a schema, and
        `UnknownPolicyError` for a policy name that is not loaded.

        Each set replaces this method with its own evaluator (`_bind`): the same function,
        called from the caller straight into C, as a Python method in between cost 15% of a
        decision.
        """
        return self.evaluate(annotations, policies)  # the instance's own

    def evaluator_for(self, policies: Sequence[str] | None = None) -> Callable[[object], Decision]:
        """`evaluate` with `policies` bound: the evaluator itself, when all are decided."""
        return self.evaluate if not policies else functools.partial(self.evaluate, policies=policies)

    def values(self, annotations: object, schema: str) -> tuple:
        """`annotations` validated against `schema`: the field values in schema order, as policies see them."""
        return self._validators[schema](annotations)[0]

    def instrumented(self, policy: str, tick) -> PolicySet:
        """A copy whose `policy` reports each atom evaluation to `tick(atom_id, value)`."""
        clone = object.__new__(PolicySet)
        clone.__dict__.update(self.__dict__)
        p = self.policies[policy]
        counted = CompiledPolicy(**{k: getattr(p, k) for k in p.__dataclass_fields__})
        counted.decide = make_tree(counted, len(self.schemas[p.schema].fields), tick)
        clone.policies = {**self.policies, policy: counted}
        clone._bind()
        return clone


def set_hash(files: Mapping[str, bytes]) -> str:
    """SHA-256 over every file's path and bytes, in path order."""
    h = hashlib.sha256()
    for path in sorted(files):
        data = files[path]
        h.update(path.encode("utf-8"))
        h.update(b"\0")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return "sha256:" + h.hexdigest()


def compile_sources(files: Mapping[str, str | bytes]) -> CheckResult:
    """Check and compile in-memory sources ({path: text}); never raises on policy errors."""
    raw = {path: (data.encode("utf-8") if isinstance(data, str) else data) for path, data in files.items()}
    diagnostics: list[Diagnostic] = []
    parsed: list[ast.File] = []
    sources: dict[str, Source] = {}
    unparsed = False
    for path in sorted(raw):
        tree, source, diags = parse_file(path, raw[path])
        sources[path] = source
        diagnostics.extend(diags)
        unparsed = unparsed or tree is None
        if tree is not None:
            if not tree.items and not any(d.is_error for d in diags):  # an item dropped for its errors is not "nothing"
                diagnostics.append(Diagnostic("W205", "file defines nothing", Span(source, 0, len(source.text)), help="a .pol file holds schemas, policies, lets or tests"))
            parsed.append(tree)
    if unparsed:  # syntax errors: names in the broken files are unknown, so checking would cascade
        return CheckResult(_final(diagnostics), None, sources)
    program = check(parsed, diagnostics)
    if any(d.is_error for d in diagnostics):
        return CheckResult(_final(diagnostics), None, sources)
    compiled: dict[str, CompiledPolicy] = {}
    for name, cp in program.policies.items():
        policy = compile_policy(cp)
        policy.decide = make_tree(policy, len(cp.schema.fields))
        compiled[name] = policy
    analyze(program, compiled, diagnostics)
    diagnostics = _final(diagnostics)
    return CheckResult(diagnostics, PolicySet(raw, program, compiled, diagnostics), sources)


def _final(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Sorted by location, each reported once (a top-level let checked per policy)."""
    seen = set()
    out = []
    for d in sorted(diagnostics, key=sort_key):
        key = (d.code, d.span.path, d.span.start, d.span.end, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def read_files(path: str | os.PathLike) -> dict[str, bytes]:
    """Every .pol file under a directory (recursively), or one file and what it imports.

    All or nothing, so a set is never silently missing a file: LoadError if the directory
    cannot be listed (or vanishes meanwhile), a name is not UTF-8, or a `*.pol` entry is not
    a readable regular file (a directory, FIFO, device, broken link, no permission). Files
    are opened non-blocking and checked after opening: a FIFO never hangs the reader.
    """
    import stat

    def read(p: str) -> bytes:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if os.path.islink(p):
                raise LoadError(f"{p}: broken symbolic link to {os.readlink(p)}") from None
            raise
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
                raise LoadError(f"{p}: not a regular file ({kind})")
            with open(fd, "rb", closefd=False) as f:
                return f.read()
        finally:
            os.close(fd)

    def fail(e: OSError) -> None:
        raise e

    root = Path(path)
    if not root.exists():
        raise LoadError(f"{path}: no such file or directory")
    files: dict[str, bytes] = {}
    try:
        if root.is_dir():
            for top, dirs, names in os.walk(root, onerror=fail):  # symlinked directories are not followed
                for name in [*dirs, *names]:
                    if name.endswith(".pol"):
                        full = os.path.join(top, name)
                        relative = Path(os.path.relpath(full, root)).as_posix()
                        try:
                            relative.encode("utf-8")
                        except UnicodeEncodeError:
                            raise LoadError(f"{os.fsencode(full).decode('utf-8', 'backslashreplace')}: file name is not valid UTF-8") from None
                        files[relative] = read(full)
            files = dict(sorted(files.items()))
        else:
            files[root.name] = read(str(root))
            _read_imports(root, files)
    except LoadError:
        raise
    except OSError as e:
        raise LoadError(f"{e.filename or path}: {e.strerror or e}") from e
    return files


def _read_imports(root: Path, files: dict[str, bytes]) -> None:
    """For a single file: bring in the files it imports, so they resolve as in its directory."""
    import re

    base = root.parent
    todo = [root.name]
    while todo:
        name = todo.pop()
        text = files[name].decode("utf-8", errors="replace")
        for m in re.finditer(r'^\s*import\s+"([^"\\]*)"', text, re.M):
            target = os.path.normpath(os.path.join(os.path.dirname(name), m.group(1))).replace(os.sep, "/")
            p = base / target
            if target not in files and p.is_file():
                files[target] = p.read_bytes()
                todo.append(target)


def load_path(path: str | os.PathLike) -> CheckResult:
    """Check and compile the policy set at `path` (directory or file). Raises LoadError."""
    return compile_sources(read_files(path))


def load(path: str | os.PathLike) -> PolicySet:
    """The compiled policy set at `path`; raises PolicyError (with every diagnostic) on errors."""
    result = load_path(path)
    if result.policy_set is None:
        raise PolicyError(result.diagnostics)
    return result.policy_set
