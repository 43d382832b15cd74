"""Checkpoints as safetensors + JSON, written atomically, verified by hash, found again on resume.

A checkpoint is two files, `<step>.safetensors` (every tensor: networks, EMA, optimiser moments, RNG states) and
`<step>.json` (everything else, plus the sha256 of the tensor file). The JSON is written last and is the commit
marker: a checkpoint without its JSON, or whose tensor file does not match the recorded hash, is not a checkpoint.
Nothing here unpickles anything. `run_state` says what a checkpoint of a run holds, for the engine and for
`write_run` (importers: a new run from networks set up outside training) alike.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from ganforge.config import RunConfig, to_dict
from ganforge.families.base import Family

FORMAT = "ganforge-checkpoint"
FORMAT_VERSION = 1
FRESH_LOADER_STATE = {"epoch": 0, "position": 0}  # a data loader that has served no batch yet


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file named."""


@dataclass
class Checkpoint:
    step: int
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path  # the JSON file


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


LOCK_NAME = ".ganforge.lock"  # in the run folder: the training process holds it locked


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Held by the process that trains the run: a second one on the same folder (a command launched twice, a
    `--restart` beside a running job) would interleave checkpoints, logs and samples, or delete them under it.

    An flock on an empty file in the folder, opened for writing so that NFS (which turns flock into byte-range locks)
    locks it too; the kernel drops it however the holder ends, so a leftover file is no stale lock. The folders made
    here for a new run are removed again, while still locked, if nothing else was written (a refused config leaves
    nothing). Unguarded where the OS (Windows) or file system has no such locks, with a warning on the latter."""
    run_dir = Path(run_dir)
    created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]  # deepest first
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None
    lock = run_dir / LOCK_NAME
    handle = None
    if fcntl is not None:
        try:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's lock file in a shared folder, locked read-only all the same
            with contextlib.suppress(OSError):  # none here to read: a folder this user may not write to at all
                handle = os.open(lock, os.O_RDONLY)
        except OSError as err:
            if err.errno != errno.EROFS:  # a read-only file system: nothing here can be written
                raise
    try:
        if handle is not None:
            try:
                _lock_retrying(handle, fcntl.LOCK_EX)
            except OSError as err:
                if err.errno in _LOCK_HELD:
                    raise CheckpointError(
                        f"{run_dir}: another process is training this run; let it finish, stop it (Ctrl-C or kill "
                        "-TERM: it checkpoints and exits) before resuming here, or give another --run-dir") from None
                warnings.warn(f"{run_dir}: cannot lock the run folder ({err.strerror}); nothing stops a second "
                              "process from training the same run", stacklevel=3)
        try:
            yield
        finally:
            if created and run_dir.is_dir() and {entry.name for entry in run_dir.iterdir()} <= {LOCK_NAME}:
                lock.unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # each removed only while empty
                    for folder in created:
                        folder.rmdir()
    finally:
        if handle is not None:
            os.close(handle)  # drops the lock


_LOCK_HELD = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def _lock_retrying(handle: int, mode: int, tries: int = 20) -> None:
    """flock without waiting for a training process, but through a `training_active` probe's brief shared lock
    (a report written at the moment a run starts must not refuse the run)."""
    import fcntl

    for attempt in range(tries):
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return
        except OSError as err:
            if err.errno not in _LOCK_HELD or attempt == tries - 1:
                raise
            time.sleep(0.05)


def training_active(run_dir: Path) -> bool | None:
    """Whether a process is training the run now (holds its `training_lock`); None where that cannot be told (no
    flock: Windows, or a file system without locks)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        handle = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False  # never trained by a locking ganforge, or its folder was cleared: nothing holds it
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        return True if err.errno in _LOCK_HELD else None
    finally:
        os.close(handle)  # drops the probe's lock
    return False


def _sync_folder(folder: Path) -> None:
    """Make a folder's renames and deletions durable (a power cut could otherwise keep an older checkpoint's
    deletion but not the new one's rename). Folders cannot be opened for it on Windows: skipped there."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # file systems that refuse fsync on a folder
            os.fsync(handle)
    finally:
        os.close(handle)


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename, fsync of the folder: a reader sees the old file or the whole
    new one, after a power cut too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    _write_atomic(Path(path), (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def save_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    keep: int, protect: set[int] | None = None, *,
                    before_pruning: Callable[[], None] | None = None) -> Path:
    """Write checkpoint `step` and prune to the newest `keep` (steps in `protect` are never pruned).
    `before_pruning` runs once the checkpoint is whole: what names the protected steps on disk (best.json) must be
    written before any older checkpoint goes, or a kill between the two loses a checkpoint it names."""
    folder = checkpoint_dir(run_dir)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    blob = safetensors.torch.save(contiguous)
    tensor_path = folder / f"{step:08d}.safetensors"
    json_path = folder / f"{step:08d}.json"
    _write_atomic(tensor_path, blob)
    record = {"format": FORMAT, "version": FORMAT_VERSION, "step": step,
              "tensors_file": tensor_path.name, "sha256": hashlib.sha256(blob).hexdigest(), **meta}
    write_json_atomic(json_path, record)
    if before_pruning is not None:
        before_pruning()
    prune_checkpoints(run_dir, keep, protect or set())
    return json_path


BEST_NAME = "best.json"


def read_best(run_dir: Path) -> list[dict[str, Any]]:
    """best.json's ranked {"step", "value"} entries ([] where there is none). A damaged file is a CheckpointError
    naming it, asked for when training starts rather than at its first metric tick."""
    path = Path(run_dir) / BEST_NAME
    if not path.is_file():
        return []
    fix = "; delete it to rank the best checkpoints afresh from the next metric tick"
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err}){fix}") from None
    entries = best.get("best") if isinstance(best, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("step"), int) and not isinstance(entry["step"], bool)
            and isinstance(entry.get("value"), int | float) and not isinstance(entry["value"], bool)
            for entry in entries):
        raise CheckpointError(f'{path}: expected {{"metric": NAME, "best": [{{"step": N, "value": X}}, ...]}}{fix}')
    return entries


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps that have a JSON record, oldest first (validity is checked on load)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    steps = []
    for path in folder.glob("*.json"):
        if path.stem.isdigit():
            steps.append(int(path.stem))
    return sorted(steps)


def prune_checkpoints(run_dir: Path, keep: int, protect: set[int]) -> None:
    steps = checkpoint_steps(run_dir)
    folder = checkpoint_dir(run_dir)
    for step in steps[:-keep] if keep > 0 else []:
        if step in protect:
            continue
        (folder / f"{step:08d}.safetensors").unlink(missing_ok=True)  # the tensors first: a kill between the two
        (folder / f"{step:08d}.json").unlink(missing_ok=True)  # leaves a record the next prune still lists
    recorded = {f"{step:08d}" for step in checkpoint_steps(run_dir)}
    for orphan in folder.glob("*.safetensors"):  # a write killed before its record, or a prune between the two
        if orphan.stem.isdigit() and orphan.stem not in recorded:
            orphan.unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):  # leftovers of a write that was killed
        stale.unlink(missing_ok=True)
    _sync_folder(folder)


def _dataset_shape(dataset: Any) -> bool:
    """Whether a record's `dataset` holds what rebuilding the networks reads (an edited or cut record may not)."""
    if not isinstance(dataset, dict):
        return False
    numbers = [dataset.get(key) for key in ("count", "resolution", "channels")]
    labels = dataset.get("labels")
    return (all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in numbers) and isinstance(labels, list)
            and all(isinstance(column, dict) and isinstance(column.get("name"), str)
                    and isinstance(column.get("classes"), list) for column in labels))


def load_checkpoint(json_path: Path) -> Checkpoint:
    """Read and verify one checkpoint; any problem is a CheckpointError naming the file."""
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{json_path}: unreadable checkpoint record ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not a ganforge checkpoint record (format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{json_path}: not a ganforge checkpoint record")
    missing = [key for key, kind in (("step", int), ("tensors_file", str), ("sha256", str), ("config", dict))
               if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)]
    if not _dataset_shape(meta.get("dataset")):  # the data's shape, which the networks are rebuilt from
        missing.append("dataset (count, resolution, channels, labels)")
    if missing:
        raise CheckpointError(f"{json_path}: checkpoint record lacks valid {', '.join(missing)}")
    if json_path.stem.isdigit() and int(json_path.stem) != meta["step"]:
        raise CheckpointError(f"{json_path}: records step {meta['step']}, its name says step {int(json_path.stem)}")
    if Path(meta["tensors_file"]).name != meta["tensors_file"]:
        raise CheckpointError(f"{json_path}: tensors_file must be a file name beside the record, got "
                              f"{meta['tensors_file']!r}")
    if not isinstance(meta.get("version", 0), int) or meta.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{json_path}: written by a newer ganforge (checkpoint version {meta['version']})")
    tensor_path = json_path.parent / meta.get("tensors_file", "")
    try:
        blob = tensor_path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{tensor_path}: missing tensor file for {json_path.name} ({err.strerror})") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"{tensor_path}: content does not match the hash recorded in {json_path.name} "
                              "(truncated or corrupted)")
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{tensor_path}: not a readable safetensors file ({err})") from None
    return Checkpoint(step=int(meta["step"]), meta=meta, tensors=tensors, path=json_path)


def latest_valid_checkpoint(run_dir: Path, *, refuse_all_broken: bool = False) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; broken newer ones are reported and skipped. None where there
    is none; with `refuse_all_broken`, checkpoint files none of which loads are an error instead (a run that
    started over would replace them: a newer ganforge's format, a file system that failed to read, ...)."""
    newest_error = None
    for step in reversed(checkpoint_steps(run_dir)):
        path = checkpoint_dir(run_dir) / f"{step:08d}.json"
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint: {err}", stacklevel=2)
            newest_error = newest_error or err
    if refuse_all_broken and newest_error is not None:
        raise CheckpointError(f"{run_dir}: none of its checkpoints can be read (the newest: {newest_error}); it is "
                              "left as it is: restart it (--restart) to start over, deleting them")
    return None


def resolve_checkpoint(target: Path, step: int | None = None) -> Checkpoint:
    """A run directory (newest valid, or `step`) or a checkpoint file (.json or .safetensors) → Checkpoint."""
    target = Path(target)
    if target.is_dir():
        if step is not None:
            return load_checkpoint(checkpoint_dir(target) / f"{step:08d}.json")
        found = latest_valid_checkpoint(target)
        if found is None:
            raise CheckpointError(f"{target}: no valid checkpoint in {checkpoint_dir(target)}")
        return found
    if not target.exists():
        raise CheckpointError(f"{target}: no such run directory or checkpoint")
    return load_checkpoint(target.with_suffix(".json") if target.suffix == ".safetensors" else target)


# --- optimiser and RNG state as tensors + JSON ----------------------------------------------------------------
IMPLEMENTATION_OPTIONS = ("fused", "foreach", "capturable", "differentiable")


def optimizer_to_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"opt/{name}/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           record: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"opt/{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, slot = key[len(prefix):].split("/", 1)
            state.setdefault(int(index), {})[slot] = value
    for index, slots in record.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(slots)
    if len(record["param_groups"]) != len(optimizer.param_groups):
        raise CheckpointError(f"optimizers.{name}.param_groups: the checkpoint has {len(record['param_groups'])} "
                              f"parameter groups, this run's optimiser {len(optimizer.param_groups)}")
    groups = []
    for group, current in zip(record["param_groups"], optimizer.param_groups, strict=True):
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        # how the update is computed is this process's choice (e.g. fused where the device has the kernel), not state
        group.update({key: current[key] for key in IMPLEMENTATION_OPTIONS if key in current})
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    for param, slots in optimizer.state.items():
        for slot, value in slots.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                # safetensors hands back contiguous tensors; a fused kernel walks a channels_last weight and its
                # moments in memory order, so the moments must share the weight's layout (or be mismatched)
                slots[slot] = torch.empty_like(param, dtype=value.dtype).copy_(value)


# --- a run's state ----------------------------------------------------------------------------------------------

def run_state(config: RunConfig, family: Family, step: int, *, images_seen: int = 0,
              loader_state: dict[str, int] | None = None, loss_scale: dict[str, Any] | None = None,
              world_size: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What a checkpoint of a run at `step` holds: the tensors (networks, optimiser moments, RNG states) and the
    JSON record (config, dataset shape, loader position, family state, schedule position, ...)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, net in family.nets.items():
        for key, value in net.state_dict().items():
            tensors[f"net/{name}/{key}"] = value
    optimizers = {}
    for name, optimizer in family.optimizers.items():
        opt_tensors, record = optimizer_to_tensors(name, optimizer)
        tensors.update(opt_tensors)
        optimizers[name] = record
    tensors["rng/torch"] = torch.get_rng_state()
    if family.device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(family.device)
    meta = {
        "family": family.name,
        "images_seen": images_seen,
        "config": to_dict(config),
        "dataset": {k: v for k, v in family.dataset.manifest.items() if k != "skipped"},
        "loader": dict(loader_state or FRESH_LOADER_STATE),
        "family_state": family.family_state(),
        "optimizers": optimizers,
        "progress": family.plan(min(step, family.total_steps() - 1)).progress,
        "total_steps": family.total_steps(),  # the schedule's length when written: the report's "step N of M"
        "world_size": world_size,
        "loss_scale": loss_scale,
        "time": time.time(),
    }
    return tensors, meta


PARTIAL_SUFFIX = ".partial"  # a hidden folder `write_run` builds a run in before it moves it into place


def is_partial_run(path: Path) -> bool:
    """Whether `path` is a folder `write_run` was building a run in when it was killed (a retry removes it)."""
    return path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX) and path.is_dir()


def write_run(out: Path, config: RunConfig, family: Family, step: int) -> Path:
    """A new run in `out` whose networks were set up outside training (an imported checkpoint): config.json and
    one checkpoint at `step`, from which `ganforge train` resumes like from any run. Returns `out`."""
    out = Path(out)
    if checkpoint_steps(out):
        raise CheckpointError(f"{out} already holds a run; import into a new directory")
    tensors, meta = run_state(config, family, step)
    meta["imported"] = True  # no step has used the run's data yet: a first `train` may bind it to other data
    given_folder = out.is_dir()  # (a symlink to one, `.`): what is written moves into it
    if given_folder and (out / "config.json").exists():  # (the importers refuse any folder that is not empty)
        raise CheckpointError(f"{out} holds a config.json already; import into a new directory")
    host = out if given_folder else out.parent
    host.mkdir(parents=True, exist_ok=True)
    # written in a hidden folder on the same file system and renamed into place: a failure (disk full) leaves no
    # half run to refuse a retry; one a kill left is removed by the retry
    stem = f".{out.name or 'run'}."
    leftovers = [path for path in host.iterdir() if is_partial_run(path)] if given_folder else \
        list(host.glob(f"{glob.escape(stem)}*{PARTIAL_SUFFIX}"))  # (beside `out`: only its own)
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    partial = host / f"{stem}{os.getpid()}-{time.monotonic_ns()}{PARTIAL_SUFFIX}"
    partial.mkdir()  # (not mkdtemp: its 0700 would become the run's permissions)
    try:
        write_json_atomic(partial / "config.json", meta["config"])
        save_checkpoint(partial, step, tensors, meta, keep=config.keep_checkpoints)
        if given_folder:
            for name in ("checkpoints", "config.json"):  # config.json last: it marks a whole run
                os.replace(partial / name, out / name)
            partial.rmdir()
        else:
            os.replace(partial, out)
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"could not write the run {out}: {err.strerror or err}; nothing was left "
                                  "there") from None
        raise
    _sync_folder(out if given_folder else out.parent)
    return out


@dataclass
class Transfer:
    """What `transfer_network_states` copied: tensor counts, and the names it could not (shape, or absent)."""

    copied: int
    total: int
    reshaped: list[str]  # "G/shared.weight [4, 8] → [2, 8]": kept at this run's fresh init
    absent: list[str]  # in this run's networks, not in the source: fresh init too

    def summary(self) -> str:
        parts = [f"{self.copied} of {self.total} tensors copied"]
        for label, names in (("different shape, kept fresh", self.reshaped), ("not in the source", self.absent)):
            if names:
                more = f" and {len(names) - 4} more" if len(names) > 4 else ""
                parts.append(f"{label}: {', '.join(names[:4])}{more}")
        return "; ".join(parts)


def transfer_network_states(nets: dict[str, nn.Module], ema_pairs: dict[str, str],
                            tensors: dict[str, torch.Tensor]) -> Transfer:
    """Fine-tuning's start: every tensor of `nets` whose name and shape the source holds is copied, the rest keep
    their fresh init; an EMA network the source has no weights for starts as its (copied) source network."""
    copied, total, reshaped, absent = 0, 0, [], []
    for name, net in nets.items():
        prefix = f"net/{name}/"
        if name in ema_pairs and not any(key.startswith(prefix) for key in tensors):
            continue  # after its source network, below
        state = net.state_dict()
        for key, value in state.items():
            total += 1
            found = tensors.get(prefix + key)
            if found is None:
                absent.append(f"{name}/{key}")
            elif found.shape != value.shape:
                reshaped.append(f"{name}/{key} {list(found.shape)} → {list(value.shape)}")
            else:
                with torch.no_grad():
                    value.copy_(found)
                copied += 1
    for ema, source in ema_pairs.items():
        if not any(key.startswith(f"net/{ema}/") for key in tensors):
            nets[ema].load_state_dict(nets[source].state_dict())
    return Transfer(copied, total, reshaped, absent)


def load_network_states(nets: dict[str, nn.Module], tensors: dict[str, torch.Tensor], source: Path, *,
                        new_layers: dict[str, set[str]] | None = None) -> None:
    """Load every `net/<name>/...` group into `nets`, strictly, with a clear mismatch message; `new_layers` (per
    network, the tensors of layers grown since the checkpoint: `Family.grown_at`) may be absent from it and keep
    their initialisation."""
    for name, net in nets.items():
        prefix = f"net/{name}/"
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{source}: no weights for network {name!r}")
        built = net.state_dict()  # shapes first: load_state_dict raises on them with a traceback of its own
        for key, value in state.items():
            if key in built and built[key].shape != value.shape:
                raise CheckpointError(f"{source}: {name}.{key} has shape {tuple(value.shape)}, this config "
                                      f"builds {tuple(built[key].shape)}")
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = sorted(set(missing) - (new_layers or {}).get(name, set()))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: network {name!r} does not match this config "
                f"(missing {sorted(missing)[:3]}{'…' if len(missing) > 3 else ''}, "
                f"unexpected {sorted(unexpected)[:3]}{'…' if len(unexpected) > 3 else ''})")
