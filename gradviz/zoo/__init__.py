"""The programs gradviz ships: the tutorial presets, example models and Functions, sources."""
