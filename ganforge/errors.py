"""The error every config check raises, apart from ganforge.config so that config sections defined elsewhere
(e.g. ganforge.augment.config, which ganforge.config imports) can raise it without an import cycle; and how an
out-of-memory failure is recognised, whichever allocator raised it."""

import sys


class ConfigError(ValueError):
    """A config problem, reported with the offending key path and what was expected."""


class RunStopped(RuntimeError):
    """A run stopped for a reason its message gives the user (a NaN loss, another rank's failure, ranks that
    diverged): the command line prints it as one line, not a traceback."""


class RankFailedError(RunStopped):
    """Another rank of a multi-process computation failed; its own error is in its output (and in the message)."""


def is_out_of_memory(err: BaseException) -> bool:
    """torch's device out-of-memory error (CUDA, MPS), Python's MemoryError, or the CPU allocator's RuntimeError
    ("DefaultCPUAllocator: can't allocate memory"), which torch raises as a plain RuntimeError; not another rank's
    failure, whose message may quote such an error beside the one that decided its kind."""
    if isinstance(err, RankFailedError):
        return False
    torch = sys.modules.get("torch")  # whatever ran out of memory imported it
    if isinstance(err, MemoryError) or (torch is not None and isinstance(err, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
