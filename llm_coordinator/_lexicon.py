"""Words for things a work order may ask for that a plant may not have.

General shop-floor vocabulary, not written for any one plant: kinds of machines, makers and
models of robots, and actions no skill of ``plant.skills`` performs. The planner compares a work
order with these and with the plant's own names, so that an order for a machine, robot or skill
the plant lacks ends in a refusal naming it instead of an invented plan.
"""

from __future__ import annotations

#: Machine kind (``plant.config.MachineKind``) -> words that name such a machine.
MACHINE_KIND_WORDS: dict[str, tuple[str, ...]] = {
    "cnc": ("cnc", "milling machine", "mill", "lathe"),
    "press": ("press brake", "stamping press", "press"),
    "conveyor": ("conveyor", "belt"),
    "inspection": ("inspection station", "inspection machine", "vision station", "camera"),
    "washer": ("washer", "washing machine", "parts washer"),
    "oven": ("oven", "furnace", "kiln"),
}

#: Machines and vehicles of no kind a plant description knows.
OTHER_EQUIPMENT: tuple[str, ...] = (
    "welder",
    "welding robot",
    "welding cell",
    "3d printer",
    "printer",
    "laser cutter",
    "paint booth",
    "spray booth",
    "drill press",
    "saw",
    "grinder",
    "forklift",
    "agv",
    "crane",
    "drone",
    "mobile robot",
)

#: Robot makers and models; one the plant has no robot of is reported missing.
ROBOT_WORDS: dict[str, tuple[str, ...]] = {
    "ur5e": ("ur5e", "ur5"),
    "panda": ("panda", "franka"),
    "ur3": ("ur3", "ur3e"),
    "ur10": ("ur10", "ur10e"),
    "ur16": ("ur16", "ur16e"),
    "ur20": ("ur20",),
    "kuka": ("kuka", "iiwa"),
    "abb": ("abb", "yumi"),
    "fanuc": ("fanuc",),
    "yaskawa": ("yaskawa", "motoman"),
    "kawasaki": ("kawasaki",),
    "staubli": ("staubli",),
    "kinova": ("kinova", "jaco"),
    "sawyer": ("sawyer", "baxter"),
}

#: Actions that no skill performs (stems; a match is the start of a word).
UNSUPPORTED_ACTIONS: tuple[str, ...] = (
    "weld",
    "paint",
    "spray",
    "glue",
    "solder",
    "drill",
    "grind",
    "polish",
    "sand ",
    "deburr",
    "engrave",
    "bend",
    "assembl",
    "screw",
    "bolt",
    "rivet",
    "label",
    "packag",
    "pack ",
    "wrap",
    "weigh",
    "bake",
    "heat",
    "cure",
    "wash",
    "laser",
)

#: Actions that belong to a machine kind: missing only when the plant has no such machine.
ACTION_MACHINE_KIND: dict[str, str] = {"wash": "washer", "bake": "oven", "heat": "oven", "cure": "oven"}
