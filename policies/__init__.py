"""Small torch control policies: networks, checkpoints, export, runtime and training.

Imports nothing of Atelier: environments arrive through Gymnasium's registry."""
