"""The plant: its description (cells, machines, robots, zones, parts, recipes) and machine agents.

``plant`` is the domain core; it imports no other package of Atelier.
"""

from plant.config import PlantDescription
from plant.loader import PlantError, Problem, default_plant_text, load_plant, load_plant_text

__all__ = ["PlantDescription", "PlantError", "Problem", "default_plant_text", "load_plant", "load_plant_text"]
