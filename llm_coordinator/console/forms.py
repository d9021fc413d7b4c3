"""Checking what people type into the console, with messages they can act on.

Every check raises :class:`FormError` with one message per problem, naming the field in the
words of the page ("Reason: ..."); the pages show the messages next to the form and the API
returns them with status 422. Nothing here raises anything else on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from plant.config import PlantDescription, RecipeParam

from .services import WorkOrderRequest

MAX_REASON_CHARS = 1000
MAX_TEXT_CHARS = 4000


class FormError(Exception):
    """Input a person must correct; ``messages`` has one sentence per problem."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("; ".join(messages))


def clean_text(
    value: object, field: str, *, required: bool, min_chars: int = 0, max_chars: int = MAX_REASON_CHARS
) -> str:
    """A stripped single text field; a clear message when missing, too short or too long."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FormError([f"{field}: expected text."])
    text = value.strip()
    if "\x00" in text:
        raise FormError([f"{field}: contains a NUL character."])
    if required and not text:
        raise FormError([f"{field}: please fill this in."])
    if text and len(text) < min_chars:
        raise FormError([f"{field}: please write at least {min_chars} characters."])
    if len(text) > max_chars:
        raise FormError([f"{field}: at most {max_chars} characters (this has {len(text)})."])
    return text


def _param_value(plant: PlantDescription, recipe: str, name: str, spec: RecipeParam, raw: object) -> int | float | str:
    label = f"Parameter {name!r} of recipe {recipe!r}"
    text = str(raw).strip() if raw is not None else ""
    if text == "":
        if spec.default is not None:
            return spec.default
        raise FormError([f"{label}: please fill this in."])
    value: int | float | str
    if spec.type == "int":
        if isinstance(raw, bool):
            raise FormError([f"{label}: expected a whole number, not {text!r}."])
        try:
            value = int(raw) if isinstance(raw, float) and raw.is_integer() else int(text)
        except ValueError:
            raise FormError([f"{label}: expected a whole number, not {text!r}."]) from None
    elif spec.type == "float":
        try:
            value = float(text)
        except ValueError:
            raise FormError([f"{label}: expected a number, not {text!r}."]) from None
        if not math.isfinite(value):
            raise FormError([f"{label}: expected a finite number."])
    else:
        value = text
        known: list[str] = {
            "part_type": list(plant.part_types),
            "location": list(plant.locations()),
            "robot": list(plant.robots),
            "machine": list(plant.machines),
            "bin": list(plant.bins()),
        }.get(spec.type, [])
        if known and text not in known:
            kind = spec.type.replace("_", " ")
            raise FormError([f"{label}: {text!r} is not a {kind} of this plant; one of: {', '.join(sorted(known))}."])
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            raise FormError([f"{label}: {value} is below the minimum {spec.min:g}."])
        if spec.max is not None and value > spec.max:
            raise FormError([f"{label}: {value} is above the maximum {spec.max:g}."])
    if spec.choices is not None and str(value) not in spec.choices:
        raise FormError([f"{label}: {value!r} is not one of {', '.join(spec.choices)}."])
    return value


def check_work_order(
    plant: PlantDescription, text: object, recipe: object, params: Mapping[str, object]
) -> WorkOrderRequest:
    """A work order from plain words, or a recipe of the plant with valid parameters.

    ``params`` maps parameter names to raw values (form strings or JSON values); blanks take
    the recipe's default. Every problem found is reported, not only the first.
    """
    errors: list[str] = []
    words = ""
    try:
        words = clean_text(text, "Work order", required=False, max_chars=MAX_TEXT_CHARS)
    except FormError as exc:
        errors += exc.messages
    recipe_name = recipe.strip() if isinstance(recipe, str) else ""
    if recipe is not None and not isinstance(recipe, str):
        errors.append("Recipe: expected a recipe name.")
    values: dict[str, int | float | str] = {}
    if recipe_name:
        if recipe_name not in plant.recipes:
            errors.append(
                f"Recipe: {recipe_name!r} is not a recipe of this plant; one of: {', '.join(sorted(plant.recipes))}."
            )
        else:
            specs = plant.recipes[recipe_name].params
            for unknown in sorted(set(params) - set(specs)):
                errors.append(f"Recipe {recipe_name!r} has no parameter {unknown!r}.")
            for name, spec in specs.items():
                try:
                    values[name] = _param_value(plant, recipe_name, name, spec, params.get(name))
                except FormError as exc:
                    errors += exc.messages
    elif params:
        errors.append("Parameters were given but no recipe was chosen.")
    if not recipe_name and not words and not errors:
        errors.append("Work order: describe the work in words, or choose a recipe.")
    if errors:
        raise FormError(errors)
    return WorkOrderRequest(text=words, recipe=recipe_name or None, params=values)
