"""ganforge: train, evaluate and use GANs with one engine, one CLI and reference-exact metrics."""

__version__ = "0.1.0"
