"""Importers of official checkpoints into ganforge runs (no pickled code is executed)."""
