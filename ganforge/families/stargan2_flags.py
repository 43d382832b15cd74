"""StarGAN v2's `python main.py --mode train ...` command → a ganforge `stargan2` config, so the official README's
training commands (saved in a script) run as they are: `ganforge train stargan2 -c train_celeba_hq.sh --data STORE`.

Flags about the official code's folders, workers and other modes are accepted and have no counterpart; what ganforge
cannot train as written is an error naming the flag. The training images come from `--data` (a store made by
`ganforge prepare domains`, whose validation store beside it is what `--val_img_dir` was), not from
`--train_img_dir`, an image folder.
"""

from __future__ import annotations

from typing import Any

from ganforge.config import ConfigError, parse_reference_flags

# main.py's flags: name → (kind, default)
_MAIN_FLAGS: dict[str, tuple[str, Any]] = {
    **{name: ("int", default) for name, default in (
        ("img_size", 256), ("num_domains", 2), ("latent_dim", 16), ("hidden_dim", 512), ("style_dim", 64),
        ("ds_iter", 100000), ("total_iters", 100000), ("resume_iter", 0), ("batch_size", 8), ("val_batch_size", 32),
        ("num_outs_per_domain", 10), ("num_workers", 4), ("seed", 777), ("print_every", 10), ("sample_every", 5000),
        ("save_every", 10000), ("eval_every", 50000))},
    **{name: ("float", default) for name, default in (
        ("lambda_reg", 1.0), ("lambda_cyc", 1.0), ("lambda_sty", 1.0), ("lambda_ds", 1.0), ("w_hpf", 1.0),
        ("randcrop_prob", 0.5), ("lr", 1e-4), ("f_lr", 1e-6), ("beta1", 0.0), ("beta2", 0.99),
        ("weight_decay", 1e-4))},
    **{name: ("str", default) for name, default in (
        ("mode", None), ("train_img_dir", "data/celeba_hq/train"), ("val_img_dir", "data/celeba_hq/val"),
        ("sample_dir", "expr/samples"), ("checkpoint_dir", "expr/checkpoints"), ("eval_dir", "expr/eval"),
        ("result_dir", "expr/results"), ("src_dir", "assets/representative/celeba_hq/src"),
        ("ref_dir", "assets/representative/celeba_hq/ref"), ("inp_dir", "assets/representative/custom/female"),
        ("out_dir", "assets/representative/celeba_hq/src/female"), ("wing_path", "expr/checkpoints/wing.ckpt"),
        ("lm_path", "expr/checkpoints/celeba_lm_mean.npz"))},
}
_OTHER_MODES = {"sample": "`ganforge translate RUN`", "eval": "`ganforge evaluate RUN`",
                "align": "`ganforge align-faces`"}
_MODEL_KEYS = ("latent_dim", "style_dim", "lambda_reg", "lambda_cyc", "lambda_sty", "lambda_ds", "ds_iter", "w_hpf",
               "randcrop_prob", "batch_size", "lr", "f_lr", "weight_decay")


def main_command_to_ganforge(argv: list[str], where: str) -> dict[str, Any]:
    """main.py's training command → a ganforge `stargan2` config (no `data`: see the module's docstring)."""
    if not argv or not argv[0].endswith("main.py"):
        raise ConfigError(f"{where}: expected StarGAN v2's `python main.py --mode train ...`, found "
                          f"{argv[0] if argv else 'no command'!r}")
    flags, given = parse_reference_flags(argv[1:], _MAIN_FLAGS, where, program="StarGAN v2's main.py")
    if flags["mode"] != "train":
        instead = _OTHER_MODES.get(flags["mode"])
        raise ConfigError(f"{where}: --mode {flags['mode']!r}: a config is a training command (--mode train)"
                          + (f"; for this mode use {instead}" if instead else ""))
    if flags["resume_iter"]:
        raise ConfigError(f"{where}: --resume_iter {flags['resume_iter']}: resume by training the same ganforge run "
                          "again; official checkpoints come in with `ganforge import stargan2 FILE`")
    if flags["hidden_dim"] != 512:
        raise ConfigError(f"{where}: --hidden_dim {flags['hidden_dim']}: the official code ignores it (its mapping "
                          "network is 512 wide); set model.mapping_dim in a ganforge config for another width")
    if flags["num_outs_per_domain"] != 10:
        raise ConfigError(f"{where}: --num_outs_per_domain {flags['num_outs_per_domain']}: ganforge's training-time "
                          "protocol translates each source 10 times, the official default (`evaluate_stargan2(RUN, "
                          "num_outs=N)` of ganforge.evaluation.stargan2 takes other counts)")
    if flags["val_batch_size"] != 32:
        raise ConfigError(f"{where}: --val_batch_size {flags['val_batch_size']}: ganforge's training-time protocol "
                          "evaluates in batches of 32, the official default (the batch sets which outputs LPIPS "
                          "averages together; `evaluate_stargan2(RUN, batch_size=N)` of ganforge.evaluation.stargan2 "
                          "takes other sizes)")
    if "wing_path" in given and not flags["w_hpf"]:
        raise ConfigError(f"{where}: --wing_path does nothing with --w_hpf 0 (no face masks)")
    model = {key: flags[key] for key in _MODEL_KEYS}
    model.update(resolution=flags["img_size"], num_domains=flags["num_domains"], steps=flags["total_iters"],
                 betas=[flags["beta1"], flags["beta2"]])
    if "wing_path" in given:
        model["wing_weights"] = flags["wing_path"]
    return {
        "family": "stargan2", "seed": flags["seed"], "log_every": flags["print_every"],
        "sample_every": flags["sample_every"], "checkpoint_every": flags["save_every"],
        "metrics": ["fid", "lpips"], "metrics_every": flags["eval_every"], "model": model,
    }
