"""Peer engines (the ``[bench]`` extra): the same policies on zen-engine, Cedar and CEL.

Every peer gets the same annotation dict the floor and pol get, and returns
``(verdict, deciding_rule)``. Any adapting of the dict to the peer's input model is done per
call, inside the measured cost. The encodings follow pol's most_severe contract: every rule
(shadow rules included, as pol evaluates and reports them) is evaluated, the matching rules
are collected, and the most severe non-shadow match decides (ties: first in file order);
``otherwise`` when none matches. Schema defaults are expressed in the peer's own language
where it has a way to (zen ``??``/``== true``, Cedar ``has``), else filled by the adapter
(CEL). No peer validates the input against the schema; pol does.

Build (compile) happens once per case; ``decide`` is the per-decision path.
"""

from __future__ import annotations

import json
import time
from importlib import metadata

from bench.corpus import GEN_THRESHOLD, OTHERWISE, SEVERITY, Case

PEER_PACKAGES = {"zen": "zen-engine", "cedar": "cedarpy", "cel": "common-expression-language"}


def peer_version(peer: str) -> str | None:
    try:
        return metadata.version(PEER_PACKAGES[peer])
    except metadata.PackageNotFoundError:
        return None


def peer_available(peer: str) -> tuple[bool, str]:
    """(available, reason) without failing when the extra is not installed."""
    mod = {"zen": "zen", "cedar": "cedarpy", "cel": "cel"}[peer]
    try:
        __import__(mod)
    except ImportError as e:
        return False, f"{PEER_PACKAGES[peer]} not installed ({e}); pip install '.[bench]'"
    return True, ""


class _Picker:
    """most_severe over a set of matching rule indices (file order = index order)."""

    def __init__(self, case: Case):
        self.names = [r.name for r in case.rules]
        self.verdicts = [r.verdict for r in case.rules]
        # Key to maximise: (severity, -index); None for shadow rules (never decide).
        self.keys = [None if r.shadow else (SEVERITY[r.verdict], -i) for i, r in enumerate(case.rules)]
        self.otherwise = ("allow", OTHERWISE)

    def pick(self, matches) -> tuple[str, str]:
        keys = self.keys
        best = None
        best_i = -1
        for i in matches:
            k = keys[i]
            if k is not None and (best is None or k > best):
                best = k
                best_i = i
        if best is None:
            return self.otherwise
        return (self.verdicts[best_i], self.names[best_i])


class Peer:
    name = "peer"
    note = ""
    build_seconds = 0.0

    def decide(self, a: dict) -> tuple[str, str]:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, a: dict) -> tuple[str, str]:
        """Like decide, but raise on anything the peer reports as an evaluation error."""
        return self.decide(a)


# ============================================================================================
# zen-engine (GoRules JDM): one decision table, hit policy "collect".
# ============================================================================================

def _zen_table(case: Case) -> dict:
    if case.name == "smuggling":
        inputs = [
            {"id": "topic", "name": "topic", "field": "topic"},
            {"id": "intent", "name": "intent", "field": "intent"},
            {"id": "conf", "name": "confidence", "field": "confidence"},
            {"id": "minor", "name": "mentions_minor", "field": "mentions_minor"},
            {"id": "labels", "name": "labels", "field": "labels"},
            {"id": "age", "name": "author.account_age_days", "field": "author.account_age_days"},
        ]
        hs = '"human_smuggling"'
        cells = [
            {"topic": hs, "intent": '"offer"', "conf": ">= 0.8"},               # offer_smuggling
            {"topic": hs, "minor": "true"},                                      # minor_involved
            {"topic": hs, "intent": '"solicit"'},                                # solicit_smuggling
            {"intent": '"share_info"',
             "labels": '"illegal_border_crossing" in ($ ?? [])'},                # border_crossing_info
            {"topic": hs, "intent": '"offer"', "age": "$ != null and $ < 7"},  # new_account_offer
        ]
    else:
        inputs = [
            {"id": "topic", "name": "topic", "field": "topic"},
            {"id": "conf", "name": "confidence", "field": "confidence"},
        ]
        cells = [{"topic": f'"t{i}"', "conf": f">= {GEN_THRESHOLD}"} for i in range(case.n_rules)]
    rules = []
    for i, c in enumerate(cells):
        row = {"_id": f"r{i}", **{inp["id"]: c.get(inp["id"], "") for inp in inputs}, "rule": str(i)}
        rules.append(row)
    return {
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "Request",
             "position": {"x": 0, "y": 0}, "content": {"schema": ""}},
            {"id": "table", "type": "decisionTableNode", "name": case.name,
             "position": {"x": 300, "y": 0},
             "content": {"hitPolicy": "collect", "inputs": inputs,
                         "outputs": [{"id": "rule", "name": "rule", "field": "rule"}],
                         "rules": rules}},
            {"id": "out", "type": "outputNode", "name": "Response",
             "position": {"x": 600, "y": 0}, "content": {"schema": ""}},
        ],
        "edges": [
            {"id": "e1", "sourceId": "in", "targetId": "table", "type": "edge"},
            {"id": "e2", "sourceId": "table", "targetId": "out", "type": "edge"},
        ],
    }


class ZenEnginePeer(Peer):
    """``ZenEngine`` with a static loader, ``engine.evaluate(key, annotations)``.

    The engine compiles the static decision once and reuses it; this is the fast path.
    """

    name = "zen engine.evaluate"
    note = "static loader, compiled once"

    def __init__(self, case: Case):
        import zen

        doc = _zen_table(case)
        t = time.perf_counter()
        self.engine = zen.ZenEngine({"loader": {"type": "static", "content": {"bench": doc}}})
        self.engine.evaluate("bench", case.corpus[0])  # force the load/compile
        self.build_seconds = time.perf_counter() - t
        self.picker = _Picker(case)

    def decide(self, a):
        res = self.engine.evaluate("bench", a)["result"]
        return self.picker.pick([r["rule"] for r in res])


class ZenDecisionPeer(Peer):
    """``ZenEngine().create_decision(ZenDecisionContent(json))``, ``decision.evaluate(annotations)``.

    The API the brief names. In zen-engine 2.x the content is precompiled, but each
    ``ZenDecision.evaluate`` pays a large fixed cost in the Python binding (~200 us here,
    with more CPU than wall time: the evaluation is handed to a worker thread).
    """

    name = "zen decision.evaluate"
    note = "create_decision(ZenDecisionContent)"

    def __init__(self, case: Case):
        import zen

        doc = json.dumps(_zen_table(case))
        t = time.perf_counter()
        self.decision = zen.ZenEngine().create_decision(zen.ZenDecisionContent(doc))
        self.build_seconds = time.perf_counter() - t
        self.picker = _Picker(case)

    def decide(self, a):
        res = self.decision.evaluate(a)["result"]
        return self.picker.pick([r["rule"] for r in res])


# ============================================================================================
# Cedar: one ``permit`` policy per rule; ``reasons`` lists every satisfied policy.
# ============================================================================================

def _cedar_conditions(case: Case) -> list[str]:
    if case.name == "smuggling":
        hs = 'context.topic == "human_smuggling"'
        return [
            f'{hs} && context.intent == "offer" && context.confidence.greaterThanOrEqual(decimal("0.8"))',
            f"{hs} && context has mentions_minor && context.mentions_minor",
            f'{hs} && context.intent == "solicit"',
            'context.intent == "share_info" && context has labels'
            ' && context.labels.contains("illegal_border_crossing")',
            f'{hs} && context.intent == "offer" && context has author'
            " && context.author has account_age_days && context.author.account_age_days < 7",
        ]
    return [
        f'context.topic == "t{i}" && context.confidence.greaterThanOrEqual(decimal("{GEN_THRESHOLD:.1f}"))'
        for i in range(case.n_rules)
    ]


class CedarPeer(Peer):
    """cedarpy.is_authorized with a pre-parsed PolicySet and Entities handle.

    Decision ``Allow`` means some rule matched; ``diagnostics.reasons`` names every satisfied
    policy (positional ids ``policy<i>`` = rule i), from which most_severe is picked. One call
    per decision. Adapter: ``confidence`` becomes a Cedar ``decimal`` (Cedar has no float).
    """

    name = "cedar"
    note = "1 is_authorized call; permit per rule"

    def __init__(self, case: Case):
        import cedarpy

        self.cedarpy = cedarpy
        src = "\n".join(
            f'@id("{r.name}")\npermit(principal, action, resource) when {{ {cond} }};'
            for r, cond in zip(case.rules, _cedar_conditions(case))
        )
        t = time.perf_counter()
        self.policies = cedarpy.PolicySet.from_str(src)
        self.entities = cedarpy.Entities.from_json_str("[]")
        self.build_seconds = time.perf_counter() - t
        assert len(self.policies) == len(case.rules)
        self.index = {f"policy{i}": i for i in range(len(case.rules))}
        self.picker = _Picker(case)
        # Entity uids in the dict form: Cedar's surface-syntax uid parser costs ~25 us a call.
        self.principal = {"type": "User", "id": "classifier"}
        self.action = {"type": "Action", "id": "decide"}
        self.resource = {"type": "Content", "id": "item"}

    def _authorize(self, a):
        ctx = dict(a)
        ctx["confidence"] = {"__extn": {"fn": "decimal", "arg": "%.4f" % a["confidence"]}}
        return self.cedarpy.is_authorized(
            {"principal": self.principal, "action": self.action, "resource": self.resource,
             "context": ctx},
            self.policies, self.entities)

    def decide(self, a):
        r = self._authorize(a)
        index = self.index
        return self.picker.pick([index[p] for p in r.diagnostics.reasons])

    def check(self, a):
        r = self._authorize(a)
        if r.diagnostics.errors:
            raise RuntimeError(f"cedar evaluation errors: {r.diagnostics.errors}")
        return self.picker.pick([self.index[p] for p in r.diagnostics.reasons])


# ============================================================================================
# CEL: one compiled program per rule, evaluated in file order against one Context.
# ============================================================================================

_CEL_DEFAULTS = {"mentions_minor": False, "labels": [], "language": "und", "author": {}}


def _cel_expressions(case: Case) -> list[str]:
    if case.name == "smuggling":
        hs = 'topic == "human_smuggling"'
        return [
            f'{hs} && intent == "offer" && confidence >= 0.8',
            f"{hs} && mentions_minor",
            f'{hs} && intent == "solicit"',
            'intent == "share_info" && "illegal_border_crossing" in labels',
            f'{hs} && intent == "offer" && has(author.account_age_days) && author.account_age_days < 7',
        ]
    return [f'topic == "t{i}" && confidence >= {GEN_THRESHOLD}' for i in range(case.n_rules)]


class CelPeer(Peer):
    """``cel.compile`` once per rule; per decision one ``cel.Context`` (the dict conversion is
    done once, not per program) and ``program.execute(ctx)`` for every rule in order.
    Adapter: schema defaults are filled in (CEL has no way to test a top-level variable)."""

    name = "cel"
    note = "1 program per rule, all evaluated"

    def __init__(self, case: Case):
        import cel

        self.Context = cel.Context
        t = time.perf_counter()
        self.programs = [cel.compile(e) for e in _cel_expressions(case)]
        self.build_seconds = time.perf_counter() - t
        self.picker = _Picker(case)
        self.defaults = dict(_CEL_DEFAULTS) if case.name == "smuggling" else {}

    def decide(self, a):
        ctx = self.Context({**self.defaults, **a})
        return self.picker.pick([i for i, p in enumerate(self.programs) if p.execute(ctx)])

    def check(self, a):
        ctx = self.Context({**self.defaults, **a})
        matches = []
        for i, p in enumerate(self.programs):
            v = p.execute(ctx)
            if not isinstance(v, bool):
                raise RuntimeError(f"cel rule {i} returned {v!r}, not a bool")
            if v:
                matches.append(i)
        return self.picker.pick(matches)


PEERS = {
    "zen": (ZenEnginePeer, ZenDecisionPeer),
    "cedar": (CedarPeer,),
    "cel": (CelPeer,),
}
