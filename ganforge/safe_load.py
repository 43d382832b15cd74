"""The one way ganforge reads foreign torch files: the weights-only unpickler, with refusals as one-line errors.

torch's refusal message is several lines long (the offending GLOBAL, advice about weights_only=False that must
not be followed here, documentation links); users get the one line that says what was refused.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import struct
import types
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch


def refusal_reason(error: BaseException) -> str:
    """The informative line of torch's weights-only refusal (the blocked GLOBAL), else its last line, without
    torch's advice to allow the class (which must not be followed for a file from elsewhere)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    chosen = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line),
                  lines[-1] if lines else type(error).__name__)
    chosen = chosen.split(" Please use `torch.serialization", 1)[0].split(" Check the documentation", 1)[0]
    if isinstance(error, KeyError | IndexError | EOFError | struct.error):  # bytes no pickle reader can follow
        return f"not a file torch.save wrote, or a damaged one: {type(error).__name__} {chosen}"
    if chosen.startswith("Unsupported operand"):  # a pickle opcode torch.save never writes
        return f"{chosen}: a pickle that torch.save did not write (another library's, or a newer pickle protocol)"
    return chosen


def load_weights_only(path: str | Path, *, what: str, error: type[Exception] = ValueError,
                      allowed: Iterable[tuple[type, str]] = ()) -> Any:
    """`torch.load(path, weights_only=True)`; `allowed` maps foreign class names to inert local classes.

    Anything that cannot be read (missing, truncated, not a torch file, a pickle that would run code) becomes
    `error` with a one-line message naming the file and `what` it was supposed to be; nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    allowed = list(allowed)
    try:
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if LEGACY_MODULE_REFUSAL not in str(err) or _is_torch_zip(path):
                raise
            return _load_legacy_with_module_classes(path, allowed)
    # corrupt bytes can fail anywhere inside torch's unpickler (e.g. IndexError on a truncated opcode stack): every
    # such failure means "not a file we can read", never a crash
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError,
            KeyError, TypeError, AttributeError, AssertionError, struct.error) as err:
        raise error(f"{path}: refused to load as {what} ({refusal_reason(err)}); only tensors and plain "
                    "containers are read, nothing in the file is executed") from err


def _is_torch_zip(path: Path) -> bool:
    """torch's own test (the local file header first): a zip it reads whatever trails it, which fools
    zipfile.is_zipfile (the last end-of-archive record)."""
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


# torch's weights-only reader refuses a pre-1.6 (non-zip) file that pickled an nn.Module class: that format refers
# to module classes through a persistent id of their own (the 2019 BigGAN-PyTorch releases' state_dict.pth, whose
# config holds the activation modules)
LEGACY_MODULE_REFUSAL = "Only persistent_load of storage is allowed"


class _RestrictedUnpickler(pickle._Unpickler):
    """Python's unpickler held to torch's weights-only rules: globals only from `allowed` (torch's weights-only list
    and the caller's inert stand-ins), called (REDUCE, NEWOBJ) only if allowed, state set (BUILD) only on instances
    of allowed types (never on a class or function: that would change them for the whole process), and none of the
    opcodes torch.save never writes. A module class referred to by persistent id must be an allowed class (it is
    returned as it is); storages are torch's own."""

    allowed: ClassVar[dict[str, Any]] = {}
    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def _is_allowed(self, value: Any) -> bool:
        return any(value is item for item in self.allowed.values())

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names (`__builtin__.set`), as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self.allowed.get(f"{module}.{name}")
        if found is None:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name} is not an allowed global")
        return found

    def _checked_reduce(self) -> None:
        if not self._is_allowed(self.stack[-2]):
            raise pickle.UnpicklingError(f"Unsupported reduce: {self.stack[-2]!r} is not an allowed callable")
        pickle._Unpickler.load_reduce(self)

    def _checked_newobj(self) -> None:
        if not self._is_allowed(self.stack[-2]):
            raise pickle.UnpicklingError(f"Unsupported NEWOBJ: {self.stack[-2]!r} is not an allowed class")
        pickle._Unpickler.load_newobj(self)

    def _checked_build(self) -> None:
        target = self.stack[-2]
        if isinstance(target, type) or not any(type(target) is item for item in self.allowed.values()):
            raise pickle.UnpicklingError(f"Unsupported BUILD: setting the state of {target!r} is not allowed")
        pickle._Unpickler.load_build(self)

    def _refused_opcode(self) -> None:
        raise pickle.UnpicklingError("Unsupported operand: an opcode torch.save does not write (INST, OBJ, EXT, "
                                     "NEWOBJ_EX)")

    dispatch[pickle.REDUCE[0]] = _checked_reduce
    dispatch[pickle.NEWOBJ[0]] = _checked_newobj
    dispatch[pickle.BUILD[0]] = _checked_build
    for _opcode in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEWOBJ_EX):
        dispatch[_opcode[0]] = _refused_opcode
    del _opcode

    @property
    def persistent_load(self) -> Any:  # what torch's loader assigns is wrapped, not replaced
        return self._persistent

    @persistent_load.setter
    def persistent_load(self, torch_persistent_load: Any) -> None:
        self._torch_persistent_load = torch_persistent_load

    def _persistent(self, saved_id: Any) -> Any:
        if isinstance(saved_id, tuple) and saved_id and saved_id[0] in ("module", b"module"):
            if len(saved_id) < 2 or not isinstance(saved_id[1], type) or not self._is_allowed(saved_id[1]):
                raise pickle.UnpicklingError("Unsupported persistent id: a module class that is not allowed")
            return saved_id[1]  # the class itself; torch's source comparison is not for stand-ins
        return self._torch_persistent_load(saved_id)


def _load_legacy_with_module_classes(path: Path, allowed: list[tuple[type, str]]) -> Any:
    """A pre-1.6 file whose pickle names module classes, read through `_RestrictedUnpickler`."""
    from torch import _weights_only_unpickler

    globals_allowed = {**_weights_only_unpickler._get_allowed_globals(),
                       **{name: cls for cls, name in allowed}}
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"allowed": globals_allowed})

    def load(file: Any, **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    restricted = types.SimpleNamespace(__name__="ganforge_restricted_pickle", Unpickler=unpickler, load=load)
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted)


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
