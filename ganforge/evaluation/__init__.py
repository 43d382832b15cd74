"""Metrics applied to runs, checkpoints and image folders: which images are compared and where results go.

The numbers come from `ganforge.metrics` (the maths and the registry); this layer sits above the families (it
samples their generators) and below the engine (which calls it at metric ticks), the API and the CLI.
"""
