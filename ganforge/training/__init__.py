"""The one training engine: loop, checkpoints, distributed setup, logging."""
