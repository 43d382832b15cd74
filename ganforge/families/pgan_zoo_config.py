"""pytorch_GAN_zoo's PGAN config JSON (`{"pathDB": ..., "config": {...}}`) → a ganforge config mapping.

The seed's `config_celeba_cropped.json` must keep working as written, and so must every config the zoo's
datasets.py writes: `datasetProfile` (its `-f` fast training: the images pre-resized per scale, for speed) has no
counterpart, a ganforge store holds every scale. Zoo semantics are kept where they matter:
`miniBatchScheduler` and `configScheduler` entries hold from their scale onwards (the value of the largest key ≤
the current scale). Unlike the zoo, a per-scale `baseLearningRate` really changes the optimiser's learning rate.
Keys whose zoo meaning ganforge does not offer for PGAN are errors, never silently ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ganforge.config import ConfigError, parse_reference_flags, read_config_file, suggest_keys
from ganforge.data.store import CLASS_COLUMN

# zoo `config` keys that must keep the value ganforge's PGAN always uses
_FIXED = {"miniBatchStdDev": True, "equalizedlR": True, "perChannelNormalization": True, "initBiasToZero": True,
          "leakyness": 0.2, "lossMode": "WGANGP", "dimOutput": 3, "alphaJumpMode": "linear", "attribKeysOrder": None}
_MAPPED = {"maxIterAtScale", "alphaNJumps", "alphaSizeJumps", "miniBatchSize", "dimLatentVector", "depthScales",
           "lambdaGP", "epsilonD", "baseLearningRate", "learningRate", "GDPP", "miniBatchScheduler",
           "configScheduler", "weightConditionD", "weightConditionG"}
_TOP_LEVEL = {"pathDB", "config", "miniBatchScheduler", "configScheduler", "imagefolderDataset", "datasetProfile",
              "ignoreAttribs"}
# the zoo trainer's other keyword arguments, which select attributes or a partition of the images
_SUBSETS = {"pathPartition", "partitionValue", "selectedAttributes"}
_SCHEDULED = {"baseLearningRate", "learningRate"}
ZOO_ALPHA_JUMPS, ZOO_ALPHA_JUMP_SIZE = 600, 32  # pgan_config.py's alphaNJumps and alphaSizeJumps from scale 1 on
ZOO_EVAL_ITER = 100  # train.py's --eval_iter default


def _forward_fill(table: dict[str, Any], scales: int, where: str) -> dict[int, Any]:
    """{scale: value} holding from each key's scale onwards, as the zoo applies its schedulers."""
    try:
        by_scale = {int(k): v for k, v in table.items()}
    except ValueError:
        raise ConfigError(f"{where}: keys must be scale indices like \"3\", got {sorted(table)}") from None
    filled, current = {}, None
    for scale in range(scales):
        if scale in by_scale:
            current = by_scale[scale]
        if current is not None:
            filled[scale] = current
    return filled


def _one_learning_rate(table: dict[str, Any], where: str) -> None:
    """baseLearningRate and learningRate in one mapping: the zoo takes one of them (the first in `config`, the
    second in a configScheduler entry), which a translation by key order would get wrong half the time."""
    if set(table) >= _SCHEDULED:
        raise ConfigError(f"{where}: baseLearningRate {table['baseLearningRate']!r} and learningRate "
                          f"{table['learningRate']!r} both set the learning rate; keep one")


def _check_jump_sizes(schedule: dict[str, Any], scales: int) -> None:
    """alphaNJumps > 0 with alphaSizeJumps 0 at a scale: the zoo puts every jump at iteration 0 and, advancing one
    jump per iteration, holds alpha at 1 the whole scale (its new layer unused), which ganforge's fade of no
    iterations would not reproduce."""
    def per_scale(key: str, default: int) -> list[Any]:
        value = default if schedule.get(key) is None else schedule[key]  # null: the default, as ganforge reads it
        return value if isinstance(value, list) else [0] + [value] * (scales - 1)

    jumps, sizes = per_scale("alpha_jumps", ZOO_ALPHA_JUMPS), per_scale("alpha_jump_size", ZOO_ALPHA_JUMP_SIZE)
    for s in range(1, min(scales, len(jumps), len(sizes))):
        if jumps[s] and sizes[s] == 0:
            raise ConfigError(f"config.alphaSizeJumps[{s}]: 0 with alphaNJumps[{s}] = {jumps[s]}: the zoo puts every "
                              "jump at iteration 0 and holds alpha at 1 the whole scale (the new layer unused); "
                              f"give the jumps a size, or alphaNJumps[{s}] = 0 for no fade")


def _scale_list(value: Any, scales: int, key: str) -> Any:
    """A per-scale alpha list cut to the run's scales as the zoo cuts it; scale 0's entry, which the zoo
    overwrites with 0 (nothing to fade from), must be 0 rather than silently ignored."""
    if not isinstance(value, list):
        return value
    if value and value[0] != 0:
        raise ConfigError(f"config.{key}[0]: scale 0 has nothing to fade from (the zoo sets this entry to 0), "
                          f"got {value[0]}")
    return value[:scales]


def zoo_config_to_ganforge(data: dict[str, Any]) -> dict[str, Any]:
    for key in data:
        if key == "pathAttribDict":
            raise ConfigError("pathAttribDict: ganforge does not read the zoo's attribute files; a store carries its "
                              "labels as columns: write a ganforge config with model.conditions (those columns)")
        if key in _SUBSETS and data[key] not in (None, False):
            raise ConfigError(f"{key}: ganforge trains on the whole store and reads no zoo attribute or partition "
                              "files: prepare a store from the images (and label columns) that the zoo would select")
        if key not in _TOP_LEVEL | _SUBSETS:
            hint = suggest_keys(key, sorted(_TOP_LEVEL))
            raise ConfigError(f"unknown key '{key}' in a pytorch_GAN_zoo config: {hint}")
    if "pathDB" not in data:
        raise ConfigError("pathDB: a pytorch_GAN_zoo config needs the dataset path (a ganforge store, or "
                          "builtin:shapes)")
    zoo = dict(data.get("config") or {})
    for key in ("miniBatchScheduler", "configScheduler"):
        if key in data:
            zoo[key] = data[key]
    for key, value in zoo.items():
        if key in _FIXED:
            if value != _FIXED[key]:
                raise ConfigError(f"config.{key}: ganforge's PGAN supports only {_FIXED[key]!r}, got {value!r}")
        elif key not in _MAPPED:
            raise ConfigError(f"unknown key 'config.{key}' in a pytorch_GAN_zoo config: "
                              f"{suggest_keys(key, sorted(_MAPPED | set(_FIXED)))}")

    iters = zoo.get("maxIterAtScale", [48000, 96000, 96000, 96000, 96000, 96000, 96000, 96000, 200000])
    if not isinstance(iters, list) or not iters:
        raise ConfigError(f"config.maxIterAtScale: expected a list of iterations per scale, got {iters!r}")
    scales = len(iters)
    model: dict[str, Any] = {"variant": "zoo", "resolution": 4 * 2 ** (scales - 1)}
    schedule: dict[str, Any] = {"unit": "iterations", "max_iter_at_scale": iters}
    for zoo_key, key in (("alphaNJumps", "alpha_jumps"), ("alphaSizeJumps", "alpha_jump_size")):
        if zoo_key in zoo:
            schedule[key] = _scale_list(zoo[zoo_key], scales, zoo_key)
    _check_jump_sizes(schedule, scales)
    if "miniBatchSize" in zoo:
        schedule["batch_size"] = zoo["miniBatchSize"]
    if "dimLatentVector" in zoo:
        model["latent_dim"] = zoo["dimLatentVector"]
    if "depthScales" in zoo:
        depths = zoo["depthScales"]
        if not isinstance(depths, list) or len(depths) < scales:
            raise ConfigError(f"config.depthScales: expected at least {scales} widths (one per scale of "
                              f"maxIterAtScale), got {depths!r}")
        model["widths"] = depths[:scales]
    _one_learning_rate(zoo, "config")
    for zoo_key, key in (("lambdaGP", "lambda_gp"), ("epsilonD", "drift"), ("baseLearningRate", "lr"),
                         ("learningRate", "lr")):
        if zoo_key in zoo:
            model[key] = zoo[zoo_key]
    if zoo.get("GDPP"):
        model["gdpp"] = 1.0
    weights = {key: zoo.get(key, 0.0) for key in ("weightConditionD", "weightConditionG")}
    # the zoo conditions G on the class folders, whatever the weights, unless ignoreAttribs turns its classes off
    if data.get("imagefolderDataset") and not data.get("ignoreAttribs"):
        model.update(conditions=[CLASS_COLUMN], condition_weight_d=weights["weightConditionD"],
                     condition_weight_g=weights["weightConditionG"])
    else:
        for key, value in weights.items():
            if value:
                raise ConfigError(f"config.{key}: {value!r}: the zoo's AC-GAN needs classes, from class folders "
                                  "(imagefolderDataset: true, a store `ganforge prepare` made from them) or from a "
                                  "pathAttribDict file, which ganforge does not read: write a ganforge config with "
                                  "model.conditions (the store's label columns) and model.condition_weight_d / _g")

    batches = _forward_fill(zoo.get("miniBatchScheduler") or {}, scales, "miniBatchScheduler")
    if "miniBatchSize" in zoo and len(batches) == scales:
        raise ConfigError(f"config.miniBatchSize: {zoo['miniBatchSize']!r} does nothing, miniBatchScheduler gives "
                          f"every scale of maxIterAtScale ({scales}) its batch; remove it")
    if batches:
        schedule["batch_per_resolution"] = {4 * 2**s: b for s, b in batches.items()}
    lr_tables = zoo.get("configScheduler") or {}
    for scale_key, changes in lr_tables.items():
        if not isinstance(changes, dict):
            raise ConfigError(f"configScheduler.{scale_key}: expected a mapping of config keys, got {changes!r}")
        for key in changes:
            if key not in _SCHEDULED:
                raise ConfigError(f"configScheduler.{scale_key}.{key}: only {sorted(_SCHEDULED)} can change per "
                                  "scale in ganforge's PGAN")
        _one_learning_rate(changes, f"configScheduler.{scale_key}")
    lrs = _forward_fill({k: next(iter(v.values())) for k, v in lr_tables.items() if v}, scales, "configScheduler")
    if lrs:
        schedule["lr_per_resolution"] = {4 * 2**s: float(lr) for s, lr in lrs.items()}
    model["schedule"] = schedule
    if not math.log2(model["resolution"]).is_integer():
        raise ConfigError(f"config.maxIterAtScale: {scales} scales do not give a power-of-two resolution")
    # the zoo's train.py averages its logged losses over --eval_iter iterations, 100 by default: the same window
    return {"family": "pgan", "data": str(data["pathDB"]), "log_every": ZOO_EVAL_ITER, "model": model}


# train.py's own options (short forms as written in the zoo's README) and the config keys it turns into options:
# updateParserWithConfig makes `--KEY VALUE` of every key of the PGAN defaults with a scalar value (a list value
# would be split into characters, so lists stay in the file)
_SHORT = {"-c": "--config", "-n": "--name", "-d": "--dir", "-s": "--save_iter", "-e": "--eval_iter",
          "-S": "--Scale_iter", "-v": "--partitionValue"}
_TRAIN_OPTIONS: dict[str, tuple[str, Any]] = {
    "config": ("str", None), "name": ("str", "default"), "dir": ("str", "output_networks"), "save_iter": ("int", 16000),
    "eval_iter": ("int", ZOO_EVAL_ITER), "Scale_iter": ("str", None), "partitionValue": ("str", None),
    "restart": ("on", False), "no_vis": ("on", False), "np_vis": ("on", False)}
_OVERRIDES: dict[str, tuple[str, Any]] = {
    "miniBatchSize": ("int", None), "dimLatentVector": ("int", None), "lambdaGP": ("float", None),
    "epsilonD": ("float", None), "baseLearningRate": ("float", None), "weightConditionG": ("float", None),
    "weightConditionD": ("float", None), "GDPP": ("str", None), "leakyness": ("float", None),
    "dimOutput": ("int", None), "lossMode": ("str", None), "alphaJumpMode": ("str", None),
    **{key: ("str", None) for key in ("initBiasToZero", "perChannelNormalization", "miniBatchStdDev")}}
_BOOLEANS = {"GDPP", "initBiasToZero", "perChannelNormalization", "miniBatchStdDev"}
_LISTS = ("maxIterAtScale", "iterAlphaJump", "alphaJumpVals", "alphaNJumps", "alphaSizeJumps", "depthScales")


def _zoo_bool(value: str, where: str) -> bool:
    """The zoo's str2bool (models/utils/config.py): yes/true/t/y/1 and no/false/f/n/0, any case; train.py stops on
    anything else."""
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise ConfigError(f"{where} {value!r}: expected a boolean as the zoo's train.py reads one (yes/true/t/y/1 or "
                      "no/false/f/n/0)")


def zoo_command_to_ganforge(words: list[str], where: str) -> dict[str, Any]:
    """pytorch_GAN_zoo's `python train.py PGAN -c CONFIG.json [-n NAME] [--KEY VALUE ...]` → a ganforge config: the
    JSON file (found from the current folder, as train.py finds it, or beside the script) with the command's config
    overrides, its loss window (`-e`) and checkpoint interval (`-s`, when train.py also saves its sample images),
    counted in ganforge's global steps where train.py's counter restarts at each scale (the same ticks when every
    scale's iterations are a multiple of the interval, as with the zoo's defaults). `-n`/`-d` (ganforge's
    --run-dir), `--restart` (ganforge's own --restart), `--no_vis`/`--np_vis` and `-S` have no counterpart."""
    if len(words) < 2 or not words[0].endswith("train.py") or words[1].startswith("-"):
        raise ConfigError(f"{where}: expected pytorch_GAN_zoo's `python train.py PGAN -c CONFIG.json ...`")
    if words[1] != "PGAN":
        raise ConfigError(f"{where}: the zoo's {words[1]!r} model: ganforge's pgan family trains its PGAN"
                          + (" (its DCGAN: `ganforge train dcgan`)" if words[1] == "DCGAN" else ""))
    flags, given = parse_reference_flags([_SHORT.get(word, word) for word in words[2:]],
                                         {**_TRAIN_OPTIONS, **_OVERRIDES, **{key: ("str", None) for key in _LISTS}},
                                         where, program="pytorch_GAN_zoo's train.py")
    lists = [key for key in _LISTS if key in given]
    if lists:
        raise ConfigError(f"{where}: --{lists[0]}: train.py turns a list option into a list of its characters; "
                          "write the list in the config file")
    if flags["config"] is None:
        raise ConfigError(f"{where}: train.py needs -c CONFIG.json (the zoo's dataset config)")
    if flags["partitionValue"] is not None:
        raise ConfigError(f"{where}: -v {flags['partitionValue']!r}: ganforge trains on the whole store and reads no "
                          "zoo partition files: prepare a store from the images that the zoo would select")
    config_path = Path(flags["config"])
    candidates = [config_path] if config_path.is_absolute() else [config_path, Path(where).parent / config_path]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise ConfigError(f"{where}: -c {flags['config']}: not found (looked for {' and '.join(map(str, candidates))})")
    data = read_config_file(found)
    overrides = {key: flags[key] for key in _OVERRIDES if key in given}
    for key in _BOOLEANS & set(overrides):
        overrides[key] = _zoo_bool(overrides[key], f"{where}: --{key}")
    translated = zoo_config_to_ganforge({**data, "config": {**(data.get("config") or {}), **overrides}})
    return {**translated, "log_every": flags["eval_iter"], "checkpoint_every": flags["save_iter"],
            "sample_every": flags["save_iter"]}
