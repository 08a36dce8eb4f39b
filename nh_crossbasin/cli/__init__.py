"""The ``nh-xb`` command line: NH's run modes with the plugin active, plus the plugin's own commands."""
