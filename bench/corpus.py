"""Benchmark cases: policy sources (pol), their structure (for the peer encodings and the
floors) and deterministic annotation corpora.

Every case is described once here, as data; ``bench/floors.py`` and ``bench/peers.py`` turn
that data into a hand-written baseline and into zen / Cedar / CEL encodings. The smuggling
case is special: its floor is hand-written against the embedded source below, so a change to
``SMUGGLING_SOURCE`` must be mirrored in ``floors.floor_smuggling`` and ``SMUGGLING_RULES``
(``--verify`` catches a drift between pol and the floor once the engine lands).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Severity order of the language (LANGUAGE.md section 5): remove > intervene > allow.
SEVERITY = {"allow": 0, "intervene": 1, "remove": 2}
VERDICTS = ("allow", "intervene", "remove")

# The name every encoding (and the floor) uses for the deciding "rule" when no rule matched.
OTHERWISE = "otherwise"

# --------------------------------------------------------------------------------------------
# (a) The shipped human smuggling policy: bench keeps its own copy so the floor stays in step.
# --------------------------------------------------------------------------------------------

SMUGGLING_SOURCE = '''\
schema content {
  topic: enum("human_smuggling", "migration", "weapons", "other")
  intent: enum("offer", "solicit", "share_info", "report", "other")
  confidence: float
  mentions_minor: bool = false
  labels: set<string> = []
  language: string = "und"
  author.account_age_days?: int
  author.is_verified: bool = false
  text?: string
}
policy human_smuggling for content {
  version "2022-06"
  combine most_severe
  let about_smuggling = topic == "human_smuggling"
  let high_confidence = confidence >= 0.8
  rule offer_smuggling {
    when about_smuggling and intent == "offer" and high_confidence
    then remove
    because "Offering or facilitating human smuggling services is prohibited."
  }
  rule minor_involved {
    when about_smuggling and mentions_minor
    then remove
    because "Smuggling content that involves minors is removed."
  }
  rule solicit_smuggling {
    when about_smuggling and intent == "solicit"
    then intervene send_resources(resource: "migrant_safety", channel: "inbox")
    because "People may seek safety; those soliciting smugglers are sent safety resources."
  }
  rule border_crossing_info {
    when intent == "share_info" and "illegal_border_crossing" in labels
    then allow
    because "Sharing information related to illegal border crossing is allowed."
  }
  shadow rule new_account_offer {
    when about_smuggling and intent == "offer" and has author.account_age_days and author.account_age_days < 7
    then remove
    because "Trial: offers from brand-new accounts."
  }
  otherwise allow because "No rule of this policy applies."
}
'''


@dataclass(frozen=True)
class Rule:
    name: str
    verdict: str
    shadow: bool = False


# The smuggling rules in file order (the peers' per-rule conditions live in peers.py).
SMUGGLING_RULES = (
    Rule("offer_smuggling", "remove"),
    Rule("minor_involved", "remove"),
    Rule("solicit_smuggling", "intervene"),
    Rule("border_crossing_info", "allow"),
    Rule("new_account_offer", "remove", shadow=True),
)

SMUGGLING_TOPICS = ("human_smuggling", "migration", "weapons", "other")
SMUGGLING_INTENTS = ("offer", "solicit", "share_info", "report", "other")

# --------------------------------------------------------------------------------------------
# (b) Generated policies: N rules keyed on distinct topic values.
# --------------------------------------------------------------------------------------------

GEN_THRESHOLD = 0.5
GEN_INTERVENTION = "add_interstitial"


def gen_verdict(i: int) -> str:
    return ("remove", "intervene", "allow")[i % 3]


def gen_rule_name(i: int) -> str:
    return f"rule_{i}"


def gen_rules(n: int) -> tuple[Rule, ...]:
    return tuple(Rule(gen_rule_name(i), gen_verdict(i)) for i in range(n))


def gen_source(n: int) -> str:
    """pol source for the generated policy with ``n`` rules (rule i: topic == "t{i}")."""
    topics = ", ".join(f'"t{i}"' for i in range(n))
    out = [
        "schema content {",
        f'  topic: enum({topics}, "other")',
        "  confidence: float",
        "}",
        f"policy generated_{n} for content {{",
        '  version "bench"',
        "  combine most_severe",
    ]
    for i in range(n):
        v = gen_verdict(i)
        action = f"intervene {GEN_INTERVENTION}" if v == "intervene" else v
        out += [
            f"  rule {gen_rule_name(i)} {{",
            f'    when topic == "t{i}" and confidence >= {GEN_THRESHOLD}',
            f"    then {action}",
            f'    because "Generated rule {i}."',
            "  }",
        ]
    out += ['  otherwise allow because "No generated rule applies."', "}", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Corpora. Deterministic: seeded random.Random(seed). Confidences carry at most 3 decimals
# (plus exact threshold values and ints, which the schema accepts for a float), so every
# peer's number type (Cedar decimal has 4 fractional digits) represents them exactly.
# --------------------------------------------------------------------------------------------

def _confidence(rng: random.Random, thresholds: tuple[float, ...]) -> float | int:
    r = rng.random()
    if r < 0.10:  # exactly on, or just either side of, a threshold
        t = rng.choice(thresholds)
        return rng.choice((t, round(t - 0.001, 3), round(t + 0.001, 3)))
    if r < 0.13:  # an int where a float is expected
        return rng.choice((0, 1))
    return round(rng.random(), rng.choice((2, 3)))


_OTHER_LABELS = ("spam", "violence", "travel", "news", "satire", "immigration_law")
_LANGS = ("en", "es", "fr", "ar", "und")
_TEXTS = (
    "Looking for a way across, anyone know someone?",
    "Reliable transport north, ask me for prices.",
    "News report about the border situation.",
    "Here is what the law says about asylum requests.",
)


def smuggling_corpus(n: int, seed: int = 0) -> list[dict]:
    """``n`` annotation dicts (wire format: nested ``author`` object) for the smuggling policy.

    Mixes matching and non-matching items: about 45% on-topic, every intent, omitted
    defaulted fields, optional fields present or absent, and ~3% topic / intent values outside
    the schema's enums (accepted by pol with a warning; they match no equality test).
    """
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            topic = "human_smuggling"
        elif r < 0.97:
            topic = rng.choice(SMUGGLING_TOPICS[1:])
        else:
            topic = rng.choice(("extortion", "organ_trade"))  # not in the enum
        r = rng.random()
        if r < 0.97:
            intent = rng.choice(SMUGGLING_INTENTS)
        else:
            intent = "recruit"  # not in the enum
        a: dict = {"topic": topic, "intent": intent, "confidence": _confidence(rng, (0.8,))}
        if rng.random() < 0.6:
            a["mentions_minor"] = rng.random() < 0.15
        if rng.random() < 0.7:
            labels = rng.sample(_OTHER_LABELS, rng.randrange(0, 3))
            if rng.random() < 0.35:
                labels.insert(rng.randrange(len(labels) + 1), "illegal_border_crossing")
            a["labels"] = labels
        if rng.random() < 0.5:
            a["language"] = rng.choice(_LANGS)
        if rng.random() < 0.7:
            author: dict = {}
            if rng.random() < 0.6:
                author["account_age_days"] = rng.choice((0, 1, 3, 6, 7, 8, 30, 400))
            if rng.random() < 0.5:
                author["is_verified"] = rng.random() < 0.2
            a["author"] = author
        if rng.random() < 0.3:
            a["text"] = rng.choice(_TEXTS)
        items.append(a)
    return items


def generated_corpus(n_rules: int, n: int, seed: int | None = None) -> list[dict]:
    """``n`` annotation dicts for the generated policy with ``n_rules`` rules.

    ~70% of items name a topic some rule keys on (uniform over t0..t{N-1}), ~22% are "other"
    (in the enum, mentioned by no rule) and ~8% are t{N}.. values outside the enum.
    """
    rng = random.Random(n_rules if seed is None else seed)
    items = []
    for _ in range(n):
        r = rng.random()
        if r < 0.70:
            topic = f"t{rng.randrange(n_rules)}"
        elif r < 0.92:
            topic = "other"
        else:
            topic = f"t{n_rules + rng.randrange(5)}"  # not in the enum
        items.append({"topic": topic, "confidence": _confidence(rng, (GEN_THRESHOLD,))})
    return items


# --------------------------------------------------------------------------------------------
# Case registry.
# --------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str                 # "smuggling" or the rule count as a string
    source: str               # pol source
    rules: tuple[Rule, ...]   # in file order
    corpus: list[dict] = field(repr=False)
    n_rules: int | None = None  # for generated cases


ALL_CASES = ("smuggling", "10", "100", "1000", "10000")


def make_case(name: str, corpus_size: int) -> Case:
    if name == "smuggling":
        # Seed 0 for the shipped policy (the generated cases use random.Random(N)).
        return Case(name, SMUGGLING_SOURCE, SMUGGLING_RULES, smuggling_corpus(corpus_size, seed=0))
    n = int(name)
    return Case(name, gen_source(n), gen_rules(n), generated_corpus(n, corpus_size), n_rules=n)
