"""ganforge: train, evaluate and use GANs with one engine, one CLI and reference-exact metrics.

`ganforge.load(run_dir)` gives a trained model, `ganforge.train(config, run_dir)` trains one.
"""

from typing import Any

from ganforge.version import __version__

__all__ = ["load", "train", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: `import ganforge` stays cheap, torch loads on first use
    if name in ("load", "train"):
        from ganforge import api

        return getattr(api, name)
    raise AttributeError(f"module 'ganforge' has no attribute {name!r}")


def __dir__() -> list[str]:  # the lazy names too, for completion in notebooks
    return sorted({*globals(), "load", "train"})
