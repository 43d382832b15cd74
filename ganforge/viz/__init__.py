"""Pictures from models and runs: sample grids, interpolations, animations."""
