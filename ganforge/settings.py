"""The base of every config dataclass, apart from ganforge.config so that config sections defined elsewhere
(ganforge.augment.config, which ganforge.config imports) share it: a setting misspelt in Python is an error, as an
unknown key of a config file is."""

from __future__ import annotations

import dataclasses
import difflib


def suggest_keys(key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(n) for n in near) + "?"
    return "valid keys: " + ", ".join(sorted(valid))


class Settings:
    """Assigning a name that is no field (`config.chekpoint_every = 1`) raises: a dataclass would keep it as a new
    attribute that nothing reads, and the run would train as if it had never been set."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        names = [field.name for field in dataclasses.fields(self)]  # type: ignore[arg-type]
        if name not in names:
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}; {suggest_keys(name, names)}")
        object.__setattr__(self, name, value)
