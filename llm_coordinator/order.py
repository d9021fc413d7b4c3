"""Reading the work order itself, without the model: what it names of the plant, its
quantities, what it names that the plant does not have, the safety measures it touches, and
whether a plan covers it.

Everything here is derived from the plant file (its names, kinds, robot models and makers,
the named values of its tags) and from people's static rules (``safety_measures.yaml``), never
from the words of any test order. Misspellings are matched with rapidfuzz; numbers and units are
read by :mod:`llm_coordinator.quantities`.

- :func:`read_order`: the :class:`OrderFacts` of an order.
- :func:`static_refusals`: what ends an order before any model reads it (a name the plant does
  not have; a safety measure touched).
- :func:`coverage`: the coverage rule. Every agent, place, part type, quantity and condition the
  order names must appear in the plan or be declined in the plan's notes with a reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import unicodedata
import weakref
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from llm_coordinator.clauses import CLAUSE_BREAK, negated
from llm_coordinator.plan import Plan
from llm_coordinator.reading import IfGoal, Reading, RecipeGoal, RepeatGoal, Test, simple_goals
from plant.catalog import ROBOT_MODELS
from plant.config import PlantDescription, RecipeStep

MentionKind = Literal["agent", "place", "part_type", "value", "recipe"]

#: Shortest word that is matched with a typo allowed (shorter words must match exactly).
_FUZZY_MIN = 5
#: Similarity (0..100, rapidfuzz ratio) from which a written word means a plant's word.
_FUZZY_SCORE = 85
#: A word rarer than this (wordfreq's Zipf scale: log10 of uses per billion words, in the order's
#: language) is specific: the name of a thing or an action ("anodise", "forklift"), not a way of
#: asking ("bring", "please"). Such a word that nothing of the plant is named or described with
#: names something the plant may not have: it weighs :data:`RARE_WEIGHT` words in the support a
#: plan needs from the order's words.
RARE_ZIPF = 3.0
RARE_WEIGHT = 3
#: The share of an order's words that common words of the plant's language (or the plant's own)
#: must exceed for the order to be read as written in it: a short French order is not English
#: with strange words.
_OWN_LANGUAGE_SHARE = 0.6


@dataclass(frozen=True)
class Mention:
    """A name of the plant the order uses: ``kind``, the plant's ``name``, the ``text`` as written."""

    kind: MentionKind
    name: str
    text: str


@dataclass
class OrderFacts:
    """What an order names, read from its own words against one plant."""

    mentions: list[Mention] = field(default_factory=list)
    quantities: list[Any] = field(default_factory=list)  # llm_coordinator.quantities.Quantity
    unknown: list[str] = field(default_factory=list)
    safety: list[str] = field(default_factory=list)
    #: The actions the order asks that are rare words nothing of the plant is named or
    #: described with (see :data:`RARE_ZIPF`), folded.
    strange: list[str] = field(default_factory=list)
    #: A word of several places' names, or too short to name one alone, that the order uses
    #: ("the bin", where the plant has bins) -> the places it may mean (see :func:`place_words`).
    places: dict[str, list[str]] = field(default_factory=dict)

    def named(self, kind: MentionKind) -> list[str]:
        return list(dict.fromkeys(m.name for m in self.mentions if m.kind == kind))


def _fold(text: str) -> str:
    """Lower case, accents and hyphens and underscores away, single spaces."""
    t = unicodedata.normalize("NFKD", text.lower())
    t = "".join(c for c in t if not unicodedata.combining(c))
    t = re.sub(r"[-_/]", " ", t)
    t = re.sub(r"[^\w\s'.,]", " ", t)
    return " " + re.sub(r"\s+", " ", t).strip() + " "


def _words(text: str) -> list[str]:
    return [w.removesuffix("'s").strip("'") for w in re.findall(r"[a-z][a-z0-9']*", _fold(text))]


def _phrase_in(phrase: str, folded: str) -> bool:
    p = _fold(phrase).strip()
    return bool(p) and re.search(rf"(?<![a-z0-9]){re.escape(p)}(?:s|es)?(?![a-z0-9])", folded) is not None


# --------------------------------------------------------------------------- the plant's words


def vocabulary(plant: PlantDescription) -> tuple[tuple[str, MentionKind, str], ...]:
    """(phrase, kind, plant name) for every way an order may name a thing of the plant: its name
    (underscores as spaces), a robot's model and maker when only one robot is of that model, a
    machine's kind when only one machine is of that kind, and a word of a name that belongs to
    that name alone ("scrap" for a bin named BIN_scrap)."""
    out: list[tuple[str, MentionKind, str]] = []
    things: list[tuple[MentionKind, str]] = [("agent", a) for a in plant.agents()]
    things += [("place", p) for p in plant.locations()]
    things += [("part_type", t) for t in plant.part_types]
    things += [("recipe", r) for r in plant.recipes]
    for kind, name in things:
        out.append((name.replace("_", " "), kind, name))
    models: dict[str, list[str]] = {}
    for name, r in plant.robots.items():
        models.setdefault(r.model, []).append(name)
    for model, names in models.items():
        if len(names) == 1:
            out.append((model, "agent", names[0]))
            maker = ROBOT_MODELS[model].maker
            out.append((maker, "agent", names[0]))
            # The maker's brand, its first word ("Franka"); not a common word that follows it
            # ("Universal Robots": "robots" names no robot in particular).
            out.append((maker.split()[0], "agent", names[0]))
            # A maker of several words by its initials, where it names its models so ("Universal
            # Robots", whose models are UR-something: "the UR").
            initials = "".join(w[0] for w in maker.split()).lower()
            if len(initials) > 1 and model.lower().startswith(initials):
                out.append((initials.upper(), "agent", names[0]))
    kinds: dict[str, list[str]] = {}
    for name, m in plant.machines.items():
        kinds.setdefault(str(m.kind), []).append(name)
    for machine_kind, names in kinds.items():
        if len(names) == 1 and machine_kind != "other":
            out.append((machine_kind.replace("_", " "), "agent", names[0]))
    # Words of a name that no other name of its kind has (4 letters or more): "scrap" for
    # a bin named BIN_scrap; "WORD" for the one agent named WORD_..., even if places
    # are named WORD_... too.
    word_owner: dict[tuple[str, MentionKind], set[str]] = {}
    for kind, name in things:
        if kind == "recipe":
            continue  # a recipe is named in full or not at all ("fill" is not fill_bottle)
        for w in name.split("_"):
            if len(w) >= 4 and not w.isdigit():
                word_owner.setdefault((w, kind), set()).add(name)
    taken = {p for p, _, _ in out}
    for (w, kind), owners in word_owner.items():
        if len(owners) == 1 and w not in taken:
            out.append((w, kind, next(iter(owners))))
    for mname, m in plant.machines.items():
        for tname, tag in m.tags.items():
            for value in getattr(tag, "values", None) or {}:
                out.append((value.replace("_", " "), "value", f"{mname}.{tname}={value}"))
    return tuple(out)


def _plant_identifiers(plant: PlantDescription) -> set[str]:
    names: set[str] = set(plant.agents()) | set(plant.locations()) | set(plant.part_types) | set(plant.parts)
    names |= set(plant.recipes) | set(plant.zones) | set(plant.stations) | set(plant.people)
    for a in plant.agents():
        names |= set(plant.agent_skills(a))
    for m in plant.machines.values():
        names |= set(m.tags) | {m.kind}
    names |= {p for r in plant.recipes.values() for p in r.params}
    names |= {r.model for r in plant.robots.values()} | {r.tool.model for r in plant.robots.values()}
    return names


# --------------------------------------------------------------------------- safety measures


@cache
def safety_terms() -> tuple[tuple[str, str], ...]:
    data = yaml.safe_load((Path(__file__).with_name("safety_measures.yaml")).read_text(encoding="utf-8"))
    return tuple((term, measure) for measure, langs in data.items() for terms in langs.values() for term in terms)


def safety_findings(order: str, plant: PlantDescription) -> list[str]:
    """The safety measures an order names (the static rule of ``safety_measures.yaml``, and the
    plant's own zones by name): each as "<measure> (<words as written>)"."""
    folded = _fold(order)
    found: dict[str, str] = {}
    for term, measure in safety_terms():
        if measure not in found and _phrase_in(term, folded):
            found[measure] = term
    for name, zone in plant.zones.items():
        if _phrase_in(name.replace("_", " "), folded):
            found.setdefault(f"{zone.kind.replace('_', ' ')} zone {name}", name)
    return [f"{m} ({t!r})" for m, t in found.items()]


# --------------------------------------------------------------------------- reading an order


def read_order(order: str, plant: PlantDescription) -> OrderFacts:
    """The facts of an order (see :class:`OrderFacts`)."""
    from rapidfuzz import fuzz

    from llm_coordinator.quantities import find_quantities, language_of

    facts = OrderFacts()
    folded = _fold(order)
    words = _words(order)
    for phrase, kind, name in vocabulary(plant):
        hit = phrase if _phrase_in(phrase, folded) else None
        if hit is None and " " not in phrase and len(phrase) >= _FUZZY_MIN:
            # The plural endings an exact match allows are allowed with a typo too ("botles").
            hit = next(
                (
                    w
                    for w in words
                    if any(len(v) >= _FUZZY_MIN and fuzz.ratio(v, phrase) >= _FUZZY_SCORE for v in _forms(w))
                ),
                None,
            )
        if hit is not None:
            facts.mentions.append(Mention(kind, name, hit))
    # A more specific mention wins: "press 2 nest" names the nest, not the machine press_2.
    places = [m for m in facts.mentions if m.kind == "place"]
    facts.mentions = [
        m
        for m in facts.mentions
        if not (m.kind == "agent" and any(_fold(m.text).strip() in _fold(p.text) and p.text != m.text for p in places))
    ]
    known = _plant_identifiers(plant)
    for ident in re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b|\b[a-z]+\d+[a-z]?\b", order.lower()):
        if ident not in known and not any(m.text == ident for m in facts.mentions):
            facts.unknown.append(ident)
    try:
        facts.quantities = [q for q in find_quantities(order) if not _inside_name(order, q.start, q.end)]
    except ValueError:
        facts.quantities = []
    facts.safety = safety_findings(order, plant)
    # Compared with the plant's own words only in the plant's own language.
    lang = language_of(order)
    vocab = _plant_words(plant) | {w for m in facts.mentions for w in _text_words(m.text)}
    if _in_language(order, lang, plant, vocab):
        facts.strange = _strange_words(order, facts, lang, vocab)
        named_places = set(facts.named("place"))
        for w, where in place_words(plant).items():
            if _phrase_in(w, folded) and not named_places & set(where):
                facts.places[w] = where
    return facts


def _strange_words(order: str, facts: OrderFacts, lang: str, vocab: AbstractSet[str]) -> list[str]:
    """The actions the order (in ``lang``, the plant's language) asks, that is the first word of
    a clause that is no function word, that are rare words (:data:`RARE_ZIPF`) no word of the
    plant (``vocab``) has, and no misspelling of a plant's word nor of a common word ("sohuld"):
    "anodise" in "Anodise the machined parts". A rare word that is not the action ("1 l of
    degreaser", a customer's name) is context, weighed as any other word."""
    from rapidfuzz import process
    from rapidfuzz.distance import DamerauLevenshtein
    from wordfreq import zipf_frequency

    from llm_coordinator.quantities import function_words, is_unit

    # The action a clause asks: its first word that is no function word ("please", "then").
    skip = function_words(lang)
    actions = set()
    for clause in CLAUSE_BREAK.split(_fold(order)):
        actions |= {next((w for w in _words(clause) if w.isalpha() and w not in skip), "")}
    out = []
    known = [sorted(vocab), _common_words(lang)]
    near = DamerauLevenshtein.distance
    for w in _order_words(order, facts):
        if w not in actions or _matches(w, vocab) or is_unit(w) or zipf_frequency(w, lang) >= RARE_ZIPF:
            continue
        # One letter wrong, missing, extra or swapped, the plural ending aside ("botles").
        if any(process.extractOne(f, k, scorer=near, score_cutoff=1) for f in _forms(w) for k in known):
            continue
        out.append(w)
    return out


def _forms(word: str) -> set[str]:
    """``word`` and ``word`` without a plural ending ("botles": "botle", "botl")."""
    return {word, word.removesuffix("s"), word.removesuffix("es")}


def _in_language(order: str, lang: str, plant: PlantDescription, vocab: AbstractSet[str]) -> bool:
    """Whether ``order`` is written in the plant's language: guessed so (``lang``), and most of
    its words (more than :data:`_OWN_LANGUAGE_SHARE`) are common words of it or the plant's own."""
    if lang != _plant_language(plant):
        return False
    words = [w for w in _words(order) if len(w) > 1 and w.isalpha()]
    common = set(_common_words(lang))
    known = sum(w in common or _matches(w, vocab) for w in words)
    return bool(words) and known > _OWN_LANGUAGE_SHARE * len(words)


@cache
def _common_words(lang: str) -> tuple[str, ...]:
    """The words of ``lang`` at :data:`RARE_ZIPF` or more (wordfreq's lists)."""
    from wordfreq import get_frequency_dict

    least = 10 ** (RARE_ZIPF - 9)  # Zipf is log10 of uses per billion words
    return tuple(w for w, f in get_frequency_dict(lang).items() if f >= least and w.isalpha())


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


#: The words of each plant read so far, by id, with a weak reference that tells a plant from a
#: later one at the same address.
_PLANT_WORDS: dict[int, tuple[weakref.ref[PlantDescription], frozenset[str]]] = {}


def _plant_words(plant: PlantDescription) -> frozenset[str]:
    """Every word of the plant file (names, kinds, descriptions, tag values), and of what it
    brings from the catalogues (its skills' descriptions, its robots' makers)."""
    hit = _PLANT_WORDS.get(id(plant))
    if hit is not None and hit[0]() is plant:
        return hit[1]
    words = {w for text in _strings(plant.model_dump(mode="json")) for w in _words(text)}
    out = frozenset(words | set().union(*_documents(plant).values()))
    if len(_PLANT_WORDS) > 64:
        _PLANT_WORDS.clear()
    _PLANT_WORDS[id(plant)] = (weakref.ref(plant), out)
    return out


def warm(plant: PlantDescription) -> None:
    """Load what reading an order for ``plant`` needs the first time (the word lists of its
    language, its words), so that the first order does not wait for it."""
    from wordfreq import zipf_frequency

    lang = _plant_language(plant)
    _plant_words(plant)
    _common_words(lang)
    zipf_frequency("a", lang)


def _plant_language(plant: PlantDescription) -> str:
    """The language of the plant's descriptions (its recipes', machines' and robots')."""
    texts = [r.description for r in plant.recipes.values()] + [m.description for m in plant.machines.values()]
    return _language_of_text(" ".join([*texts, *(r.description for r in plant.robots.values())]))


@cache
def _language_of_text(text: str) -> str:
    from llm_coordinator.quantities import language_of

    return language_of(text)


def place_words(plant: PlantDescription) -> dict[str, list[str]]:
    """The words (3 letters or more) of the plant's place names that no other name of the plant
    has (an agent's, skill's, recipe's or part type's, inflected or not: "dosing" is the doser's),
    each with the places whose names have it: a word an order uses for a place ("bin") even
    when it names none in particular."""
    others = _documents(plant, described=False)
    taken = {w for doc, words in others.items() if doc.split(":")[0] not in ("place", "recipe") for w in words}
    taken |= {w for r in plant.recipes for w in _text_words(r)}
    out: dict[str, list[str]] = {}
    for place in plant.locations():
        for w in place.split("_"):
            if len(w) >= 3 and not w.isdigit() and not _matches(w, taken):
                out.setdefault(w, []).append(place)
    return out


def _inside_name(order: str, start: int, end: int) -> bool:
    """A number that is part of a name ("robot 3" is not; "press_2" never reaches here)."""
    return start > 0 and order[start - 1] in "_#"


def static_refusals(facts: OrderFacts, plant: PlantDescription) -> list[str]:
    """Reasons to refuse an order before any model reads it: a name the plant does not have, or a
    safety measure the order touches."""
    out = [f"nothing in plant {plant.name} is named {u!r}" for u in dict.fromkeys(facts.unknown)]
    out += [
        f"the order touches a safety measure: {s}; safety measures are changed by people in the plant file "
        "and on the robots, never by a work order"
        for s in facts.safety
    ]
    return out


# --------------------------------------------------------------------------- the coverage rule


def _numbers_of(reading: Reading) -> list[float]:
    from llm_coordinator.quantities import QuantityError, parse_quantity

    raw: list[Any] = []
    for g in reading.goals:
        if isinstance(g, IfGoal):
            raw.append(g.test.value)
        elif isinstance(g, RepeatGoal):
            raw.extend([g.until.value, g.max_times])
    for s in simple_goals(reading):
        raw += [s.count, *(s.params.values() if isinstance(s, RecipeGoal) else s.args.values())]
    out: list[float] = []
    for v in raw:
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            out.append(float(v))
        elif isinstance(v, str):
            try:
                out.append(parse_quantity(v).value)
            except (QuantityError, ValueError):
                continue
    return out


def _plan_values(plan: Plan) -> tuple[set[str], list[float]]:
    names: set[str] = set()
    numbers: list[float] = []
    for s in plan.steps:
        names.add(s.agent)
        for v in s.args.values():
            if isinstance(v, str):
                names.add(v)
            elif isinstance(v, int | float) and not isinstance(v, bool):
                numbers.append(float(v))
    for d in plan.decisions:
        names.add(d.condition.machine)
        names.add(f"{d.condition.machine}.{d.condition.tag}")
        if isinstance(d.condition.value, int | float) and not isinstance(d.condition.value, bool):
            numbers.append(float(d.condition.value))
    return names, numbers


def _declined(what: str, reading: Reading | None) -> bool:
    if reading is None:
        return False
    w = _fold(what).strip()
    return any(w in _fold(d.what) or _fold(d.what).strip() in f" {w} " for d in reading.declined)


def coverage(facts: OrderFacts, plan: Plan, reading: Reading | None, plant: PlantDescription) -> list[str]:
    """What the order names that the plan neither does nor declines, each as a sentence (empty:
    the plan covers the order)."""
    names, numbers = _plan_values(plan)
    if reading is not None:
        numbers += _numbers_of(reading)
    recipe_parts = {v for s in plan.steps for v in s.args.values() if isinstance(v, str)}
    # A plan that moves parts without saying of which type may handle the one named; one that
    # says (a pick of another type) does not.
    holds_a_part = any(s.skill in ("place", "hand_over", "present") for s in plan.steps)
    holds_a_part = holds_a_part and not recipe_parts & set(plant.part_types)
    # A machine the plan uses works at its station's places (a check-weigher at its pan): a
    # place the order names by a word of place names only is gone to by that machine's work.
    stations = {plant.machines[a].station for a in names if a in plant.machines}
    at_work = {p for st in stations if st in plant.stations for p in plant.stations[st].locations}
    # The words of the tags the plan decides on: "the layer count" names that tag, not the layer table.
    tag_words = {w for d in plan.decisions for w in _text_words(d.condition.tag)}
    out: list[str] = []
    for m in facts.mentions:
        if _declined(m.text, reading):
            continue
        if m.kind == "place" and all(_matches(w, tag_words) for w in _words(m.text)):
            continue
        if m.kind == "agent" and m.name not in names:
            out.append(f"the order names {m.text!r} ({m.name}) but no step of the plan uses it")
        elif m.kind == "place" and m.name not in names and m.name not in at_work:
            out.append(f"the order names {m.text!r} ({m.name}) but no step of the plan goes there")
        elif m.kind == "part_type" and m.name not in recipe_parts and not holds_a_part:
            out.append(f"the order names {m.text!r} ({m.name}) but the plan handles no part of that type")
        elif m.kind == "value":
            tag = m.name.split("=", 1)[0]
            if tag not in names:
                out.append(f"the order names the result {m.text!r} of {tag} but the plan decides nothing on it")
        elif m.kind == "recipe" and plan.recipe != m.name and not any(m.name in g for g in plan.goals):
            out.append(f"the order names recipe {m.name} but the plan does not run it")
    for w, places in facts.places.items():
        if not _declined(w, reading) and not (names | at_work) & set(places):
            out.append(f"the order names a {w!r} ({' or '.join(places)}) but no step of the plan goes to one")
    for q in facts.quantities:
        if _declined(q.text, reading):
            continue
        if not any(abs(q.value - n) <= 1e-9 * max(1.0, abs(n)) for n in numbers) and not _converted(q, plan):
            out.append(f"the order gives {q.text!r} but no count, argument or condition of the plan holds it")
    return out


def _converted(q: Any, plan: Plan) -> bool:
    """Whether a quantity with a unit appears in the plan's notes as a conversion."""
    return bool(q.unit) and any(q.text in n or f"{q.value:g} {q.unit}" in n for n in plan.notes)


# --------------------------------------------------------------------------- support


def _order_words(order: str, facts: OrderFacts) -> list[str]:
    """The order's words of 4 letters or more, folded, numbers and units left out."""
    spans = [(q.start, q.end) for q in facts.quantities]
    out: list[str] = []
    for match in re.finditer(r"[^\W\d_][^\W_]*", order):
        if any(a <= match.start() < b for a, b in spans):
            continue
        w = _fold(match.group()).strip()
        if len(w) >= 4 and w not in out:
            out.append(w)
    return out


def _text_words(*texts: str) -> set[str]:
    return {w for t in texts for w in _words(t) if len(w) >= 3}


def plan_vocabulary(plan: Plan, plant: PlantDescription, described: bool = True) -> set[str]:
    """The words of what a plan does: its agents (names, kinds, models, makers, descriptions), its
    skills and their descriptions, its arguments, its recipes and their descriptions, its
    conditions."""
    vocab: set[str] = set()
    for s in plan.steps:
        # The names of numeric arguments ("program 7"); a named one's value speaks for it.
        vocab |= _text_words(s.agent, s.skill, " ".join(n for n, v in s.args.items() if not isinstance(v, str)))
        with contextlib.suppress(KeyError):
            vocab |= _text_words(plant.skill_spec(s.agent, s.skill).description) if described else set()
        vocab |= _text_words(*(v for v in s.args.values() if isinstance(v, str)))
        vocab |= _text_words(*(plant.part_types[v].description for v in s.args.values() if v in plant.part_types))
        vocab |= _agent_words(plant, s.agent, described=False)
    for recipe in _plan_recipes(plan, plant):
        vocab |= _text_words(recipe, plant.recipes[recipe].description)
    for d in plan.decisions:
        vocab |= _text_words(d.condition.machine, d.condition.tag, d.condition.label)
        if d.kind == "repetition":
            vocab |= UNTIL_WORDS
    return vocab


def _plan_recipes(plan: Plan, plant: PlantDescription) -> list[str]:
    names = [plan.recipe, *(g.split()[1] for g in plan.goals if g.startswith("recipe "))]
    return [r for r in dict.fromkeys(names) if r and r in plant.recipes]


def _agent_words(plant: PlantDescription, agent: str, described: bool = True) -> set[str]:
    """An agent's name, kind, model and maker, and (``described``) its description."""
    if agent in plant.machines:
        m = plant.machines[agent]
        return _text_words(agent, m.kind, m.description if described else "")
    if agent in plant.robots:
        r = plant.robots[agent]
        return _text_words(agent, r.model, ROBOT_MODELS[r.model].maker, r.description if described else "")
    return set()


def _documents(plant: PlantDescription, described: bool = True) -> dict[str, set[str]]:
    """What the plant can be asked for, one document each (a recipe, a skill or command, an agent,
    a place, a part type), as its words: the plant's own names and (``described``) the
    descriptions of its skills, agents and part types. Recipes always bring their description."""
    docs: dict[str, set[str]] = {}
    for name, r in plant.recipes.items():
        if not r.building_block:
            docs[f"recipe:{name}"] = _text_words(name, r.description)
    for agent in plant.agents():
        docs[f"agent:{agent}"] = _agent_words(plant, agent, described)
        for skill in plant.agent_skills(agent):
            text = plant.skill_spec(agent, skill).description if described else ""
            docs.setdefault(f"skill:{skill}", set()).update(_text_words(skill, text))
    for name in plant.locations():
        docs[f"place:{name}"] = _text_words(name)
    for name, t in plant.part_types.items():
        docs[f"part_type:{name}"] = _text_words(name, t.description if described else "")
    return docs


def _matches(word: str, vocab: Iterable[str]) -> bool:
    return any(_same_word(word, v) for v in vocab)


def unsupported_words(
    order: str, plan: Plan, plant: PlantDescription, facts: OrderFacts, ignore: AbstractSet[str] = frozenset()
) -> tuple[list[str], float]:
    """Words of the order (4 letters or more, not numbers or units) that match nothing the plan
    does (:func:`plan_vocabulary`, and what the order names), the strange ones first. Returns
    (those words, the share of the order's words the plan supports: 1.0 when none is weighed).
    A strange word (:attr:`OrderFacts.strange`) weighs :data:`RARE_WEIGHT` words; the words of
    ``ignore`` weigh nothing."""
    vocab = plan_vocabulary(plan, plant) | {w for m in facts.mentions for w in _text_words(m.text)}
    # (quantifiers are grammar: "each", "both" ask for no action of their own)
    weighed = [w for w in _order_words(order, facts) if w not in EVERY_WORDS | BOTH and w not in ignore]
    unsupported = sorted(
        (w for w in weighed if not any(_matches(f, vocab) for f in _forms(w) if len(f) >= 3)),
        key=lambda w: w not in facts.strange,
    )
    weight = {w: RARE_WEIGHT if w in facts.strange else 1 for w in weighed}
    total = sum(weight.values())
    return unsupported, (1.0 - sum(weight[w] for w in unsupported) / total) if total else 1.0


def recipe_vocabulary(plant: PlantDescription, recipe: str) -> set[str]:
    """The words of what a recipe does, as ``plan_vocabulary(described=False)`` reads a plan of it:
    its name and description, its steps' agents, skills and named arguments."""
    r = plant.recipes[recipe]
    vocab = _text_words(recipe, r.description)
    for st in r.steps:
        numeric = " ".join(n for n, v in st.args.items() if not isinstance(v, str) or v.startswith("{"))
        vocab |= _text_words(st.skill, numeric, *(v for v in st.args.values() if isinstance(v, str)))
        if st.agent in plant.agents():
            vocab |= _agent_words(plant, st.agent, described=False)
    return vocab


def _named_words(facts: OrderFacts) -> set[str]:
    """The words with which the order names the plant's agents, places and part types: any plan
    or recipe may involve those. Not a recipe's name: its words are evidence for that recipe
    alone ("fill and seal" covers nothing of a recipe that palletises)."""
    return {w for m in facts.mentions if m.kind != "recipe" for w in _text_words(m.text)}


def vocabulary_gaps(order: str, plan: Plan, plant: PlantDescription, facts: OrderFacts) -> list[str]:
    """Words of the order that the plan leaves out while a recipe of the plant would not: a word
    that matches nothing of the plan (:func:`plan_vocabulary` and what the order names) but
    matches a recipe that also covers every word of the order the plan covers. The order asks for
    it ("sort"), the plan does not do it, and the plant has a way that does."""
    named = _named_words(facts)
    vocab = plan_vocabulary(plan, plant, described=False) | named
    words = _order_words(order, facts)
    covered = [w for w in words if _matches(w, vocab)]
    missing = [w for w in words if w not in covered]
    if not missing:
        return []
    gaps: list[str] = []
    for recipe, r in plant.recipes.items():
        if recipe in _plan_recipes(plan, plant) or r.building_block:
            continue
        other = recipe_vocabulary(plant, recipe) | named
        if all(_matches(w, other) for w in covered):
            gaps += [w for w in missing if _matches(w, other) and w not in gaps]
    return gaps


def unassigned_tasks(
    order: str, plan: Plan, plant: PlantDescription, facts: OrderFacts, reading: Reading | None = None
) -> list[tuple[str, str]]:
    """(agent, skill) pairs a clause of the order gives that no step of the plan does: a clause
    that names one agent of the plant and a skill of that agent by its name ("then send ROBOT
    home": ROBOT, home) asks for that agent to do it. The skill done by another agent, or
    not at all, leaves that part of the order out (unless the reading declines it). A clause
    that names, by its name, a skill only one agent of the plant has ("prime the pump") asks
    that agent for it, whatever else the clause names. In a later clause of a compound order
    (:func:`llm_coordinator.clauses.split_clauses`: "..., then send ROBOT home") it is what the
    agent does last: a recipe that homes the robot in its middle does not do it."""
    from llm_coordinator.clauses import split_clauses

    done = {(s.agent, s.skill) for s in plan.steps}
    last: dict[str, str] = {}
    for s in plan.steps:
        last[s.agent] = s.skill
    later = [_fold(c) for c in split_clauses(order)[1:]]
    agent_mentions = [m for m in facts.mentions if m.kind == "agent"]
    only: dict[str, list[str]] = {}
    for a in plant.agents():
        for skill in plant.agent_skills(a):
            only.setdefault(skill, []).append(a)
    out: list[tuple[str, str]] = []
    for clause in CLAUSE_BREAK.split(_fold(order)):
        folded = f" {clause.strip()} "
        agents = {m.name for m in agent_mentions if _phrase_in(m.text, folded)}
        asked = [(next(iter(agents)), sk) for sk in plant.agent_skills(next(iter(agents)))] if len(agents) == 1 else []
        for agent, skill in asked + [(owners[0], sk) for sk, owners in only.items() if len(owners) == 1]:
            words = skill.replace("_", " ")
            finished = (agent, skill) in done
            if finished and any(folded.strip() and folded.strip() in c for c in later):
                finished = last.get(agent) == skill
            if (
                _phrase_in(words, folded)
                and not finished
                and not _declined(words, reading)
                and ((agent, skill) in asked or not _only_in_names(words, folded, plant))
            ):
                out.append((agent, skill))
    return list(dict.fromkeys(out))


def _only_in_names(phrase: str, folded: str, plant: PlantDescription) -> bool:
    """Whether every time ``phrase`` occurs in the folded text ``folded`` it is part of the name of
    a place, a part type or an agent of the plant, written with or without spaces ("hand over"
    in "the hand-over point")."""
    text, p = folded.replace(" ", ""), _fold(phrase).replace(" ", "")
    names = [n.replace("_", "") for n in (*plant.locations(), *plant.part_types, *plant.agents())]
    spans = [(m.start(), m.start() + len(n)) for n in names if n for m in re.finditer(re.escape(n), text)]
    hits = [m.start() for m in re.finditer(re.escape(p), text)]
    return bool(hits) and all(any(a <= i and i + len(p) <= b for a, b in spans) for i in hits)


def overreach(order: str, plan: Plan, plant: PlantDescription, facts: OrderFacts) -> list[str]:
    """Recipes of the plant that do what the order names with fewer steps than the plan's recipe,
    and single tasks ("the task <skill> of <agent>") that do: each covers every word of the
    order that the plan covers. The plan does more than asked (machining a new blank when the order asks to
    inspect a part that is waiting)."""
    mine = _plan_recipes(plan, plant)
    if len(mine) != 1 or len(plan.goals) > 1:
        return []
    named = _named_words(facts)
    vocab = plan_vocabulary(plan, plant, described=False) | named
    covered = [w for w in _order_words(order, facts) if _matches(w, vocab)]
    size = len(plant.recipes[mine[0]].steps)
    out: list[str] = []
    for recipe, r in plant.recipes.items():
        if recipe == mine[0] or r.building_block or len(r.steps) >= size:
            continue
        other = recipe_vocabulary(plant, recipe) | named
        if covered and all(_matches(w, other) for w in covered):
            out.append(recipe)
    if size > 1 and covered:
        # One task whose skill the order names in its own words, not in a name of the plant ("the
        # hand-over point" asks for no hand-over); the skill's name and description cover the rest,
        # as a recipe's own description does, with the agent's name, kind and make. Dosing a
        # volume is not filling and sealing. A skill the recipe itself has is such a task only when
        # the recipe makes its agent do more besides (:func:`_more_of_the_same`); otherwise the
        # recipe is how the plant gets it done (a part picked and presented for an inspection).
        folded = _fold(order)
        own = [w for w in covered if w not in named and not _only_in_names(w, folded, plant)]
        steps = plant.recipes[mine[0]].steps
        tasks: dict[str, list[str]] = {}
        for agent in plant.agents():
            for skill in plant.agent_skills(agent):
                if not any(_matches(w, _text_words(skill)) for w in own):
                    continue
                if any(st.skill == skill for st in steps) and not _more_of_the_same(
                    plant, steps, skill, facts, covered
                ):
                    continue
                other = _text_words(skill, plant.skill_spec(agent, skill).description) | named
                other |= _agent_words(plant, agent, described=False)
                if all(_matches(w, other) for w in covered):
                    tasks.setdefault(skill, []).append(agent)
        out += [f"the task {skill} of {' or '.join(agents)}" for skill, agents in tasks.items()]
    return out


#: The argument types that name something a step handles or goes to.
_THINGS = frozenset({"location", "part", "part_type", "robot", "machine", "bin"})


def _more_of_the_same(
    plant: PlantDescription, steps: Sequence[RecipeStep], skill: str, facts: OrderFacts, words: list[str]
) -> bool:
    """Whether a recipe (its ``steps``) that has ``skill`` is all the work of that skill's agent
    and makes it do more than the order asks: another step that handles no place or part
    ("push a layer, then a slip sheet" asked as "lay slip sheets"), whose skill is not among the
    order's ``words`` and whose arguments the order does not name. A recipe in which other
    agents take part is how the plant gets the skill done (a part picked and presented for an
    inspection, then labelled), never more than asked."""
    agents = {st.agent for st in steps}
    if len(agents) != 1 or not agents <= set(plant.agents()):
        return False  # (several agents, or one named by a parameter: "{robot}")
    names = {m.name for m in facts.mentions}
    for st in steps:
        if st.skill == skill:
            continue
        values = {v for v in st.args.values() if isinstance(v, str)}
        try:
            handles = any(a.type in _THINGS for a in plant.skill_spec(st.agent, st.skill).args.values())
        except KeyError:
            return False
        if not handles and not values & names and not any(_matches(w, _text_words(st.skill)) for w in words):
            return True
    return False


def unevidenced_goals(order: str, plan: Plan, plant: PlantDescription, facts: OrderFacts) -> list[str]:
    """The plan's recipes that nothing in the order asks for: none of the recipe's own words (its
    name and description, leaving out the names of agents, places and part types, which the
    coverage rule weighs) is in the order."""
    names = _text_words(*plant.agents(), *plant.locations(), *plant.part_types)
    for agent in plant.agents():
        names |= _agent_words(plant, agent)
    words = _order_words(order, facts)
    out: list[str] = []
    for recipe in _plan_recipes(plan, plant):
        own = _text_words(recipe, plant.recipes[recipe].description) - names
        own = {w for w in own if len(w) >= 4}
        if own and not any(_matches(w, own) for w in words):
            out.append(recipe)
    return out


def rank_goals(order: str, plant: PlantDescription, facts: OrderFacts) -> list[str]:
    """The plant's recipes and skills, best match for the order's words first (how many of the
    order's words each one's own words match; ties in the plant's order). For trying another
    goal when the model's does not cover the order."""
    docs = _documents(plant)
    words = _order_words(order, facts)
    scores: list[tuple[int, int, str]] = []
    for i, (doc, vocab) in enumerate(docs.items()):
        if not doc.startswith(("recipe:", "skill:")):
            continue
        score = sum(_matches(w, vocab) for w in words)
        if score:
            scores.append((-score, i, doc))
    return [doc for _, _, doc in sorted(scores)]


def _same_word(a: str, b: str) -> bool:
    """The same word, inflected or misspelt: equal; one a prefix of the other (4 letters or more:
    part/parts, sort/sorted); a shared stem of 5 letters or more covering most of the shorter
    (machine/machining); or, for words of 6 letters or more, one typo away."""
    from rapidfuzz import fuzz

    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 4 and long_.startswith(short):
        return True
    stem = len(os.path.commonprefix([a, b]))  # noqa: RUF071 - words, not paths
    if stem >= 5 and stem >= 0.75 * len(short):
        return True
    return len(short) >= 6 and fuzz.ratio(a, b) >= 88


# --------------------------------------------------------------------------- every agent

#: Words that quantify over all of a kind ("every robot", "tous les robots"), by language of
#: :data:`llm_coordinator.quantities.LANGUAGES`; "both" and its kind (:data:`BOTH`) over two.
EVERY_WORDS = frozenset(
    {
        *("all", "every", "each"),
        *("tous", "toutes", "chaque"),
        *("alle", "jede", "jeden", "jeder", "jedes"),
        *("todos", "todas", "cada"),
        *("tutti", "tutte", "ogni"),
        *("elke", "ieder", "iedere"),
    }
)
BOTH = frozenset({"both", "beide", "beiden", "ambos", "ambas", "entrambi", "entrambe"})


def _kind_words(plant: PlantDescription, agent: str) -> set[str]:
    """What an agent is called as one of a kind: "robot" or "machine" (the plant file's own
    sections), its machine kind, and its name, model, maker and description words."""
    kind = {"robot"} if agent in plant.robots else {"machine", *_text_words(plant.machines[agent].kind)}
    return kind | _agent_words(plant, agent)


def every_agent(order: str, plant: PlantDescription, capable: Sequence[str]) -> bool:
    """Whether the order asks each of ``capable`` (the agents that have a skill, two or more)
    to do it: a word of :data:`EVERY_WORDS` ("all"), or of :data:`BOTH` when there are two,
    right before (a word between allowed: "all the robots") a word every one of them is called
    by ("robots"). "Put all parts in the bin" quantifies over parts, not over the robots."""
    from llm_coordinator.quantities import DEFINITE_ARTICLES

    if len(capable) < 2:
        return False
    words = _words(order)
    quantifiers = EVERY_WORDS | (BOTH if len(capable) == 2 else frozenset())
    kinds = [_kind_words(plant, a) for a in capable]
    for i, w in enumerate(words):
        if w not in quantifiers:
            continue
        after = words[i + 1 : i + 3]
        # The noun right after the quantifier, or after an article: "all the robots", not "all
        # faulted machines" (which ones?).
        for noun in after[:1] + (after[1:] if after and after[0] in DEFINITE_ARTICLES else []):
            forms = [f for f in _forms(noun) if len(f) >= 3]
            if forms and all(any(f in kind or _matches(f, kind) for f in forms) for kind in kinds):
                return True
    return False


# --------------------------------------------------------------------------- until a tag reads

#: Words that end a repetition at a condition ("until", "jusqu'à", "bis"), by language of
#: :data:`llm_coordinator.quantities.LANGUAGES`.
_UNTIL = re.compile(
    r"(?<!\w)(?:until|till|jusqu['’]?\s?[àa]|bis|hasta\s+que|hasta|finché|finche|até|ate|totdat|tot)(?!\w)", re.I
)
#: The folded words of :data:`_UNTIL`, which a plan that repeats until a condition does.
UNTIL_WORDS = frozenset({"until", "till", "jusqu'a", "jusqu", "bis", "hasta", "finche", "ate", "totdat", "tot"})


#: Words that make an until-condition "below" or "above" its number (folded), by language;
#: without one it is "reaches" (>=).
_LESS = frozenset(
    {
        *("below", "under", "less", "lower", "drops", "falls", "beneath", "fewer"),
        *("sous", "moins", "inferieur", "inferieure", "descend", "baisse"),
        *("unter", "unterhalb", "weniger", "sinkt", "fallt"),
        *("debajo", "menos", "inferior", "baje", "baja"),
        *("sotto", "meno", "inferiore", "scende"),
        *("abaixo", "menor", "desca"),
        *("onder", "minder", "lager", "daalt", "zakt"),
    }
)
_MORE = frozenset(
    {
        *("above", "over", "exceeds", "exceed", "more", "greater", "higher", "beyond"),
        *("dessus", "plus", "superieur", "superieure", "depasse"),
        *("uber", "oberhalb", "mehr", "hoher", "ubersteigt", "uberschreitet"),
        *("encima", "mas", "mayor", "supera", "supere", "superior"),
        *("sopra", "piu", "superiore", "supera"),
        *("acima", "maior", "ultrapassa"),
        *("boven", "meer", "hoger", "overschrijdt"),
    }
)


#: Comparatives (folded): a negation before one bounds a count ("no more than 5 runs").
COMPARATIVES = _LESS | _MORE


@dataclass(frozen=True)
class Until:
    """A repetition's end the order gives: ``test`` (a condition on a machine tag) from the words
    after its until word, up to ``target`` (the quantity it compares with; None for a named
    value: "until the camera reads pass")."""

    test: Test
    target: Any  # llm_coordinator.quantities.Quantity | None


def until_test(order: str, plant: PlantDescription, facts: OrderFacts) -> Until | None:
    """The condition an order repeats until, from the words of its clause after the until word:
    a named value of a tag ("until the camera reads pass": the value, and the tag's name or its
    machine's), else the one readable numeric tag whose name's words are all among the words up
    to the first number after the until word ("until the CNC's part counter reads 10"), of the
    machine the clause names when several have it. None when there is no until word, or no one
    tag fits."""
    hit = _UNTIL.search(order)
    if hit is None:
        return None
    end = re.search(r"[,;.!?](?!\d)", order[hit.end() :])
    clause = order[hit.end() : hit.end() + end.start() if end else len(order)]
    target = next((q for q in facts.quantities if hit.end() <= q.start < hit.end() + len(clause)), None)
    span = clause if target is None else order[hit.end() : target.start]
    named = {m.name for m in facts.mentions if m.kind == "agent" and _phrase_in(m.text, _fold(clause))}

    def called(tag: str, text: str) -> bool:
        words = _words(text)
        tag_words = [w for w in tag.split("_") if len(w) >= 3]
        return bool(tag_words) and all(any(_same_word(t, f) for w in words for f in _forms(w)) for t in tag_words)

    found: list[tuple[str, str, str | None]] = []
    for machine, m in plant.machines.items():
        for tag, spec in m.tags.items():
            if spec.access == "write":
                continue
            values = getattr(spec, "values", None) or {}
            labels = [v for v in values if _phrase_in(v.replace("_", " "), _fold(clause))]
            if len(labels) == 1 and (called(tag, clause) or machine in named):
                found.append((machine, tag, labels[0]))
            elif target is not None and not labels and spec.data_type != "string" and called(tag, span):
                found.append((machine, tag, None))
    if any(label for _, _, label in found):
        found = [f for f in found if f[2] is not None]
    if len({f[0] for f in found}) > 1 and named:
        found = [f for f in found if f[0] in named]
    if len(found) != 1:
        return None
    machine, tag, label = found[0]
    if negated(clause):
        return None  # ("until one does not pass": the person is asked)
    if label is not None:
        return Until(Test(machine=machine, tag=tag, op="==", value=label), None)
    assert target is not None
    between = set(_words(span))
    less, more = bool(between & _LESS), bool(between & _MORE)
    if less and more:
        return None
    value: str | float = target.text if target.unit else target.value
    return Until(Test(machine=machine, tag=tag, op="<" if less else ">" if more else ">=", value=value), target)
