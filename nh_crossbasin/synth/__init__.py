"""Synthetic CAMELS-like basins with hidden hydrological regimes.

:func:`generate_basins` writes a NeuralHydrology ``generic`` dataset whose
streamflow comes from a conceptual model with attribute-to-parameter transfer
functions that conflict between hidden regimes (regime 0 vs. regime 1 have
opposite signs). The regime is not an attribute: the same attributes mean opposite
parameters in the two regimes.
"""
from .generator import (DYNAMIC_INPUTS, STATIC_ATTRIBUTES, SYNTH_VERSION, TARGET_VARIABLE, SynthSummary,
                        generate_basins, split_periods)

__all__ = ["generate_basins", "SynthSummary", "split_periods", "DYNAMIC_INPUTS", "STATIC_ATTRIBUTES",
           "TARGET_VARIABLE", "SYNTH_VERSION"]
