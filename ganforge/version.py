"""The package version, in a module of its own so the lowest layers (the dataset store records it) can read it."""

__version__ = "0.1.0"
