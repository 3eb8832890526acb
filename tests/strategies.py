"""Hypothesis strategies: random well-typed pol policy sets, as source text, and inputs for them.

`policy_files()` draws a set of files: a random schema, one to three policies over it
(random rules of `and`/`or`/`not` over every kind of atom, lets, shadow rules,
`otherwise`, interventions with arguments), sometimes a `common.pol` of top-level lets
that the policy files import. Rules test one enum field for equality most of the
time and reuse each other's atoms, so the compiler's dispatch nodes and interning are
exercised. Every policy drawn is meant to compile without errors: a checker error on
one is a bug in this module.

`annotations_for(files)` draws inputs for a policy set (generated or shipped): the
literals each field is compared with (and their neighbours) are drawn often, enum
values outside the declared set sometimes, optional and defaulted fields are left out
or sent as `null` sometimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hypothesis import strategies as st

from engine import ast

from .oracle import parse_text

__all__ = ["FieldSpec", "PolicyCase", "annotations_for", "policy_cases", "policy_files"]

# ---- schemas ----------------------------------------------------------------------------

TOPICS = ("human_smuggling", "migration", "weapons", "drugs", "spam", "news", "other")
CANDIDATES = (
    ("intent", "enum", ("offer", "solicit", "share_info", "report", "other")),
    ("region", "enum", ("eu", "us", "apac")),
    ("score", "int", ()),
    ("count", "int", ()),
    ("author.age", "int", ()),
    ("confidence", "float", ()),
    ("ratio", "float", ()),
    ("flag", "bool", ()),
    ("author.verified", "bool", ()),
    ("lang", "string", ()),
    ("text", "string", ()),
    ("labels", "set", ()),
    ("words", "set", ()),
    ("nums", "list", ()),
)
ALWAYS = ("lang", "labels")  # every schema has a string and a set<string> field
DEFAULTS = {
    "enum": None,  # the first declared value
    "int": (0, -1, 5),
    "float": (0.5, 0, 1),
    "bool": (False, True),
    "string": ("und", ""),
    "set": ((), ("ab",)),
    "list": ((), (0, 2)),
}
TYPE_TEXT = {"int": "int", "float": "float", "bool": "bool", "string": "string", "set": "set<string>", "list": "list<int>"}

INTS = (-1, 0, 1, 2, 3, 5, 7, 10, 100)
FLOATS = (0.0, 0.25, 0.5, 0.8, 1.5, 2.0)
STRINGS = ("ab", "abc", "x", "c", "AB", "ba", "yz", "a1c", "")
PATTERNS = ("^ab", "c$", "a.c", "(?i)AB", "x|yz", "^$", "[0-9]", "\\bab")
SAMPLE_STRINGS = ("ab", "abc", "AB", "xab", "c", "", "a1c", "yz", "x", "ab ab", "9", "Ba")
INTERVENTIONS = ("send_resources", "queue_review", "add_label", "notify")
ARG_KEYS = ("queue", "priority", "resource", "channel")
ARG_VALUES = ('"a"', '"b"', "1", "1.0", "2", "-1", "true", "false", '["x", 1]')


@dataclass(frozen=True)
class FieldSpec:
    name: str  # dotted
    kind: str  # enum | int | float | bool | string | set | list
    values: tuple[str, ...] = ()
    mode: str = "required"  # required | default | optional
    default: object = None

    @property
    def optional(self) -> bool:
        return self.mode == "optional"

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")

    @property
    def stringy(self) -> bool:
        return self.kind in ("enum", "string")


def lit(v: object) -> str:
    """A Python value as a pol literal."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(lit(i) for i in v) + "]"
    return repr(v)


@st.composite
def schemas(draw) -> list[FieldSpec]:
    topics = draw(st.lists(st.sampled_from(TOPICS), min_size=2, max_size=5, unique=True))
    fields = [FieldSpec("topic", "enum", tuple(topics))]
    for name, kind, values in CANDIDATES:
        if name not in ALWAYS and not draw(st.integers(0, 9)) < 6:
            continue
        mode = draw(st.sampled_from(("required", "required", "default", "default", "optional", "optional")))
        if kind == "enum":
            values = tuple(draw(st.lists(st.sampled_from(values), min_size=2, max_size=len(values), unique=True)))
        default = None
        if mode == "default":
            default = values[0] if kind == "enum" else draw(st.sampled_from(DEFAULTS[kind]))
        fields.append(FieldSpec(name, kind, values, mode, default))
    return fields


def schema_text(fields: list[FieldSpec]) -> str:
    lines = ["schema content {"]
    for f in fields:
        t = "enum(" + ", ".join(lit(v) for v in f.values) + ")" if f.kind == "enum" else TYPE_TEXT[f.kind]
        opt = "?" if f.optional else ""
        default = f" = {lit(f.default)}" if f.mode == "default" else ""
        lines.append(f"  {f.name}{opt}: {t}{default}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- boolean structure -----------------------------------------------------------------

PREC = {"or": 1, "and": 2, "not": 3, "atom": 4}


@dataclass
class Node:
    kind: str  # atom | and | or | not
    text: str = ""
    children: list[Node] = field(default_factory=list)
    parens: bool = False

    def render(self, min_prec: int = 0) -> str:
        if self.kind == "atom":
            out, prec = self.text, 4
        elif self.kind == "not":
            out, prec = "not " + self.children[0].render(3), 3
        else:
            out, prec = f" {self.kind} ".join(c.render(PREC[self.kind]) for c in self.children), PREC[self.kind]
        return f"({out})" if self.parens or prec < min_prec else out


def atom(text: str) -> Node:
    return Node("atom", text)


def conj(*nodes: Node) -> Node:
    return Node("and", "", list(nodes))


# ---- one policy's expressions ------------------------------------------------------------


class _Gen:
    """Draws expressions over one schema, with the lets in scope so far."""

    def __init__(self, draw, fields: list[FieldSpec], bool_lets: list[str], guard_lets: dict[str, FieldSpec]) -> None:
        self.draw = draw
        self.fields = fields
        self.bool_lets = list(bool_lets)  # names of boolean lets usable anywhere
        self.guard_lets = dict(guard_lets)  # let name -> the optional field it guards
        self.num_lets: list[str] = []
        self.str_lets: list[str] = []
        self.atoms: list[Node] = []  # atoms already used, safe anywhere (shared between rules)
        self.groups: list[Node] = []  # guarded groups already used
        self.counter = 0

    def pick(self, seq):
        return self.draw(st.sampled_from(list(seq)))

    def chance(self, p: float) -> bool:
        return self.draw(st.integers(0, 999)) < p * 1000

    def plain(self, kind: str | tuple) -> list[FieldSpec]:
        kinds = (kind,) if isinstance(kind, str) else kind
        return [f for f in self.fields if f.kind in kinds and not f.optional]

    # ---- values ----

    def num_operand(self, guarded: FieldSpec | None = None) -> str:
        """A numeric expression: a field, a value let, `len(...)`, or arithmetic over them."""
        options = [f.name for f in self.plain(("int", "float"))] + self.num_lets
        if guarded is not None and guarded.numeric:
            options += [guarded.name] * 3
        if not options or self.chance(0.1):
            coll = self.plain(("string", "set", "list"))
            if coll:
                options.append(f"len({self.pick(coll).name})")
        if not options:
            return str(self.pick(INTS))
        base = self.pick(options)
        if guarded is not None and guarded.numeric and self.chance(0.7):
            base = guarded.name
        shape = self.draw(st.integers(0, 9))
        if shape <= 3:
            return base
        other = self.pick(options)
        if shape == 4:
            return f"-{base}"
        if shape == 5:
            return f"{base} + {lit(self.pick(INTS + FLOATS))}"
        if shape == 6:
            return f"{base} - {other}"
        if shape == 7:
            return f"{base} * {lit(self.pick((2, 3, 0.5, -1)))}"
        if shape == 8:
            return f"{base} / {other}"  # `other` is zero sometimes
        return f"{lit(self.pick((10, 1, 100)))} / ({base} - {lit(self.pick(INTS))})"  # zero when base hits the literal

    def string_operand(self, guarded: FieldSpec | None = None) -> str | None:
        options = [f.name for f in self.plain(("string", "enum"))] + self.str_lets
        if guarded is not None and guarded.stringy:
            return guarded.name if self.chance(0.8) or not options else self.pick(options)
        if not options:
            return None
        name = self.pick(options)
        return f"lower({name})" if self.chance(0.15) else name

    # ---- atoms ----

    def atom(self, guarded: FieldSpec | None = None) -> Node:
        """One atomic predicate; with `guarded`, one that reads that optional field."""
        if guarded is None and self.atoms and self.chance(0.3):
            return self.pick(self.atoms)
        node = atom(self.atom_text(guarded))
        if guarded is None:
            self.atoms.append(node)
        return node

    def atom_text(self, guarded: FieldSpec | None) -> str:
        kinds = ["num", "num", "enum", "bool", "string", "string", "string", "set", "set", "list", "let", "has"]
        if guarded is not None:
            kinds = {"int": ["num"], "float": ["num"], "enum": ["enum"], "string": ["string"], "bool": ["bool"], "set": ["set"], "list": ["list"]}[guarded.kind]
        for _ in range(20):
            text = getattr(self, "atom_" + self.pick(kinds))(guarded)
            if text is not None:
                return text
        return "true"

    def atom_num(self, guarded):
        left = self.num_operand(guarded)
        op = self.pick(("<", "<=", ">", ">=", "==", "!="))
        if self.chance(0.15):
            return f"{left} {op} {self.num_operand()}"
        if self.chance(0.1) and not any(c in left for c in " /"):
            return f"{left} in {lit(list(self.draw(st.lists(st.sampled_from(INTS), max_size=3))))}"
        return f"{left} {op} {lit(self.pick(INTS + FLOATS))}"

    def atom_enum(self, guarded):
        fs = [guarded] if guarded is not None else self.plain("enum")
        if not fs:
            return None
        f = self.pick(fs)
        v = self.pick(f.values)
        shape = self.draw(st.integers(0, 9))
        if shape <= 3:
            return f"{f.name} == {lit(v)}"
        if shape == 4:
            return f"{f.name} != {lit(v)}"
        if shape == 5:
            return f"{lit(v)} == {f.name}"
        if shape <= 7:
            vs = self.draw(st.lists(st.sampled_from(f.values), min_size=1, max_size=3, unique=True))
            return f"{f.name} {self.pick(('in', 'in', 'not in'))} {lit(vs)}"
        if shape == 8:
            return f"{f.name} starts_with {lit(v[:2])}"
        other = self.string_operand()
        return f"{f.name} == {other}" if other else None

    def atom_bool(self, guarded):
        fs = [guarded] if guarded is not None else self.plain("bool")
        if not fs:
            return None
        f = self.pick(fs)
        shape = self.draw(st.integers(0, 4))
        if shape <= 2:
            return f.name
        return f"{f.name} {self.pick(('==', '!='))} {lit(self.chance(0.5))}"

    def atom_string(self, guarded):
        s = self.string_operand(guarded)
        if s is None:
            return None
        enums = {f.name for f in self.fields if f.kind == "enum"}
        # an enum compared with a literal must name a declared value: test its text instead
        shape = self.draw(st.sampled_from((1, 2, 3, 4, 5, 7) if s in enums else range(9)))
        if shape == 0:
            return f"{s} == {lit(self.pick(STRINGS))}"
        if shape == 1:
            return f"{s} contains {lit(self.pick(STRINGS))}"
        if shape == 2:
            return f"{s} starts_with {lit(self.pick(STRINGS))}"
        if shape == 3:
            return f"{s} ends_with {lit(self.pick(STRINGS))}"
        if shape == 4:
            return f"{s} matches {lit(self.pick(PATTERNS))}"
        if shape == 5:
            return f"len({s}) {self.pick(('>', '<=', '=='))} {self.pick((0, 1, 2, 3))}"
        if shape == 6:
            return f"{s} in {lit(self.draw(st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3, unique=True)))}"
        if shape == 7:
            return f"lower({s}) == {lit(self.pick(('ab', 'abc', 'x')))}"
        return f"{s} != {lit(self.pick(STRINGS))}"

    def var_name(self, default: str, element_kind: str) -> str:
        """The quantifier variable: usually `default`, sometimes shadowing a field or a let."""
        if self.chance(0.1):
            same = [f.name for f in self.fields if f.kind == element_kind and "." not in f.name]
            if same:
                return self.pick(same)
        if self.chance(0.05) and self.bool_lets:
            return self.pick(self.bool_lets)
        return default

    def atom_set(self, guarded):
        fs = [guarded] if guarded is not None else self.plain("set")
        if not fs:
            return None
        f = self.pick(fs)
        s = lit(self.pick(STRINGS))
        shape = self.draw(st.integers(0, 7))
        if shape == 0:
            return f"{s} in {f.name}"
        if shape == 1:
            return f"{f.name} contains {s}"
        if shape == 2:
            return f"{s} not in {f.name}"
        if shape == 3:
            return f"len({f.name}) {self.pick(('>=', '==', '<'))} {self.pick((0, 1, 2))}"
        var = self.var_name("l", "string")
        return f"{self.pick(('any', 'any', 'all'))} {var} in {f.name}: ({self.string_body(var)})"

    def string_body(self, var: str) -> str:
        parts = []
        for _ in range(self.draw(st.integers(1, 2))):
            shape = self.draw(st.integers(0, 9))
            if shape == 0:
                parts.append(f"{var} == {lit(self.pick(STRINGS))}")
            elif shape == 1:
                parts.append(f"{var} starts_with {lit(self.pick(STRINGS))}")
            elif shape == 2:
                parts.append(f"lower({var}) == {lit(self.pick(('ab', 'abc')))}")
            elif shape == 3:
                parts.append(f"len({var}) > {self.pick((0, 1, 2))}")
            elif shape == 4:
                parts.append(f"{var} in {lit(self.draw(st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3, unique=True)))}")
            elif shape == 5:
                parts.append(f"1 / len({var}) > {lit(self.pick((0.3, 0.5, 0)))}")  # an empty element divides by zero
            elif shape == 6:
                parts.append(f"{var} matches {lit(self.pick(PATTERNS))}")
            elif shape == 7:
                other = self.string_operand()
                parts.append(f"{var} == {other}" if other else f"{var} contains \"a\"")
            elif shape == 8:
                opt = [f for f in self.fields if f.optional and f.kind == "string"]
                parts.append(f"(has {opt[0].name} and {opt[0].name} contains {var})" if opt else f"{var} ends_with \"c\"")
            else:
                opt = [f for f in self.fields if f.optional and f.kind == "string"]
                parts.append(f"not (has {opt[0].name} and {opt[0].name} starts_with {var})" if opt else f"not {var} == \"x\"")
        if len(parts) == 1:
            return parts[0]
        return f" {self.pick(('and', 'or'))} ".join(p if not p.startswith("not ") else f"({p})" for p in parts)

    def atom_list(self, guarded):
        fs = [guarded] if guarded is not None else self.plain("list")
        if not fs:
            return None
        f = self.pick(fs)
        shape = self.draw(st.integers(0, 6))
        if shape == 0:
            return f"{self.pick(INTS)} in {f.name}"
        if shape == 1:
            return f"{f.name} contains {self.pick(INTS)}"
        if shape == 2:
            return f"len({f.name}) {self.pick(('==', '>'))} {self.pick((0, 1, 2))}"
        var = self.var_name("n", "int")
        body = self.pick(
            (
                f"{var} > {self.pick(INTS)}",
                f"10 / {var} > 1",
                f"{var} in [0, 1, 2]",
                f"{var} * 2 >= {self.num_operand()}",
                f"{var} == {self.num_operand()}",
                f"{var} > 0 and 10 / {var} >= 2",
                f"{var} != 3 or 5 / {var} < 1",
            )
            + tuple(f"has {o.name} and {var} < {o.name}" for o in self.fields if o.optional and o.kind == "int")
        )
        return f"{self.pick(('any', 'any', 'all'))} {var} in {f.name}: ({body})"

    def atom_let(self, guarded):
        if not self.bool_lets:
            return None
        name = self.pick(self.bool_lets)
        shape = self.draw(st.integers(0, 5))
        if shape <= 3:
            return name
        return f"{name} {self.pick(('==', '!='))} {lit(self.chance(0.5))}"  # the let's logic inside one atom

    def atom_has(self, guarded):
        """`has` on its own or compared: reads nothing, so needs no guard."""
        opt = [f for f in self.fields if f.optional]
        if not opt:
            return None
        f = self.pick(opt)
        if self.chance(0.6):
            return f"has {f.name} {self.pick(('==', '!='))} {lit(self.chance(0.5))}"
        reads = self.atom_text(f)
        return f"(has {f.name} and {reads}) == {lit(self.chance(0.5))}"

    # ---- boolean structure ----

    def guarded_group(self) -> Node | None:
        """`has f and <reads of f>` (or a guard let and reads), one conjunction."""
        if self.groups and self.chance(0.25):
            return self.pick(self.groups)
        if self.guard_lets and self.chance(0.35):
            name = self.pick(sorted(self.guard_lets))
            node = conj(atom(name), self.atom(self.guard_lets[name]))
        else:
            opt = [f for f in self.fields if f.optional]
            if not opt:
                return None
            f = self.pick(opt)
            parts = [atom(f"has {f.name}")] + [self.atom(f) for _ in range(self.draw(st.integers(1, 2)))]
            if self.chance(0.3):
                parts.reverse()  # the guard need not come first
            node = conj(*parts)
        self.groups.append(node)
        return node

    def expr(self, depth: int) -> Node:
        choice = self.draw(st.integers(0, 9 if depth > 0 else 5))
        if choice <= 3:
            node = self.atom()
        elif choice <= 5:
            node = self.guarded_group() or self.atom()
        elif choice <= 7:
            node = Node(self.pick(("and", "or")), "", [self.expr(depth - 1) for _ in range(self.draw(st.integers(2, 3)))])
        elif choice == 8:
            node = Node("not", "", [self.expr(depth - 1)])
        else:
            node = self.expr(depth - 1)
            node = Node(node.kind, node.text, node.children, parens=True)
        return node

    def dispatch(self) -> Node:
        topic = next(f for f in self.fields if f.name == "topic")
        shape = self.draw(st.integers(0, 9))
        if shape <= 6:
            return atom(f"topic == {lit(self.pick(topic.values))}")
        if shape <= 8:
            vs = self.draw(st.lists(st.sampled_from(topic.values), min_size=1, max_size=3, unique=True))
            return atom(f"topic in {lit(vs)}")
        return atom(f"{lit(self.pick(topic.values))} == topic")

    def second_dispatch(self) -> Node | None:
        """An equality test on another enum field: nested dispatch nodes."""
        fs = [f for f in self.plain("enum") if f.name != "topic"]
        if not fs:
            return None
        f = fs[0]
        if self.chance(0.8):
            return atom(f"{f.name} == {lit(self.pick(f.values))}")
        vs = self.draw(st.lists(st.sampled_from(f.values), min_size=1, max_size=2, unique=True))
        return atom(f"{f.name} in {lit(vs)}")

    def condition(self) -> Node:
        if self.chance(0.75):
            parts = [self.dispatch()]
            if self.chance(0.1):
                parts.append(self.dispatch())  # sometimes two tests on topic: a contradiction or a narrowing
            if self.chance(0.3):
                parts.append(self.second_dispatch() or self.atom())
            parts += [self.expr(2) for _ in range(self.pick((0, 0, 1, 1, 2)))]
            return conj(*parts) if len(parts) > 1 else parts[0]
        return self.expr(3)

    # ---- lets ----

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def let(self, prefix: str = "") -> str:
        """Draw one let, make it visible to what follows, return its `let` line."""
        kind = self.draw(st.integers(0, 9))
        opt = [f for f in self.fields if f.optional]
        if kind <= 4:
            name = self.fresh(prefix + "lb_")
            text = self.expr(2).render()
            self.bool_lets.append(name)
        elif kind <= 5 and opt:
            f = self.pick(opt)
            name = self.fresh(prefix + "lg_")
            text = conj(atom(f"has {f.name}"), self.atom(f)).render()
            self.guard_lets[name] = f
        elif kind <= 8:
            name = self.fresh(prefix + "lv_")
            text = self.num_operand()
            self.num_lets.append(name)
        else:
            strs = self.plain(("string", "enum"))
            if not strs:
                return self.let(prefix)
            name = self.fresh(prefix + "ls_")
            text = f"lower({self.pick(strs).name})"
            self.str_lets.append(name)
        return f"let {name} = {text}"


# ---- policies ---------------------------------------------------------------------------


def _action(g: _Gen) -> str:
    verdict = g.pick(("allow", "remove", "intervene", "intervene"))
    if verdict != "intervene":
        return verdict
    ivs = []
    for _ in range(g.draw(st.integers(1, 3))):
        name = g.pick(INTERVENTIONS)
        n_args = g.draw(st.integers(0, 2))
        if n_args == 0:
            ivs.append(name + g.pick(("", "()")))
            continue
        keys = g.draw(st.lists(st.sampled_from(ARG_KEYS), min_size=n_args, max_size=n_args, unique=True))
        ivs.append(f"{name}(" + ", ".join(f"{k}: {g.pick(ARG_VALUES)}" for k in keys) + ")")
    return "intervene " + ", ".join(ivs)


def _policy(draw, name: str, fields: list[FieldSpec], top_bool: list[str], top_guard: dict[str, FieldSpec]) -> str:
    g = _Gen(draw, fields, top_bool, top_guard)
    lines = [f"policy {name} for content {{"]
    if g.chance(0.5):
        lines.append(f'  version "{g.pick(("2022-06", "v2", "1"))}"')
    combine = g.pick(("most_severe", "first_match", None))
    if combine:
        lines.append(f"  combine {combine}")
    lets = [f"  {g.let()}" for _ in range(draw(st.integers(0, 4)))]
    lets_first = g.chance(0.7)
    if lets_first:
        lines += lets
    n_rules = draw(st.integers(1, 12))
    # A "table" policy: most rules are `topic == V` plus one of a few shared residuals, so
    # dispatch branches share code (the shape the code generator optimises for).
    residuals = [None] + [g.expr(1) for _ in range(draw(st.integers(1, 2)))] if g.chance(0.35) else []
    for i in range(n_rules):
        shadow = "shadow " if g.chance(0.15) else ""
        if residuals and g.chance(0.85):
            residual = g.pick(residuals)
            cond = (conj(g.dispatch(), residual) if residual is not None else g.dispatch()).render()
        else:
            cond = g.condition().render()
        lines.append(f"  {shadow}rule r{i} {{")
        lines.append(f"    when {cond}")
        lines.append(f"    then {_action(g)}")
        lines.append(f'    because "reason {i}"')
        if g.chance(0.3):
            lines.append(f'    cite "section {i}"')
        lines.append("  }")
    if not lets_first:
        lines += lets
    if g.chance(0.6):
        lines.append(f'  otherwise {_action(g)} because "default"')
    lines.append("}")
    return "\n".join(lines) + "\n"


@st.composite
def policy_files(draw) -> dict[str, str]:
    """A random, well-typed policy set: {path: source}."""
    fields = draw(schemas())
    files: dict[str, str] = {}
    schema = schema_text(fields)
    top_bool: list[str] = []
    top_guard: dict[str, FieldSpec] = {}
    imports = ""
    folder = draw(st.sampled_from(("", "", "team/")))  # policy files beside common.pol or below it
    if draw(st.integers(0, 9)) < 3:
        g = _Gen(draw, fields, [], {})
        top = [g.let("top_") for _ in range(draw(st.integers(1, 2)))]
        top_bool, top_guard = g.bool_lets, g.guard_lets
        files["common.pol"] = "\n".join(top) + "\n"
        imports = f'import "{"../" if folder else ""}common.pol"\n'
    n_policies = draw(st.sampled_from((1, 1, 1, 2, 2, 3)))
    policies = [_policy(draw, f"p{i}", fields, top_bool, top_guard) for i in range(n_policies)]
    if n_policies > 1 and draw(st.booleans()):
        files[f"{folder}policies.pol"] = imports + "\n".join(policies)
    else:
        for i, text in enumerate(policies):
            files[f"{folder}p{i}.pol"] = imports + text
    if draw(st.booleans()):
        files["schema.pol"] = schema
    else:
        first = sorted(p for p in files if p != "common.pol")[0]
        files[first] = schema + files[first]
    return files


# ---- inputs ------------------------------------------------------------------------------


def _pools(files: Mapping[str, str]) -> tuple[list[ast.FieldDecl], dict[str, set]]:
    """The schema's fields, and for each the literals it is compared with, one way or another."""
    parsed = []
    for path, text in sorted(files.items()):
        tree, _, diags = parse_text(path, text if isinstance(text, str) else text.decode("utf-8"))
        assert tree is not None, [d.message for d in diags]
        parsed.append(tree)
    decls = [d for f in parsed for s in f.of(ast.Schema) for d in s.fields]
    names = {d.dotted for d in decls}
    pools: dict[str, set] = {d.dotted: set() for d in decls}
    exprs: list[ast.Expr] = []
    for f in parsed:
        exprs += [let.expr for let in f.of(ast.Let)]
        for p in f.of(ast.Policy):
            exprs += [let.expr for let in p.lets] + [r.when for r in p.rules if r.when is not None]

    def scan(e, vars: dict[str, str]) -> tuple[set[str], set]:
        """(fields below e, literals below e), adding each literal to the pools of fields beside it."""
        if isinstance(e, ast.Literal):
            return set(), {e.value}
        if isinstance(e, ast.Name):
            if len(e.parts) == 1 and e.parts[0] in vars:
                return {vars[e.parts[0]]}, set()
            return ({e.dotted} if e.dotted in names else set()), set()
        if isinstance(e, ast.Quantifier):
            scan(e.body, {**vars, e.var: e.collection.dotted})
            return {e.collection.dotted}, set()
        children = ast_children(e)
        fs: set[str] = set()
        ls: set = set()
        for c in children:
            cf, cl = scan(c, vars)
            fs |= cf
            ls |= cl
        if isinstance(e, (ast.Binary, ast.ListLiteral, ast.Call, ast.Unary)):
            for name in fs:
                pools[name] |= ls
            return fs, ls
        return set(), set()

    for e in exprs:
        scan(e, {})
    return decls, pools


def ast_children(e) -> tuple:
    if isinstance(e, ast.BoolOp):
        return e.operands
    if isinstance(e, (ast.Not, ast.Unary)):
        return (e.operand,)
    if isinstance(e, ast.Binary):
        return (e.left, e.right)
    if isinstance(e, ast.Call):
        return e.args
    if isinstance(e, ast.ListLiteral):
        return e.items
    if isinstance(e, ast.Quantifier):
        return (e.body,)
    return ()


def _numbers(pool: set, kind: str, near: bool) -> list:
    """The numeric literals of `pool` (and 0), or with `near` their neighbours too."""
    out = {0}
    for v in pool:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.add(v)
            if near:
                out |= {v - 1, v + 1} if kind == "int" else {v - 0.5, v + 0.5, v - 1, v + 1}
    if kind == "int":
        out = {int(v) for v in out if float(v).is_integer()}
    return sorted(out)


def _number_strategy(pool: set, kind: str) -> st.SearchStrategy:
    exact = st.sampled_from(_numbers(pool, kind, near=False))
    near = st.sampled_from(_numbers(pool, kind, near=True))
    return st.one_of(exact, exact, near, st.integers(-3, 12))


def _value_strategy(decl: ast.FieldDecl, pool: set) -> st.SearchStrategy:
    t = decl.type
    strings = sorted({v for v in pool if isinstance(v, str)} | set(SAMPLE_STRINGS))
    if isinstance(t, ast.EnumType):
        return st.one_of(st.sampled_from(t.values), st.sampled_from(t.values), st.sampled_from(t.values), st.sampled_from(t.values), st.just("zz_unknown"))
    if isinstance(t, ast.CollectionType):
        if t.element.name == "int":
            return st.lists(_number_strategy(pool, "int"), max_size=4)
        if isinstance(t.element, ast.EnumType):
            return st.lists(st.sampled_from(t.element.values), max_size=3)
        return st.lists(st.sampled_from(strings), max_size=4)
    if t.name == "int":
        ints = _number_strategy(pool, "int")
        return st.one_of(ints, ints, ints, ints.map(float))  # 3.0 is an int on the wire
    if t.name == "float":
        floats = _number_strategy(pool, "float")
        return st.one_of(floats, floats, floats, st.floats(-3, 12, allow_nan=False))  # ints included: accepted for floats
    if t.name == "bool":
        return st.booleans()
    pieces = st.lists(st.sampled_from(strings), max_size=3).map("".join)
    return st.one_of(pieces, pieces.map(str.upper), st.sampled_from(strings))


@st.composite
def _annotations(draw, decls: list[ast.FieldDecl], pools: dict[str, set]) -> dict:
    out: dict = {}
    for d in decls:
        present = 9 if d.default is None and not d.optional else draw(st.integers(0, 9))
        if present < 4:
            continue  # left out: the default applies, or the optional field is absent
        value = None if present == 4 else draw(_value_strategy(d, pools[d.dotted]))
        target = out
        for part in d.path[:-1]:
            target = target.setdefault(part, {})
        target[d.path[-1]] = value
    for key, obj in list(out.items()):
        if isinstance(obj, dict) and all(v is None for v in obj.values()) and draw(st.booleans()):
            out[key] = None  # a null object: every field in it is absent
    return out


def annotations_for(files: Mapping[str, str]) -> st.SearchStrategy[dict]:
    """Inputs for the policy set `files`, drawn to hit the literals its rules test."""
    decls, pools = _pools(files)
    return _annotations(decls, pools)


@dataclass
class PolicyCase:
    files: dict[str, str]
    inputs: list[tuple[dict, list[str] | None]]  # (annotations, policies to evaluate: None for all)

    def __repr__(self) -> str:
        shown = "\n".join(f"--- {p}\n{t}" for p, t in sorted(self.files.items()))
        return f"PolicyCase(\n{shown}\ninputs={self.inputs!r})"


@st.composite
def policy_cases(draw, inputs: int = 8) -> PolicyCase:
    """A random policy set with `inputs` random inputs for it, some for a subset of its policies, in any order."""
    files = draw(policy_files())
    names = sorted(p.name for path, text in files.items() for p in parse_text(path, text)[0].of(ast.Policy))
    strategy = annotations_for(files)
    chosen = st.one_of(st.none(), st.none(), st.none(), st.permutations(names).flatmap(lambda ps: st.integers(1, len(ps)).map(lambda n: ps[:n])))
    return PolicyCase(files, [(draw(strategy), draw(chosen)) for _ in range(inputs)])
