"""BigGAN-PyTorch's flags → ganforge settings: the `config` a checkpoint's state_dict.pth holds (for the importer)
and the `train.py` command of a launch script (`ganforge train biggan -c scripts/launch_BigGAN_deep.sh`).

Flags ganforge cannot honour are errors naming the flag. Flags about the official code's own machinery have no
counterpart and are accepted: workers, pinned memory, loading into memory, DataParallel (whose per-GPU batch norm
a warning explains: torchrun with one process per GPU normalises as it did), the folders and names of
its outputs, progress bars and log styles, its spectra logging (ganforge logs σ at every log point), `--toggle_grads`
(always on), `--z_var` (train.py never passes it on; sample.py does), `--load_weights` (read only with `--resume`,
which is refused) and `--use_multiepoch_sampler`. That sampler makes train.py run num_epochs² epochs (its epoch loop
re-reads a sampler that already spans num_epochs epochs, BigGAN-PyTorch issue #44), so those runs go on until
stopped by hand; a translated script trains the num_epochs it names (`model.epochs`, train.py's default 100 where it
names none), and says so.
"""
from __future__ import annotations

import warnings
from typing import Any

from ganforge.config import ConfigError, parse_reference_flags
from ganforge.models.biggan import BigGANArch, discriminator_stages, generator_stages
from ganforge.nn.spectral_norm import SNSettings

_RESOLUTION_BY_DATASET = {"I32": 32, "I64": 64, "I128": 128, "I256": 256, "C10": 32, "C100": 32}
_CLASSES_BY_DATASET = {"I32": 1000, "I64": 1000, "I128": 1000, "I256": 1000, "C10": 10, "C100": 100}
_INIT_NAMES = {"ortho": "ortho", "N02": "N02", "xavier": "xavier", "glorot": "xavier"}


class BigGANFlagsError(ConfigError):
    """BigGAN-PyTorch flags that describe networks or a recipe ganforge does not build."""


def _flag(flags: dict[str, Any], key: str, where: str) -> Any:
    if key not in flags:
        raise BigGANFlagsError(f"{where}: config has no '{key}'")
    return flags[key]


def _attention(spec: Any, stage_resolutions: tuple[int, ...], key: str, where: str) -> tuple[int, ...]:
    """'64' / '32_64' / '0' → the stage resolutions that really got attention (others are ignored officially)."""
    try:
        wanted = {int(item) for item in str(spec).split("_")}
    except ValueError as error:
        raise BigGANFlagsError(f"{where}: config '{key}' = {spec!r} is not like '64' or '32_64'") from error
    return tuple(sorted(res for res in set(stage_resolutions) if res in wanted))


def config_from_official(flags: dict[str, Any], *, where: str = "BigGAN-PyTorch config") -> BigGANArch:
    """Translate BigGAN-PyTorch flags (the ``config`` in state_dict.pth) into a :class:`BigGANArch`."""
    model = flags.get("model", "BigGAN")
    if model not in ("BigGAN", "BigGANdeep"):
        raise BigGANFlagsError(f"{where}: config 'model' = {model!r}; expected 'BigGAN' or 'BigGANdeep'")
    deep = model == "BigGANdeep"
    for key, allowed in (("norm_style", {"bn"}), ("mybn", {False}), ("cross_replica", {False}),
                         ("G_nl", {"relu", "inplace_relu", "ir"}), ("D_nl", {"relu", "inplace_relu", "ir"})):
        if key in flags and flags[key] not in allowed:
            raise BigGANFlagsError(f"{where}: config '{key}' = {flags[key]!r}; ganforge supports {sorted(allowed)}")
    dataset = str(flags.get("dataset", "")).removesuffix("_hdf5")
    resolution = flags.get("resolution", _RESOLUTION_BY_DATASET.get(dataset))
    n_classes = flags.get("n_classes", _CLASSES_BY_DATASET.get(dataset))
    if resolution is None or n_classes is None:
        raise BigGANFlagsError(f"{where}: config has no 'resolution'/'n_classes' and dataset {dataset!r} is unknown")
    inits = {}
    for key in ("G_init", "D_init"):
        value = _flag(flags, key, where)
        if value not in _INIT_NAMES:
            raise BigGANFlagsError(f"{where}: config '{key}' = {value!r}; expected one of {sorted(_INIT_NAMES)}")
        inits[key] = _INIT_NAMES[value]
    g_ch, d_ch = int(_flag(flags, "G_ch", where)), int(_flag(flags, "D_ch", where))
    try:
        return BigGANArch(
            resolution=int(resolution),
            n_classes=int(n_classes),
            g_ch=g_ch,
            d_ch=d_ch,
            dim_z=int(_flag(flags, "dim_z", where)),
            g_shared=bool(_flag(flags, "G_shared", where)),
            shared_dim=int(flags.get("shared_dim", 0)),
            hier=bool(flags.get("hier", False)),
            g_attention=_attention(flags.get("G_attn", "64"), generator_stages(int(resolution), g_ch).resolution,
                                   "G_attn", where),
            d_attention=_attention(flags.get("D_attn", "64"),
                                   discriminator_stages(int(resolution), d_ch, deep=deep).resolution, "D_attn", where),
            g_init=inits["G_init"],
            d_init=inits["D_init"],
            g_spectral_norm=flags.get("G_param", "SN") == "SN",
            d_spectral_norm=flags.get("D_param", "SN") == "SN",
            g_sn=SNSettings(int(flags.get("num_G_SVs", 1)), int(flags.get("num_G_SV_itrs", 1)),
                            float(flags.get("SN_eps", 1e-8))),
            d_sn=SNSettings(int(flags.get("num_D_SVs", 1)), int(flags.get("num_D_SV_itrs", 1)),
                            float(flags.get("SN_eps", 1e-8))),
            bn_eps=float(flags.get("BN_eps", 1e-5)),
            d_wide=deep or bool(flags.get("D_wide", True)),  # BigGANdeep.py ignores --D_thin
            deep=deep,
            g_depth=int(flags.get("G_depth", 1)) if deep else 2,  # 1: BigGAN-PyTorch's parser default
            d_depth=int(flags.get("D_depth", 1)) if deep else 2,
        )
    except ValueError as error:
        raise BigGANFlagsError(f"{where}: config does not describe a valid BigGAN: {error}") from error


def _g_batch_size(flags: dict[str, Any]) -> int | None:
    """G's batch: train.py draws max(G_batch_size, batch_size) latents for G's step; None where that is the batch."""
    batch, g_batch = int(flags.get("batch_size", 64)), int(flags.get("G_batch_size", 0))
    return g_batch if g_batch > batch else None


def train_settings_from_official(flags: dict[str, Any], *, where: str = "BigGAN-PyTorch config") -> dict[str, Any]:
    """The `model:` section of a ganforge `biggan` run with the official run's architecture and recipe.

    Official runs may give G and D their own SN iterations or Adam betas; ganforge's recipe shares them, so
    differing values are refused rather than silently unified.
    """
    arch = config_from_official(flags, where=where)
    if arch.g_sn != arch.d_sn:
        raise BigGANFlagsError(f"{where}: G and D spectral-norm settings differ ({arch.g_sn} vs {arch.d_sn}); "
                               "ganforge's biggan family uses one setting for both")
    betas = [float(flags.get("G_B1", 0.0)), float(flags.get("G_B2", 0.999))]
    if betas != [float(flags.get("D_B1", 0.0)), float(flags.get("D_B2", 0.999))]:
        raise BigGANFlagsError(f"{where}: G and D Adam betas differ; ganforge's biggan family uses one pair")
    if not (arch.g_spectral_norm and arch.d_spectral_norm):
        raise BigGANFlagsError(f"{where}: G_param/D_param other than 'SN' are not trainable in ganforge's family")
    return {
        "resolution": arch.resolution, "g_ch": arch.g_ch, "d_ch": arch.d_ch, "latent_dim": arch.dim_z,
        "g_shared": arch.g_shared, "shared_dim": arch.shared_dim, "hier": arch.hier,
        "g_attention": list(arch.g_attention), "d_attention": list(arch.d_attention),
        "g_init": arch.g_init, "d_init": arch.d_init, "num_svs": arch.g_sn.num_svs, "num_sv_itrs": arch.g_sn.num_itrs,
        "sn_eps": arch.g_sn.eps, "bn_eps": arch.bn_eps, "batch_size": int(flags.get("batch_size", 64)),
        **({"deep": True, "g_depth": arch.g_depth, "d_depth": arch.d_depth} if arch.deep else {}),
        **({} if arch.d_wide else {"d_wide": False}),
        "g_batch_size": _g_batch_size(flags), "num_d_steps": int(flags.get("num_D_steps", 2)),
        "num_d_accumulations": int(flags.get("num_D_accumulations", 1)),
        "num_g_accumulations": int(flags.get("num_G_accumulations", 1)), "g_lr": float(flags.get("G_lr", 5e-5)),
        "d_lr": float(flags.get("D_lr", 2e-4)), "betas": betas, "adam_eps": float(flags.get("adam_eps", 1e-8)),
        "g_ortho": float(flags.get("G_ortho", 0.0)), "d_ortho": float(flags.get("D_ortho", 0.0)),
        "ema": bool(flags.get("ema", False)), "sample_eval_mode": bool(flags.get("G_eval_mode", False)),
        # without --ema the official run's ema_decay/ema_start did nothing: ganforge refuses them with ema off
        **({"ema_decay": float(flags.get("ema_decay", 0.9999)), "ema_start": int(flags.get("ema_start", 0))}
           if flags.get("ema", False) else {}),
    }


# train.py's flags (utils.prepare_parser): name → (kind, default); kind "on"/"off" is a switch that sets True/False
_TRAIN_FLAGS: dict[str, tuple[str, Any]] = {
    **{name: ("str", default) for name, default in (
        ("dataset", "I128_hdf5"), ("model", "BigGAN"), ("G_param", "SN"), ("D_param", "SN"), ("G_nl", "relu"),
        ("D_nl", "relu"), ("G_attn", "64"), ("D_attn", "64"), ("norm_style", "bn"), ("G_init", "ortho"),
        ("D_init", "ortho"), ("which_best", "IS"), ("base_root", ""), ("data_root", "data"),
        ("weights_root", "weights"), ("logs_root", "logs"), ("samples_root", "samples"), ("pbar", "mine"),
        ("name_suffix", ""), ("experiment_name", ""), ("which_train_fn", "GAN"), ("load_weights", ""),
        ("logstyle", "%3.3e"))},
    **{name: ("int", default) for name, default in (
        ("num_workers", 8), ("G_ch", 64), ("D_ch", 64), ("G_depth", 1), ("D_depth", 1), ("shared_dim", 0),
        ("dim_z", 128), ("seed", 0), ("batch_size", 64), ("G_batch_size", 0), ("num_G_accumulations", 1),
        ("num_D_steps", 2), ("num_D_accumulations", 1), ("num_epochs", 100), ("num_standing_accumulations", 16),
        ("save_every", 2000), ("num_save_copies", 2), ("num_best_copies", 2), ("test_every", 5000),
        ("num_inception_images", 50000), ("ema_start", 0), ("num_G_SVs", 1), ("num_D_SVs", 1),
        ("num_G_SV_itrs", 1), ("num_D_SV_itrs", 1), ("sv_log_interval", 10))},
    **{name: ("float", default) for name, default in (
        ("z_var", 1.0), ("G_lr", 5e-5), ("D_lr", 2e-4), ("G_B1", 0.0), ("D_B1", 0.0), ("G_B2", 0.999),
        ("D_B2", 0.999), ("ema_decay", 0.9999), ("adam_eps", 1e-8), ("BN_eps", 1e-5), ("SN_eps", 1e-8),
        ("G_ortho", 0.0), ("D_ortho", 0.0))},
    **{name: ("on", False) for name in (
        "augment", "shuffle", "load_in_mem", "use_multiepoch_sampler", "G_shared", "hier", "cross_replica", "mybn",
        "skip_init", "split_D", "parallel", "G_fp16", "D_fp16", "D_mixed_precision", "G_mixed_precision",
        "accumulate_stats", "G_eval_mode", "no_fid", "hashname", "config_from_name", "ema", "use_ema", "resume",
        "log_G_spectra", "log_D_spectra")},
    "toggle_grads": ("on", True),  # a switch that is on already: giving it changes nothing
    "no_pin_memory": ("off", True),
    "D_thin": ("off", True),
}
_DESTINATIONS = {"no_pin_memory": "pin_memory", "D_thin": "D_wide"}  # argparse `dest`s
# flags ganforge trains at one value only: name → (that value, what to do instead)
_ONLY = {
    "skip_init": (False, "ganforge always initialises its networks as --G_init/--D_init say"),
    "split_D": (False, "ganforge scores fakes and reals in one D forward, as train.py without --split_D does"),
    **{name: (False, "set `amp: bf16` (autocast) instead; ganforge keeps float32 weights")
       for name in ("G_fp16", "D_fp16", "G_mixed_precision", "D_mixed_precision")},
    "resume": (False, "resume by training the same ganforge run again; an official run's weights come in with "
                      "`ganforge import biggan-pytorch WEIGHTS_DIR`"),
    "which_train_fn": ("GAN", "ganforge trains the GAN objective ('GAN') only"),
}
_BEST = {"IS": "is_mean", "FID": "fid"}


def parse_train_flags(argv: list[str], where: str) -> tuple[dict[str, Any], set[str]]:
    """train.py's arguments → (every flag's value, its defaults filled in as argparse would, the names given)."""
    return parse_reference_flags(argv, _TRAIN_FLAGS, where, program="BigGAN-PyTorch's train.py",
                                 destinations=_DESTINATIONS, error=BigGANFlagsError)


def launch_command_to_ganforge(argv: list[str], where: str) -> dict[str, Any]:
    """A launch script's `train.py ...` command → a ganforge `biggan` config (no `data`: the official `--dataset`
    names BigGAN-PyTorch's own files, so the store comes from `--data`; its resolution and class count are kept
    as `model.resolution`/`model.n_classes`, which the store must match)."""
    if not argv or not argv[0].endswith("train.py"):
        raise BigGANFlagsError(f"{where}: expected BigGAN-PyTorch's `python train.py ...`, found "
                               f"{argv[0] if argv else 'no command'!r}")
    flags, given = parse_train_flags(argv[1:], where)
    for name, (value, reason) in _ONLY.items():
        if flags[name] != value:
            raise BigGANFlagsError(f"{where}: --{name} {flags[name]!r}: {reason}")
    hdf5 = flags["dataset"].endswith("_hdf5")
    if flags["augment"] and not hdf5:  # train.py's HDF5 sets take no transforms
        raise BigGANFlagsError(f"{where}: --augment: ganforge's biggan family has no random crops; leave it out")
    if not flags["shuffle"] and not flags["use_multiepoch_sampler"]:  # the sampler draws its own permutations
        raise BigGANFlagsError(f"{where}: no --shuffle: train.py would read the data in file order, class by class, "
                               "where ganforge always shuffles (a seeded permutation per epoch): add --shuffle")
    if flags["num_best_copies"] < 1:
        raise BigGANFlagsError(f"{where}: --num_best_copies {flags['num_best_copies']}: train.py divides by it when "
                               "it saves a best copy; keep at least 1")
    if flags["no_fid"] and flags["which_best"] == "FID":
        raise BigGANFlagsError(f"{where}: --which_best FID with --no_fid: no FID is computed to rank by")
    if flags["which_best"] not in _BEST:
        raise BigGANFlagsError(f"{where}: --which_best {flags['which_best']!r}: expected IS or FID")
    dataset = flags["dataset"].removesuffix("_hdf5")
    if dataset not in _RESOLUTION_BY_DATASET or (hdf5 and not dataset.startswith("I")):
        raise BigGANFlagsError(f"{where}: --dataset {flags['dataset']!r}: expected one of train.py's "
                               f"{', '.join(_RESOLUTION_BY_DATASET)} (the ImageNet ones also as _hdf5)")
    for name, needs in (("use_ema", "ema"), ("ema_decay", "ema"), ("ema_start", "ema"),
                        ("num_standing_accumulations", "accumulate_stats")):
        if name in given and not flags[needs]:
            raise BigGANFlagsError(f"{where}: --{name} does nothing without --{needs}")
    if flags["ema"] and not flags["use_ema"]:
        raise BigGANFlagsError(f"{where}: --ema without --use_ema keeps an EMA generator that train.py never samples "
                               "or evaluates; ganforge samples and evaluates the EMA generator whenever it keeps one: "
                               "add --use_ema (every EMA launch script has it) or drop --ema")
    if flags["use_multiepoch_sampler"]:
        warnings.warn(f"{where}: with --use_multiepoch_sampler train.py runs {flags['num_epochs']}² epochs (its epoch "
                      f"loop re-reads a sampler of {flags['num_epochs']} epochs, BigGAN-PyTorch issue #44), i.e. until "
                      f"stopped; this run trains {flags['num_epochs']} epochs (model.epochs; the official README's "
                      "ImageNet models trained about 150k iterations: --set model.epochs=N or model.steps=N with "
                      "model.epochs=null)", stacklevel=2)
    if flags["parallel"] and not flags["cross_replica"]:
        warnings.warn(f"{where}: --parallel without --cross_replica: train.py's DataParallel normalises G's batch norm "
                      "over each GPU's share of the batch (and keeps the first GPU's running statistics); one "
                      "process here normalises the whole batch. To normalise as the official run did, train under "
                      "torchrun with one process per GPU it had (sync_bn stays off), or in one process with --set "
                      "model.bn_groups=N for its N GPUs", stacklevel=2)
    model = train_settings_from_official({**flags, "cross_replica": False}, where=where)
    model.update(n_classes=_CLASSES_BY_DATASET[dataset], epochs=flags["num_epochs"],
                 standing_stats=flags["num_standing_accumulations"] if flags["accumulate_stats"] else 0,
                 sync_bn=flags["cross_replica"])
    if flags["accumulate_stats"]:  # utils.accumulate_standing_stats leaves G in eval mode, whatever --G_eval_mode says
        model["sample_eval_mode"] = True
    return {
        "family": "biggan", "seed": flags["seed"], "metrics": ["is"] if flags["no_fid"] else ["is", "fid"],
        "metrics_every": flags["test_every"], "metrics_n": flags["num_inception_images"],
        "best_metric": _BEST[flags["which_best"]], "keep_best": flags["num_best_copies"],
        "checkpoint_every": flags["save_every"], "sample_every": flags["save_every"],
        # train.py always writes the latest weights and keeps num_save_copies rotating copies of them
        "keep_checkpoints": max(1, flags["num_save_copies"]), "model": model,
    }
