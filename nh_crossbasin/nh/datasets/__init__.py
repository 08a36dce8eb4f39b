"""NH datasets of the plugin (registered with NH's own ``register_dataset``).

- :mod:`.pooled` — ``dataset: xb_pooled``: two or more NH datasets in one run, each normalised with its own
  training statistics (:mod:`.pooled_sources` reads the sources, :mod:`.pooled_scaling` does the normalisation).
"""
