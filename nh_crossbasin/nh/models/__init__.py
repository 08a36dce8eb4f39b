"""The plugin's NH models (one model per module, built as ``Model(cfg)`` like NH's modelzoo)."""
