"""NeuralHydrology-facing classes built on NH's public base classes (models, losses, trainer, samplers)."""
