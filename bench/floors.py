"""Floors: the hand-written Python a good engineer would write for each benchmark policy.

Each floor takes the annotation dict (wire format, defaults may be omitted) and returns
``(verdict, deciding_rule)``. They do no schema validation and build no justification: they
are the lower bound every engine is compared with.
"""

from __future__ import annotations

from bench.corpus import GEN_THRESHOLD, OTHERWISE, Case, gen_rule_name, gen_verdict

_OTHERWISE_ALLOW = ("allow", OTHERWISE)


def floor_smuggling(a: dict) -> tuple[str, str]:
    """The human smuggling policy, most_severe, by hand.

    Remove rules are tried first (in file order, so the first matching remove rule decides),
    then intervene, then allow; the shadow rule never decides so it is not evaluated.
    """
    intent = a["intent"]
    if a["topic"] == "human_smuggling":
        if intent == "offer" and a["confidence"] >= 0.8:
            return ("remove", "offer_smuggling")
        if a.get("mentions_minor", False):
            return ("remove", "minor_involved")
        if intent == "solicit":
            return ("intervene", "solicit_smuggling")
    if intent == "share_info" and "illegal_border_crossing" in a.get("labels", ()):
        return ("allow", "border_crossing_info")
    return _OTHERWISE_ALLOW


def make_generated_floor(n_rules: int):
    """Rules keyed on distinct topics: a dict lookup on topic, then the confidence check."""
    table = {f"t{i}": (gen_verdict(i), gen_rule_name(i)) for i in range(n_rules)}
    get = table.get
    threshold = GEN_THRESHOLD

    def floor_generated(a: dict) -> tuple[str, str]:
        hit = get(a["topic"])
        if hit is not None and a["confidence"] >= threshold:
            return hit
        return _OTHERWISE_ALLOW

    return floor_generated


def make_floor(case: Case):
    if case.name == "smuggling":
        return floor_smuggling
    return make_generated_floor(case.n_rules)
