"""NeuralHydrology-facing classes built on NH's public base classes (models, losses, trainer, samplers).

NH is imported here, before any of this package's modules import from it, so that the start-up hook (which acts
when NH is first imported) can activate the plugin before one of these modules is half-initialised.
"""
import neuralhydrology  # noqa: F401
