"""Reusable layers: equalized learning rate, pixel norm, minibatch stddev, EMA, ..."""
