"""Families plug networks, optimisers and loss phases into the one training engine."""
