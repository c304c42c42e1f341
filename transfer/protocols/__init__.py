"""The transfer protocols, one module each: its config, its presets and `run()`; none imports another."""
