"""Data: image sources → prepared store (uint8 pyramid + labels + manifest) → device batches."""
