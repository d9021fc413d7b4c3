"""The clauses of a compound work order, in the order they are to be done.

"Prime the pump, then fill and seal one canister" asks two things, one after the other. A
small model that answers one closed question at a time (the planner's intent mode) reads one
goal per question, so the planner asks about each clause on its own and runs the goals in the
order's sequence (:meth:`llm_coordinator.planner.Planner.plan`).

A clause ends at a semicolon, at the end of a sentence, before a connective that says what
comes next ("then", "puis", "dann"), and at a comma followed by any connective ("…, and send
the robot home"). A bare "and" does not split: "fill and seal" is one action. The connectives
are grammar words of the seven languages the order reader knows
(:data:`llm_coordinator.quantities.LANGUAGES`), not words of any plant.

Nothing here decides that a split is right: the goals read from the clauses must still cover
the whole order, pass the guardrails and the coverage rule, exactly as a one-goal reading must.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Set as AbstractSet

#: Words that begin the next step of an order ("then"), by language. A clause splits before
#: them with or without a comma.
SEQUENCERS: dict[str, tuple[str, ...]] = {
    "en": ("then", "afterwards", "after that", "once that is done", "once that's done", "when done", "finally"),
    "fr": ("puis", "ensuite", "après cela", "après ça", "enfin"),
    "de": ("dann", "danach", "anschließend", "zuletzt"),
    "es": ("luego", "entonces", "finalmente"),
    "it": ("poi", "quindi", "infine"),
    "pt": ("depois", "então", "em seguida", "finalmente"),
    "nl": ("daarna", "vervolgens", "tenslotte"),
}

#: Coordinating words that join two clauses only after a comma ("…, and send …"), by language.
JOINERS: dict[str, tuple[str, ...]] = {
    "en": ("and",),
    "fr": ("et",),
    "de": ("und",),
    "es": ("y", "e"),
    "it": ("e", "ed"),
    "pt": ("e",),
    "nl": (),  # ("en" is French "in": "..., en utilisant le programme 3")
}

#: Words that begin a clause of time within a sentence ("before", "once", "while"), by language:
#: no place to split an order at (the clause belongs to its sentence), but where one action
#: ends and the next begins, for reading each action's words (:data:`CLAUSE_BREAK`).
SUBORDINATORS: dict[str, tuple[str, ...]] = {
    "en": ("after", "before", "once", "while", "when", "next"),
    "fr": ("avant", "après", "quand", "lorsque", "pendant"),
    "de": ("bevor", "nachdem", "wenn", "während", "sobald"),
    "es": ("antes", "cuando", "mientras", "después"),
    "it": ("prima", "quando", "mentre", "dopo"),
    "pt": ("antes", "quando", "enquanto", "após"),
    "nl": ("voordat", "nadat", "wanneer", "terwijl", "zodra"),
}

#: Words that put what they begin before what came earlier ("...; before that, home the arm",
#: "... First home the arm"): an order that says so is not split (its clauses would run in the
#: wrong sequence).
REVERSERS = frozenset(
    {
        *("before", "beforehand", "first", "prior", "earlier"),
        *("avant", "d'abord", "auparavant"),
        *("zuerst", "vorher", "davor", "zunächst"),
        *("antes", "primero", "primeramente"),
        *("prima", "innanzitutto"),
        *("primeiro",),
        *("eerst", "daarvoor", "vooraf"),
    }
)

#: Words that negate a clause ("do not home the arm"), by language: a compound order with one is
#: not read clause by clause (a clause's goal would be the thing it forbids).
NEGATIONS = frozenset(
    {
        *("not", "no", "never", "without", "dont", "don't", "doesn't", "mustn't", "shouldn't", "neither", "nor"),
        *("ne", "n'", "pas", "jamais", "sans", "ni"),
        *("nicht", "nie", "kein", "keine", "keinen", "keiner", "ohne", "weder"),
        *("nunca", "sin", "tampoco"),
        *("non", "mai", "senza", "né"),
        *("não", "nem", "sem"),
        *("niet", "nooit", "geen", "zonder"),
    }
)

#: More clauses than this is no order a supervisor writes in one line: not split.
MAX_CLAUSES = 4

_ALL_SEQUENCERS = sorted({w for ws in SEQUENCERS.values() for w in ws}, key=len, reverse=True)
_ALL_JOINERS = sorted({w for ws in JOINERS.values() for w in ws}, key=len, reverse=True)


def _alternation(words: list[str]) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"\s+").replace("'", "['’]") for w in words)


# A sentence ends at . ! ? followed by a space (never inside "0.75"); a semicolon always ends a clause.
_HARD = re.compile(r"\s*;\s*|(?<=[.!?])\s+(?=\S)")
# Before a sequencer (with or without a comma, and after an optional joiner: "and then").
_SEQ = re.compile(
    rf",?\s+(?:(?:{_alternation(_ALL_JOINERS)})\s+)?(?=(?:{_alternation(_ALL_SEQUENCERS)})\b)", re.IGNORECASE
)
# At a comma followed by a joiner.
_JOIN = re.compile(rf",\s*(?=(?:{_alternation(_ALL_JOINERS)})\s)", re.IGNORECASE)
_LEADING = re.compile(rf"^(?:(?:{_alternation(_ALL_JOINERS)}|{_alternation(_ALL_SEQUENCERS)})\b[\s,]*)+", re.IGNORECASE)


def split_clauses(order: str) -> list[str]:
    """The clauses of ``order`` in its own sequence, each without its leading connective words
    (see the module docstring); ``[order]`` when it has one clause, or more than
    :data:`MAX_CLAUSES`, or a piece with no word left."""
    text = " ".join(order.split())
    pieces = [text]
    for rule in (_HARD, _SEQ, _JOIN):
        pieces = [p for piece in pieces for p in rule.split(piece)]
    clauses = [_LEADING.sub("", p).strip(" ,.;:!?") for p in pieces]
    clauses = [c for c in clauses if c]
    if len(clauses) < 2 or len(clauses) > MAX_CLAUSES:
        return [text]
    # A piece that is only connectives or punctuation, or a lone word, is no clause of its own.
    if any(len(re.findall(r"[^\W_]+", c)) < 2 for c in clauses):
        return [text]
    # "...; before that, home the arm": the pieces' sequence is not the order's.
    if any(_words(c) & REVERSERS for c in clauses[1:]) or any(_words(p) & REVERSERS for p in pieces[1:]):
        return [text]
    return clauses


def _words(text: str) -> set[str]:
    return {w.casefold() for w in re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)?|[^\W\d_]+['’]", text)}


def negated(text: str) -> bool:
    """Whether ``text`` has a word of :data:`NEGATIONS` ("do not", "n't", "nicht")."""
    words = {w.replace("’", "'") for w in _words(text)}
    return bool(words & NEGATIONS) or any(w.endswith("n't") for w in words)


def negation_of_action(text: str, comparatives: AbstractSet[str]) -> str | None:
    """The first word of :data:`NEGATIONS` in ``text`` that says what not to do, or None. A
    negation before a comparative (folded words of ``comparatives``: "no more than 5 runs", "pas
    plus de") or a number ("no. 3") bounds a count or names one: it forbids no action."""
    found: list[str] = re.findall(r"[^\W_]+(?:['’][^\W\d_]+)?|[^\W\d_]+['’]", text)
    tokens = [w.casefold().replace("’", "'") for w in found]

    def negation(word: str) -> bool:
        return word in NEGATIONS or word.endswith("n't")

    for i, word in enumerate(tokens):
        if negation(word):
            # (the word after the negation's words: "ne pas plus de")
            after = next((w for w in tokens[i + 1 :] if not negation(w)), "")
            if _fold_word(after) in comparatives or after[:1].isdigit():
                continue
            return word
    return None


def _fold_word(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word.lower()) if not unicodedata.combining(c))


#: Where one action of an order ends and the next begins, in the folded text (lower case, no
#: accents) :mod:`llm_coordinator.order` reads: punctuation, and the connectives and time words
#: above of three letters or more, in any of the languages.
CLAUSE_BREAK = re.compile(
    r"[.;,:!?]|\b(?:"
    + "|".join(
        sorted(
            {
                _fold_word(w).replace(" ", r"\s+").replace("'", "'?")
                for table in (SEQUENCERS, JOINERS, SUBORDINATORS)
                for ws in table.values()
                for w in ws
                if len(w) >= 3  # ("en" is Dutch "and" and French "in")
            },
            key=len,
            reverse=True,
        )
    )
    + r")\b"
)
