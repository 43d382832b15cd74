"""The one way ganforge reads foreign torch files: the weights-only unpickler, with refusals as one-line errors.

torch's refusal message is several lines long (the offending GLOBAL, advice about weights_only=False that must
not be followed here, documentation links); users get the one line that says what was refused.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


def refusal_reason(error: BaseException) -> str:
    """The informative line of torch's weights-only refusal (the blocked GLOBAL), else its last line, without
    torch's advice to allow the class (which must not be followed for a file from elsewhere)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    chosen = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line),
                  lines[-1] if lines else type(error).__name__)
    return chosen.split(" Please use `torch.serialization", 1)[0].split(" Check the documentation", 1)[0]


def load_weights_only(path: str | Path, *, what: str, error: type[Exception] = ValueError,
                      allowed: Iterable[tuple[type, str]] = ()) -> Any:
    """`torch.load(path, weights_only=True)`; `allowed` maps foreign class names to inert local classes.

    Anything that cannot be read (missing, truncated, not a torch file, a pickle that would run code) becomes
    `error` with a one-line message naming the file and `what` it was supposed to be; nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    # corrupt bytes can fail anywhere inside torch's unpickler (e.g. IndexError on a truncated opcode stack): every
    # such failure means "not a file we can read", never a crash
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError,
            KeyError, TypeError, AttributeError, AssertionError, struct.error) as err:
        raise error(f"{path}: refused to load as {what} ({refusal_reason(err)}); only tensors and plain "
                    "containers are read, nothing in the file is executed") from err



def load_state_dict_file(path: str | Path, *, what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """A foreign weights file that must hold a plain {name: tensor} mapping, read weights-only."""
    state = load_weights_only(path, what=what, error=error)
    if not isinstance(state, dict):
        raise error(f"{what} {path}: expected a state dict, got {type(state).__name__}")
    return state


def check_layout(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], *, source: str | Path, layout: str,
                 error: type[Exception] = ValueError, allow_unexpected: bool = False) -> None:
    """Refuse weights that do not fit the network, by key, before anything is loaded: a half-matching file would
    otherwise load partly and give silently wrong outputs. BatchNorm's `num_batches_tracked` may be absent."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [] if allow_unexpected else [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(getattr(state[k], 'shape', ()))} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape)]
    if missing or unexpected or wrong:
        problems = [(name, keys) for name, keys in (("missing", missing), ("unexpected", unexpected),
                                                    ("wrong shapes", wrong)) if keys]
        raise error(f"{source} does not have {layout}: "
                    + ", ".join(f"{name} {keys[:5]} (of {len(keys)})" for name, keys in problems))
