"""A PGAN config small enough for end-to-end tests: grows 4→8→16 with fades in a few seconds on CPU."""

TINY_PGAN = {
    "family": "pgan",
    "data": "builtin:shapes?count=64&resolution=16",
    "log_every": 4,
    "sample_every": 8,
    "checkpoint_every": 8,
    "keep_checkpoints": 10,
    "sample_count": 8,
    "progress": False,
    "tensorboard": False,
    "model": {
        "resolution": 16,
        "latent_dim": 16,
        "widths": [16, 16, 8],
        "ema_rampup": 0.05,  # the EMA warm-up a short run needs (as in configs/quickstart_pgan.yaml)
        "schedule": {"max_iter_at_scale": [4, 8, 8], "alpha_jumps": 2, "alpha_jump_size": 2, "batch_size": 4},
    },
}
