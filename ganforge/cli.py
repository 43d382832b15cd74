"""`ganforge prepare | train | generate | translate | inspire | export | info | import | evaluate | stats |
align-faces | report` — one command line for every family.

This module only parses options and dispatches: each command has one section below, in the order above, and hands
its work to the layer that does it (data preparation, training, viz for samples and sheets, api for network
descriptions, the interop importers, evaluation, reports)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import traceback
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ganforge.version import __version__

DEFAULT_RUNS = Path("runs")
BN_HELP = ("a batch-norm generator's statistics for these samples instead of the run's: running (eval mode), batch "
           "(each batch's own, train mode) or standing:N (re-estimated over N fresh batches, BigGAN; "
           "BigGAN-PyTorch's sample.py --G_eval_mode / --accumulate_stats --num_standing_accumulations N)")
METRICS_DEVICE_HELP = ("auto (default), cpu, cuda, cuda:N or mps: where a run's generator runs; the metric networks "
                       "run on that CUDA GPU, else on the CPU (MPS lacks the float64 they sum in)")


class OneLineErrorParser(argparse.ArgumentParser):
    """A usage error is one line naming the option and what was expected, as every other error of the command line,
    instead of the whole usage synopsis first (twenty lines for `evaluate`); --help has the synopsis."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path,
                        help="JSON or YAML config (ours, or pytorch_GAN_zoo's for pgan), or a shell script (.sh) "
                        "with the reference's training command: pytorch_GAN_zoo's train.py for pgan, "
                        "BigGAN-PyTorch's train.py for biggan, StarGAN v2's main.py for stargan2")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.lr=0.002 (repeatable)")
    parser.add_argument("--data", help="dataset: a store made by `ganforge prepare`, or builtin:shapes[?...]")


def _config_from_args(family: str | None, args: argparse.Namespace, base: dict[str, Any] | None = None, *,
                      reads_data: bool = True, saved: Path | None = None):
    """The config the command's options ask for: -c FILE, else `base` (a run's own config, read from `saved`),
    with --set and the options that set keys on top."""
    from ganforge.config import ConfigError, parse_overrides, read_config_file
    from ganforge.families import resolve_run_config

    data = dict(base or {})
    if args.config is not None:
        data = read_config_file(args.config)
    overrides = parse_overrides(args.overrides)
    if getattr(args, "wing_weights", None) and family not in (None, "stargan2"):
        raise ConfigError(f"--wing-weights: for stargan2 runs (the face-mask network of w_hpf > 0), not {family}")
    given = overrides + _flag_overrides(args, overrides)
    try:
        return resolve_run_config(family, data, given, reads_data=reads_data)
    except ConfigError as err:
        # the saved config holds every default as written (betas beside an Adam): a saved value that an override
        # makes meaningless is the user's to drop, where dropping it is what resolves the config
        key = str(err).split(":", 1)[0]
        if base is None or args.config is not None or saved is None or not overrides or any(
                ".".join(path) == key for path, _ in given):
            raise
        try:
            resolve_run_config(family, data, [*given, (key.split("."), None)], reads_data=reads_data)
        except ConfigError:
            raise err from None
        raise ConfigError(f"{err} ({saved} holds the run's config: --set {key}=null drops the saved value)"
                          ) from None


# the options that set a config key, and the key each sets
CONFIG_FLAGS = {"data": ("--data", "data"), "on_nan": ("--on-nan", "on_nan"), "init_from": ("--init-from", "init_from"),
                "inception_weights": ("--inception-weights", "inception_weights"),
                "dinov2_weights": ("--dinov2-weights", "dinov2_weights"),
                "wing_weights": ("--wing-weights", "model.wing_weights")}


def _flag_overrides(args: argparse.Namespace, overrides: list[tuple[list[str], Any]]) -> list[tuple[list[str], Any]]:
    """The config values the command's options give; an option and a --set of the same key is an error (one of
    them would be dropped without a word)."""
    from ganforge.config import ConfigError

    given = {".".join(path) for path, _ in overrides}
    flagged = []
    for attribute, (option, key) in CONFIG_FLAGS.items():
        value = getattr(args, attribute, None)
        if value:
            if key in given:
                raise ConfigError(f"{option} and --set {key}=... both set {key}: give one of them")
            flagged.append((key.split("."), str(value)))
    return flagged


# --- prepare --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """SIGTERM (a scheduler's cancel, `timeout`) unwinds as Ctrl-C does, so that a `prepare` it stops removes its
    temporary store (gigabytes for a large dataset) instead of leaving it beside the output; the exit status is
    the shells' 128 + 15."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def interrupt(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked decoding worker, which the pool ends with SIGTERM: it must just die
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        print("ganforge: terminated", file=sys.stderr)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)  # None: set outside Python


def cmd_prepare(args: argparse.Namespace) -> int:
    with _terminate_unwinds():
        return _prepare(args)


def _prepare(args: argparse.Namespace) -> int:
    from ganforge.data import prepare

    if args.source_kind == "celeba_cropped":
        out = prepare.prepare_celeba_cropped(args.src, args.out, workers=args.workers, overwrite=args.overwrite)
    elif args.source_kind == "folder":
        out = prepare.prepare_folder(args.src, args.out, resolution=args.resolution, workers=args.workers,
                                     overwrite=args.overwrite, resize=args.resize, channels=args.channels)
    elif args.source_kind in ("cifar10", "hdf5"):
        out = _prepare_classes(args)
    else:
        src = args.src
        if args.download:
            src = prepare.download_mnist(args.src)
        out = prepare.prepare_mnist(src, args.out, resolution=args.resolution, split=args.split,
                                    overwrite=args.overwrite)
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    skipped = len(manifest.get("skipped", []))
    print(f"wrote {out}: {manifest['count']} images at {manifest['resolution']}x{manifest['resolution']}, "
          f"levels {manifest['levels']}" + (f", {skipped} files skipped (see manifest.json)" if skipped else ""))
    return 0


def _prepare_classes(args: argparse.Namespace) -> Path:
    """`prepare cifar10` (official binary release, optionally downloaded) and `prepare hdf5` (BigGAN-PyTorch)."""
    from ganforge.data import prepare_labelled

    if args.source_kind == "cifar10":
        src = prepare_labelled.download_cifar10(args.src) if args.download else args.src
        return prepare_labelled.prepare_cifar10(src, args.out, split=args.split, overwrite=args.overwrite)
    names = None
    if args.class_names is not None:
        names = [line.strip() for line in args.class_names.read_text().splitlines() if line.strip()]
    return prepare_labelled.prepare_hdf5(args.src, args.out, images_key=args.images_key, labels_key=args.labels_key,
                                class_names=names, float_range=args.float_range, overwrite=args.overwrite)


def device_name(text: str) -> str:
    """A device as pick_device reads it, checked before any work (a download, a run's loading), for argparse."""
    if text in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def bn_mode(text: str) -> str:
    """A `--bn` mode (running, batch, standing:N), checked before any work, for argparse."""
    from ganforge.errors import ConfigError
    from ganforge.families.base import SamplingBN

    try:
        return str(SamplingBN.parse(text))
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _int_at_least(least: int, expected: str) -> typing.Callable[[str], int]:
    """An argparse type: a whole number of at least `least`, else an error saying what was `expected`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")  # a count or size
non_negative_int = _int_at_least(0, "a whole number of 0 or more")
frame_count = _int_at_least(2, "at least 2 frames (both ends)")


def _float_pair(text: str) -> tuple[float, float]:
    """"LOW,HIGH" → (LOW, HIGH), for argparse."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0,1), got {text!r}") from None
    return low, high


def _weighted_names(text: str) -> list[tuple[str, float]]:
    """"NAME[=WEIGHT],..." → [(NAME, WEIGHT)] (weight 1 where none is given), for argparse."""
    terms = []
    for item in text.split(","):
        name, equals, weight = item.strip().partition("=")
        try:
            terms.append((name.strip(), float(weight) if equals else 1.0))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME[=WEIGHT],... (e.g. pixels,vgg19=0.5), got {text!r}"
                                             ) from None
    return terms


def cmd_prepare_domains(args: argparse.Namespace) -> int:
    """`prepare celeba-domains` / `prepare domains`: train and val stores with a "domain" label column."""
    from ganforge.data import domains

    with _terminate_unwinds():
        if args.source_kind == "celeba-domains":
            stores = domains.prepare_celeba_domains(args.src, args.out, attr_file=args.attr_file, attr=args.attr,
                                                    resolution=args.resolution, val_fraction=args.val_fraction,
                                                    limit=args.limit, overwrite=args.overwrite)
        else:
            stores = domains.prepare_domain_folders(args.src, args.out, resolution=args.resolution,
                                                    overwrite=args.overwrite)
    for split, counts in stores.counts.items():
        print(f"wrote {args.out / split}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    print(f"train with --data {stores.train}" + (f"; evaluation uses {stores.val}" if stores.val else ""))
    return 0


def _raised_in_a_collective(err: BaseException) -> bool:
    """A RuntimeError from inside torch.distributed under torchrun: gloo says a dead peer so ("Connection closed by
    peer"), not with the DistError NCCL's and the store's failures raise."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or not isinstance(err, RuntimeError):
        return False
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and f"torch{os.sep}distributed{os.sep}" in frames[-1].filename


# --- train ----------------------------------------------------------------------------------------------------

def _print_final_swd(run_dir: Path, step: int, n: int) -> None:
    """`train --final-swd N`: the SWD of the run's newest checkpoint beside the real-vs-real floor (swd_floor.json);
    a PGAN stopped below SWD's smallest level is said so."""
    from ganforge.evaluation.run_metrics import evaluate_run, run_swd_floor, swd_versus_floor
    from ganforge.metrics._images import ImageSizeError

    try:
        results = evaluate_run(run_dir, ["swd"], n=n)
    except ImageSizeError as err:
        print(f"--final-swd: not computed at step {step}: {err}")
        return
    print(results["table"])
    swd = results["results"][-1][1]["swd"]
    floor = run_swd_floor(run_dir, swd["resolutions"][0], n)
    print(swd_versus_floor(swd, floor))
    print(f"  floor: the same real images against {floor['second_set']}"
          + (f" (cached in {floor['cache']})" if floor["cache"] else ""))


def cmd_train(args: argparse.Namespace) -> int:
    from ganforge.api import train
    from ganforge.config import read_config_file
    from ganforge.families import migrated_saved_config

    run_dir = args.run or DEFAULT_RUNS / args.family
    saved = run_dir / "config.json"
    base = None
    if saved.is_file() and args.config is None:
        # resume or --restart: the run's own config unless the user gives one
        base = migrated_saved_config(read_config_file(saved))
    config = _config_from_args(args.family, args, base, saved=saved)
    if args.final_swd and (size := getattr(config.model, "resolution", None)) is not None:
        from ganforge.metrics._images import ImageSizeError
        from ganforge.metrics.swd import pyramid_resolutions

        try:  # before training: the run would end without the SWD asked for
            pyramid_resolutions(size)
        except ImageSizeError as err:
            raise ImageSizeError(f"--final-swd: {err} (this run's images are {size} px)") from None
    result = train(config, run_dir, restart=args.restart, until=args.until)
    if result.main_process:  # torchrun: one line, one final metric and one report, from rank 0
        print(result.summary())
    if result.stop == "signal":  # after its checkpoint. Ctrl-C: 128 + SIGINT as shells do; SIGTERM (a scheduler's
        # pre-emption, which the run survives by resuming) is a clean stop
        return 0 if result.signal_number == signal.SIGTERM else 128 + (result.signal_number or signal.SIGINT)
    if not result.main_process:
        return 0
    ended = ("finished", "already finished", "until", "early")  # a finished run asked again gets it too
    if result.stop in ended and args.final_swd:
        _print_final_swd(run_dir, result.step, args.final_swd)
    from ganforge.viz.report import write_report, written_by_ganforge

    if (result.stop in ("finished", "until", "early") or (result.stop == "already finished" and args.final_swd)) \
            and written_by_ganforge(run_dir / "report.html"):  # not a page of the user's that the run left alone

        # written at the end of training already; again so that it holds the final SWD just computed
        print(f"report: {write_report([run_dir]) if args.final_swd else run_dir / 'report.html'} "
              "(open it in a browser)")
    return 0


# --- generate -------------------------------------------------------------------------------------------------

def cmd_generate(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ganforge.api import load
    from ganforge.viz.generate import GenerateRequest, write_generated

    model = load(args.run, step=args.step, device=args.device, bn=args.bn)
    request = GenerateRequest(**{option.name: getattr(args, option.name) for option in fields(GenerateRequest)})
    generated = write_generated(model, request)
    if generated.table:
        print(generated.table)
    where = args.out if request.writes_to_out() else args.npz
    print(f"wrote {len(generated.files)} file(s) to {where} from step {model.step} of {args.run}")
    return 0


# --- inspire --------------------------------------------------------------------------------------------------

def cmd_inspire(args: argparse.Namespace) -> int:
    from ganforge.api import load
    from ganforge.viz.inspire import write_inspirations

    model = load(args.run, step=args.step, device=args.device)
    written = write_inspirations(model, args.pictures, args.out, runs=args.runs, steps=args.steps, lr=args.lr,
                                 realism=args.realism, seed=args.seed, features=args.features,
                                 vgg_weights=None if args.vgg_weights is None else str(args.vgg_weights),
                                 feature_size=args.feature_size, overwrite=args.overwrite)
    print(f"wrote {len(written)} file(s) to {args.out} from step {model.step} of {args.run}")
    return 0


# --- export ---------------------------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from ganforge.api import load
    from ganforge.interop.onnx_export import ONNX_EXTRA, export_onnx

    model = load(args.run, step=args.step, device="cpu")  # the graph is traced on the CPU; it runs anywhere
    exported = export_onnx(model, args.out, opset=args.opset, guide=args.guide, wing_weights=args.wing_weights,
                           overwrite=args.overwrite)
    check = (f"onnxruntime matches PyTorch to {exported.max_difference:.1e}" if exported.max_difference is not None
             else f"not checked: onnxruntime is not installed ({ONNX_EXTRA})")
    print(f"wrote {exported.path} and {exported.description} from step {model.step} of {args.run}; {check}")
    return 0


# --- translate ------------------------------------------------------------------------------------------------

def cmd_translate(args: argparse.Namespace) -> int:
    from ganforge.config import ConfigError
    from ganforge.viz.translate import default_video_name, translate, translate_each

    say = lambda line: print(line, flush=True)  # noqa: E731 - a line per file as it is written
    if args.each:
        if args.video:
            raise ConfigError("--video: the reference video is written with the grids, not with --each")
        translate_each(args.run, args.src, args.out, to=args.to, ref=args.ref, psi=args.psi, seed=args.seed,
                       step=args.step, device=args.device, wing_weights=args.wing_weights, progress=say,
                       overwrite=args.overwrite)
        return 0
    given = [option for option, value in (("--to", args.to), ("--psi", args.psi != 1.0)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)}: for --each (one file per translated image); the grids show every "
                          "domain at psi 0.5, 0.7 and 1")
    if args.ref is None:
        raise ConfigError("--ref: the grids need reference images in sub-folders named by domain (or give --each "
                          "for one latent-guided file per source and domain)")
    video = (default_video_name() if args.video == "auto" else args.video) if args.video else None
    translate(args.run, args.src, args.ref, args.out, step=args.step, seed=args.seed, video=video,
              device=args.device, wing_weights=args.wing_weights, progress=say, overwrite=args.overwrite)
    return 0


def cmd_align_faces(args: argparse.Namespace) -> int:
    from ganforge.viz.align_faces import align_faces

    written = align_faces(args.inputs, args.out, size=args.size, wing_weights=args.wing_weights,
                          landmark_mean=args.landmark_mean, device=args.device)
    print(f"aligned {len(written)} faces into {args.out}")
    return 0


# --- info -----------------------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    from ganforge.api import describe

    config = _config_from_args(args.family, args, reads_data=False)
    report = describe(config)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"family {report['family']}")
        for name, count in report["parameters"].items():
            print(f"  {name:8s} {count:>14,d} parameters")
        for key, value in report.items():
            if key not in ("family", "parameters", "notes"):
                print(f"  {key}: {value}")
        for note in report.get("notes", []):
            print(f"  note: {note}")
    return 0


# --- import ---------------------------------------------------------------------------------------------------

def cmd_import(args: argparse.Namespace) -> int:
    from ganforge.config import parse_overrides
    from ganforge.interop import IMPORTERS

    overrides = parse_overrides(args.overrides)
    if args.domain_column:
        overrides.append((["model", "domain_column"], args.domain_column))
    if args.wing_weights:
        overrides.append((["model", "wing_weights"], str(args.wing_weights)))
    run = IMPORTERS[args.source](args.files, args.out, data=args.data, overrides=overrides)
    print(f"imported {', '.join(map(str, args.files))} into {run}")
    return 0


# --- evaluate -------------------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from ganforge.config import ConfigError
    from ganforge.evaluation.run_metrics import evaluate_folders, evaluate_saved_run
    from ganforge.metrics.fid_stats import stats_network
    from ganforge.metrics.registry import METRICS_SERVED, MetricSettings

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics is not None else None
    if metrics == []:
        raise ConfigError(f"--metrics {args.metrics!r}: no metric named; give comma-separated names, e.g. swd,fid")
    if args.fake is not None and (run_only := [option for option, given in (
            (f"RUN {args.run}", args.run is not None), ("--all", args.all), ("--ppl", args.ppl is not None),
            ("--per-class", args.per_class), ("--class-column", args.class_column is not None),
            ("--fid-network", args.fid_network is not None), ("--alexnet-weights", args.alexnet_weights is not None),
            ("--wing-weights", args.wing_weights is not None), ("--val", args.val is not None)) if given]):
        raise ConfigError(f"{run_only[0]}: for `evaluate RUN`, not with --fake (which compares --fake's images "
                          "with --real or --real-stats); give one of the two")
    settings = MetricSettings(**{key: value for key in ("kid_subsets", "kid_subset_size", "pr_k")
                                 if (value := getattr(args, key)) is not None})
    if args.resolution is not None and args.fake is None:
        raise ConfigError("--resolution brings the images of --fake DIR (and --real) to one size; a run's images "
                          "already have its size")
    if args.net is not None and args.fake is None:
        raise ConfigError(f"--net {args.net}: with --fake RUN (its values are not the run's own curve, which "
                          "`evaluate RUN` records from the EMA generator)")
    if args.all and args.step is not None:
        raise ConfigError(f"--all evaluates every checkpoint, --step {args.step} one of them: give one of the two")
    if args.ppl_crop == "off" and args.ppl is None:
        raise ConfigError("--ppl-crop off: for --ppl (the path length's image crop)")
    if args.ppl is not None and args.run is None:
        raise ConfigError("--ppl measures a RUN's generator (not --fake/--real images)")
    if (args.per_class or args.class_column is not None) and args.run is None:
        raise ConfigError("--per-class evaluates a RUN's conditional generator class by class (not --fake/--real)")
    if args.fake is not None:
        # with statistics only their network's Fréchet distance can be computed: it is the default then
        default = ["swd"] if args.real_stats is None else METRICS_SERVED[stats_network(args.real_stats)]
        table = evaluate_folders(args.fake, args.real, metrics or default, n=args.n, step=args.step,
                                 inception_weights=args.inception_weights, fid_mode=args.fid_mode,
                                 real_stats=args.real_stats, resolution=args.resolution, settings=settings,
                                 dinov2_weights=args.dinov2_weights, device=args.device, net=args.net,
                                 bn=args.bn)["table"]
    elif args.real_stats is not None:
        raise ConfigError("--real-stats goes with --fake RUN_OR_DIR (the images to compare)")
    elif args.run is not None:
        table = evaluate_saved_run(args.run, metrics, n=args.n, step=args.step, all_steps=args.all, real=args.real,
                                   inception_weights=args.inception_weights, val=args.val,
                                   fid_network=args.fid_network, alexnet_weights=args.alexnet_weights,
                                   wing_weights=args.wing_weights, fid_mode=args.fid_mode, settings=settings,
                                   dinov2_weights=args.dinov2_weights, device=args.device, bn=args.bn,
                                   per_class=args.per_class, class_column=args.class_column, ppl=args.ppl,
                                   ppl_crop=args.ppl_crop == "on")
    else:
        raise ConfigError("give a RUN directory, or --fake and --real (or --real-stats)")
    print(table)
    return 0


# --- stats ----------------------------------------------------------------------------------------------------

def cmd_stats(args: argparse.Namespace) -> int:
    from ganforge.evaluation.run_metrics import write_image_set_stats
    from ganforge.metrics.fid_stats import FEATURES_NAMED
    from ganforge.metrics.registry import METRICS_SERVED

    stats = write_image_set_stats(args.source, args.out, fid_mode=args.fid_mode, n=args.n,
                                  inception_weights=args.inception_weights, resolution=args.resolution,
                                  device=args.device, network=args.network, dinov2_weights=args.dinov2_weights,
                                  overwrite=args.overwrite)
    mode = f", fid_mode {stats.fid_mode}" if stats.fid_mode else ""
    print(f"wrote {args.out}: {FEATURES_NAMED[stats.network]} mean and covariance of {stats.count} images of "
          f"{args.source} (for {' and '.join(METRICS_SERVED[stats.network])}{mode})")
    return 0


# --- report ---------------------------------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from ganforge.viz.plots import available
    from ganforge.viz.report import PLOTS_EXTRA, write_report

    out = write_report(args.runs, args.out)
    print(f"wrote {out}" + ("" if available() else f" (tables and images only: {PLOTS_EXTRA} adds the plots)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from typing import get_args

    from ganforge.config import RESUMABLE_CHANGES, FidMode
    from ganforge.families import family_names
    from ganforge.metrics.registry import INCEPTION_METRICS, STATS_NETWORKS

    fid_modes = list(get_args(FidMode))

    parser = OneLineErrorParser(prog="ganforge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="turn images into a prepared dataset store")
    prep_sub = prep.add_subparsers(dest="source_kind", required=True)
    for kind, helptext in (("celeba_cropped", "aligned CelebA → the PGAN 128×128 crop"),
                           ("folder", "a folder or .zip of images (class sub-folders become labels)"),
                           ("mnist", "the four official MNIST idx(.gz) files"),
                           ("cifar10", "CIFAR-10's binary release (cifar-10-binary.tar.gz or its extracted folder)"),
                           ("hdf5", "a BigGAN-PyTorch HDF5 file (imgs uint8 N×3×H×W, labels)")):
        p = prep_sub.add_parser(kind, help=helptext)
        p.add_argument("src", type=Path)
        p.add_argument("-o", "--out", type=Path, required=True)
        p.add_argument("--overwrite", action="store_true",
                       help="replace an existing store at OUT (its own files; anything else in OUT stays)")
        if kind in ("celeba_cropped", "folder"):
            p.add_argument("--workers", type=int, default=0, help="decoding processes (0: one per core)")
        if kind == "cifar10":
            p.add_argument("--split", default="train", choices=["train", "test"])
            p.add_argument("--download", action="store_true", help="download the tarball into the folder SRC first")
        if kind == "hdf5":
            p.add_argument("--images-key", default="imgs")
            p.add_argument("--labels-key", default="labels")
            p.add_argument("--class-names", type=Path, help="text file, one class name per line (default 0, 1, …)")
            p.add_argument("--float-range", type=_float_pair, default=None, metavar="LOW,HIGH",
                           help="range of float pixels, rounded to 0..255 (default -1,1; write --float-range=0,1)")
        if kind == "folder":
            p.add_argument("--resolution", type=int, required=True)
            p.add_argument("--resize", default="lanczos", choices=["lanczos", "bilinear"],
                           help="the filter after the centre crop: lanczos (default, sharp) or bilinear "
                           "(BigGAN-PyTorch's make_hdf5.py, torchvision's Resize: its ImageNet data)")
            p.add_argument("--channels", type=int, default=3, choices=[1, 3],
                           help="1: a grey store (each image's luma, as PIL's L mode), whose PGAN and DCGAN/WGAN "
                           "networks read and draw one channel; 3 (default): RGB")
        if kind == "mnist":
            p.add_argument("--resolution", type=int, default=32, choices=[32, 64])
            p.add_argument("--split", default="train", choices=["train", "test"])
            p.add_argument("--download", action="store_true", help="download the files into SRC first")
    prep.set_defaults(func=cmd_prepare)
    celeba = prep_sub.add_parser("celeba-domains", help="aligned CelebA split by one attribute into two domains, "
                                 "with a validation split (OUT/train, OUT/val)")
    domains = prep_sub.add_parser("domains", help="ROOT/train/<domain>/ and ROOT/val/<domain>/ folders "
                                  "(StarGAN v2 layout) → OUT/train, OUT/val")
    for p in (celeba, domains):
        p.add_argument("src", type=Path)
        p.add_argument("-o", "--out", type=Path, required=True)
        p.add_argument("--overwrite", action="store_true",
                       help="replace existing stores at OUT/train and OUT/val (an OUT/val of an earlier prepare is "
                            "removed where this source has no validation split)")
        p.set_defaults(func=cmd_prepare_domains)
    celeba.add_argument("--attr-file", type=Path, required=True, help="the official list_attr_celeba.txt")
    celeba.add_argument("--attr", default="Male", help="attribute whose presence is the second domain (Male: "
                        "female/male)")
    celeba.add_argument("--resolution", type=int, default=128)
    celeba.add_argument("--val-fraction", type=float, default=0.1, help="validation share of each domain")
    celeba.add_argument("--limit", type=positive_int, help="only the first N images of the attribute file that are in "
                        "the folder (a quick subset)")
    domains.add_argument("--resolution", type=int, required=True)

    tr = sub.add_parser("train", help="train a new run or resume an existing one")
    tr.add_argument("family", choices=family_names())
    _add_config_options(tr)
    tr.add_argument("--run-dir", "--run", dest="run", type=Path,
                    help="run directory (default runs/FAMILY); an existing run resumes. Under torchrun write --run-dir")
    tr.add_argument("--restart", action="store_true",
                    help="start over (with the run's saved config unless -c is given), deleting what the run wrote "
                         "(checkpoints, logs, sample grids, GIF, report, TensorBoard events; other files stay) once "
                         "the config, dataset and networks check out")
    tr.add_argument("--until", type=non_negative_int, help="stop (with a checkpoint) after this many steps (0: "
                    "build the run, write its untrained checkpoint and train nothing); the same command without "
                    f"--until continues (with --set changes of {', '.join(RESUMABLE_CHANGES)} if "
                    "wanted)")
    tr.add_argument("--on-nan", choices=["stop", "rollback"],
                    help="on a NaN/Inf loss: stop (default), or roll back to the last checkpoint and go on")
    tr.add_argument("--init-from", type=Path, metavar="RUN_OR_CHECKPOINT",
                    help="fine-tune: a new run's networks start from this run's (newest) or checkpoint's weights, "
                         "where names and shapes match (e.g. not a class embedding of another class count); "
                         "official checkpoints: `ganforge import` them first")
    tr.add_argument("--inception-weights", type=Path, metavar="PATH", help="training-time FID/KID/IS: local "
                    "pt_inception-2015-12-05-6726825d.pth (config: inception_weights)")
    tr.add_argument("--dinov2-weights", type=Path, metavar="PATH", help="training-time fd_dinov2: local "
                    "dinov2_vitl14_pretrain.pth (config: dinov2_weights)")
    tr.add_argument("--wing-weights", type=Path, metavar="PATH", help="stargan2 with w_hpf > 0: the face-mask "
                    "network's wing.ckpt (config: model.wing_weights)")
    tr.add_argument("--final-swd", type=positive_int, metavar="N",
                    help="after training, print SWD of N generated images against the training data")
    tr.set_defaults(func=cmd_train)

    insp = sub.add_parser("inspire", help="latents whose images look like given pictures (pytorch_GAN_zoo's "
                          "inspirational generation; PGAN and DCGAN/WGAN runs)")
    insp.add_argument("run", type=Path, help="run directory or checkpoint file")
    insp.add_argument("pictures", type=Path, nargs="+", metavar="PICTURE", help="image files to search for")
    insp.add_argument("-o", "--out", type=Path, required=True, help="folder for the grids, latents and inspire.json")
    insp.add_argument("--runs", type=positive_int, default=1, help="searches per picture from different latents "
                      "(the zoo's -N)")
    insp.add_argument("--steps", type=positive_int, default=6000, help="Adam steps, in three restarts from the best "
                      "latents at a tenth of the learning rate each")
    insp.add_argument("--lr", type=float, default=1.0, help="Adam's first learning rate (the zoo's -l)")
    insp.add_argument("--realism", type=float, default=0.03, help="weight of -D(G(z)) (the zoo's -R; 0: the features "
                      "only)")
    insp.add_argument("--features", type=_weighted_names, default=[("pixels", 1.0)], metavar="NAME[=W],...",
                      help="what the distance to a picture compares, each with its weight (the zoo's -f and "
                      "--weights): pixels (default), vgg19 or vgg16 (the zoo's VGG texture statistics: per-channel "
                      "mean and variance of relu3_1, relu4_1, relu5_1), e.g. pixels,vgg19=0.5")
    insp.add_argument("--vgg-weights", type=Path, help="local vgg19-dcbb9e9d.pth or vgg16-397923af.pth (torchvision's "
                      "ImageNet VGG) for those features (default: $GANFORGE_VGG19_WEIGHTS / $GANFORGE_VGG16_WEIGHTS, "
                      "or downloaded once into the cache)")
    insp.add_argument("--feature-size", type=positive_int, help="images are resized to this size for the VGG "
                      "features (the zoo's --size; default 128)")
    insp.add_argument("--seed", type=int, default=0)
    insp.add_argument("--overwrite", action="store_true", help="replace the grids, latents and inspire.json of an "
                      "earlier search in -o (by default they are kept and nothing is searched)")
    insp.add_argument("--step", type=int)
    insp.add_argument("--device", default="auto")
    insp.set_defaults(func=cmd_inspire)

    exp = sub.add_parser("export", help="the run's sampling generator as an ONNX file (latents → images in [-1, 1], "
                         "any batch size; StarGAN v2: sources and a style guide → translations), checked with "
                         "onnxruntime where installed")
    exp.add_argument("run", type=Path, help="run directory or checkpoint file")
    exp.add_argument("-o", "--out", type=Path, required=True, metavar="FILE.onnx",
                     help="the graph; FILE.json beside it describes the inputs and output")
    exp.add_argument("--step", type=int)
    exp.add_argument("--opset", type=positive_int, help="ONNX opset (default: the exporter's, 18; one it cannot "
                     "write the graph at is refused)")
    exp.add_argument("--overwrite", action="store_true", help="replace FILE.onnx and FILE.json if they exist")
    exp.add_argument("--guide", choices=["latent", "reference"], help="StarGAN v2 runs: the translation's style from "
                     "latents z (default) or from reference images x_ref; inputs x, z or x_ref, y")
    exp.add_argument("--wing-weights", type=Path, help="StarGAN v2 runs with w_hpf > 0: the face-mask network's "
                     "wing.ckpt, built into the graph")
    exp.set_defaults(func=cmd_export)

    gen = sub.add_parser("generate", help="images, grids and interpolations from a trained run")
    gen.add_argument("run", type=Path, help="run directory or checkpoint file")
    gen.add_argument("--step", type=int)
    gen.add_argument("--n", type=positive_int, default=16)
    gen.add_argument("-o", "--out", type=Path, help="folder for the images (not needed with --npz alone)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--grid", action="store_true", help="one grid image instead of single files")
    gen.add_argument("--interpolate", type=frame_count, default=0, metavar="K",
                     help="a row of K frames (ends included) along the slerp between each pair of consecutive "
                          "latents: --n N gives N-1 rows")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--npz", type=Path, metavar="FILE",
                     help="--n samples as x (uint8 NCHW) and, from class-conditional runs, y (classes), as "
                          "BigGAN-PyTorch's sample_npz writes them; `evaluate --fake FILE` reads it")
    gen.add_argument("--nearest", type=positive_int, metavar="K",
                     help="nearest.png and nearest.json: each of --n samples beside its K nearest training images "
                          "(RMS pixel distance, mirror images included): did the run memorise its data?")
    gen.add_argument("--real", help="the images of --nearest and --truncation-sweep: a store or builtin (default: "
                     "the run's data)")
    gen.add_argument("--bn", type=bn_mode, metavar="MODE", help=BN_HELP)
    gen.add_argument("--overwrite", action="store_true", help="replace files of the names this writes that are "
                     "there already (by default they are kept and nothing is written)")
    biggan = gen.add_argument_group("class-conditional (biggan) runs")
    biggan.add_argument("--truncation", type=float, metavar="PSI", help="truncate z at ψ (see --truncation-method)")
    biggan.add_argument("--truncation-method", choices=["resample", "scale"],
                        help="resample (default): true truncated normal on [-ψ, ψ] (as redrawing |z_i| > ψ); "
                             "scale: z·ψ as BigGAN-PyTorch")
    biggan.add_argument("--class", dest="classes", metavar="CLASSES",
                        help="the samples' classes, cycled: names or indices, e.g. --class 207,208 or "
                             "--class circle; a label-conditioned PGAN takes COLUMN=CLASS (for the single images, "
                             "--grid, or --npz)")
    biggan.add_argument("--per-class", type=positive_int, metavar="N",
                        help="class sheets: a row per class, N columns")
    biggan.add_argument("--interpolate-class", type=frame_count, metavar="K",
                        help="interpolation sheets of --n rows and K frames in the spaces of --interp-spaces")
    biggan.add_argument("--interp-spaces",
                        help="with --interpolate-class: z (fixed class), class (shared embedding, fixed z), both; "
                             "default all three")
    biggan.add_argument("--truncation-sweep", metavar="PSIS",
                        help="IS/FID per ψ, e.g. 0.5,0.75,1.0,none; printed and written to truncation_sweep.json")
    biggan.add_argument("--sweep-n", type=positive_int,
                        help="samples (and real images) per ψ (default: the run's metrics_n)")
    biggan.add_argument("--inception-weights", type=Path, help="local pt_inception-2015-12-05-6726825d.pth")
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("evaluate", help="metrics of a run, or of one image set against another")
    ev.add_argument("run", type=Path, nargs="?")
    ev.add_argument("--device", type=device_name, default="auto", help=METRICS_DEVICE_HELP)
    ev.add_argument("--metrics", help="comma-separated metric names (default swd; not for stargan2 runs). Without "
                    f"a feature network's weights (the FID Inception's for {', '.join(INCEPTION_METRICS)}; VGG-16's "
                    "for pr and dc, from "
                    "$GANFORGE_VGG16_WEIGHTS or the cache; DINOv2's for fd_dinov2), "
                    "the metrics that need them are left out with one warning line and the others are printed "
                    "(exit 0); if all need them, it is an error (exit 2)")
    ev.add_argument("--n", type=positive_int, help="images to evaluate (default: a run's metrics_n; with --fake: "
                    "each set whole)")
    ev.add_argument("--net", help="with --fake RUN: the generator to evaluate, e.g. G (the raw one) where the run "
                    "keeps G_ema (the default), as BigGAN-PyTorch's sample.py --use_ema toggles")
    ev.add_argument("--step", type=int, help="the checkpoint to evaluate (default: the newest)")
    ev.add_argument("--bn", type=bn_mode, metavar="MODE", help=BN_HELP + "; recorded with `evaluate RUN`'s rows")
    ev.add_argument("--all", action="store_true", help="every checkpoint of the run")
    ev.add_argument("--per-class", action="store_true",
                    help="a class-conditional run (BigGAN, model.conditions) class by class: each class's training "
                         "images (at most --n, default the run's metrics_n) against as many generated images of "
                         "that class, and the mean over classes (with fid: intra-class FID, StudioGAN's iFID); "
                         "recorded in the run's metrics_per_class.jsonl")
    ev.add_argument("--ppl", choices=("full", "end"),
                    help="the perceptual path length in z instead of --metrics (StyleGAN's; stylegan2-ada's ppl_zfull "
                         "or ppl_zend): LPIPS VGG-16 distance of images 1e-4 apart on slerp paths between latents, / "
                         "1e-4², mean between the 1st and 99th percentiles, from --n paths (default the run's "
                         "metrics_n; the reference's 50,000); VGG-16 weights as for pr; recorded as ppl_zfull/ppl_zend")
    ev.add_argument("--ppl-crop", choices=("on", "off"), default="on",
                    help="with --ppl: the centre crop the reference takes of every image (made for faces; default on)")
    ev.add_argument("--class-column", metavar="COLUMN", help="with --per-class: the label column to split by, where "
                    "the generator takes several")
    ev.add_argument("--real", type=Path, help="real images: a store or folder (default: the run's data)")
    ev.add_argument("--fake", type=Path, help="generated images: a folder or .npz, or a run (its EMA generator "
                    "makes --n images, default the run's metrics_n)")
    ev.add_argument("--real-stats", type=Path, metavar="FILE.npz",
                    help="with --fake: FID against these statistics (mu, sigma: pytorch-fid / TTUR layout, or "
                         "written by `ganforge stats`; FD_DINOv2 against those of `stats --network dinov2`) instead "
                         "of real images; metrics default to the file's (fid, or fd_dinov2)")
    ev.add_argument("--fid-mode", choices=fid_modes,
                    help="how images are resized for the Inception metrics: legacy-tf (default; TF1 bilinear, the "
                         "TTUR/torch-fidelity numbers most papers report), clean (clean-fid: PIL bicubic) or "
                         "pytorch-fid (torch bilinear on [0, 1], as pytorch-fid and its --save-stats files)")
    ev.add_argument("--inception-weights", type=Path, help="local pt_inception-2015-12-05-6726825d.pth (stargan2 "
                    "runs: inception_v3_google-0cc3c7bd.pth, or the former with --fid-network tf-inception)")
    ev.add_argument("--dinov2-weights", type=Path, help="fd_dinov2: local dinov2_vitl14_pretrain.pth")
    ev.add_argument("--alexnet-weights", type=Path, help="stargan2 runs: local alexnet-owt-7be5be79.pth for LPIPS")
    ev.add_argument("--fid-network", choices=["torchvision-inception", "tf-inception"],
                    help="stargan2 runs: FID features (default torchvision-inception: the official StarGAN v2 "
                         "protocol, the paper's numbers; tf-inception: the usual FID Inception)")
    ev.add_argument("--wing-weights", type=Path, help="stargan2 runs with w_hpf > 0: the face-mask network's wing.ckpt")
    ev.add_argument("--val", type=Path, help="stargan2 runs: validation store (default: the val store beside the data)")
    ev.add_argument("--kid-subsets", type=positive_int, help="KID: the number of random subsets (default 100, "
                    "as torch-fidelity and stylegan2-ada)")
    ev.add_argument("--kid-subset-size", type=positive_int, help="KID: features per subset (default 1000, or all "
                    "images when fewer)")
    ev.add_argument("--pr-k", type=positive_int, help="precision/recall: the k-th nearest neighbour that sets each "
                    "feature's radius (default 3, as Kynkäänniemi et al.)")
    ev.add_argument("--resolution", type=positive_int, metavar="R", help="with --fake DIR: every image of a folder or "
                    ".npz centre-cropped and resized to R×R (a store: its level R), for folders of mixed sizes "
                    "(default: the images as they are, of one size, as pytorch-fid reads them), --real alike")
    ev.set_defaults(func=cmd_evaluate)

    stats = sub.add_parser("stats", help="Inception pool3 statistics (mu, sigma) of an image set as an .npz "
                           "in the pytorch-fid / TTUR layout (or DINOv2's, --network dinov2), for `evaluate "
                           "--real-stats`")
    stats.add_argument("source", type=Path, metavar="DIR_OR_STORE", help="a folder of images, an .npz of images, "
                       "or a store made by `ganforge prepare`")
    stats.add_argument("-o", "--out", type=Path, required=True, metavar="FILE.npz",
                       help="the statistics file to write (an existing one only with --overwrite)")
    stats.add_argument("--overwrite", action="store_true", help="replace the file -o names if it exists")
    stats.add_argument("--network", choices=list(STATS_NETWORKS), default="inception",
                       help="inception (default): FID's statistics (pool3, 2048-d); inception64, inception192, "
                       "inception768: Inception's earlier blocks, for fid64, fid192, fid768 (pytorch-fid's --dims); "
                       "dinov2: FD_DINOv2's (the class token, 1024-d)")
    stats.add_argument("--fid-mode", choices=fid_modes,
                       help="Inception's resize protocol, recorded in the file (default legacy-tf; or clean, "
                       "pytorch-fid)")
    stats.add_argument("--n", type=positive_int, help="a seeded random choice of N images (default all)")
    stats.add_argument("--resolution", type=positive_int, metavar="R", help="every image of a folder or .npz "
                       "centre-cropped and resized to R×R first (a store: its level R), for folders of mixed sizes "
                       "(default: the images as they are, of one size, as pytorch-fid reads them)")
    stats.add_argument("--inception-weights", type=Path, help="local pt_inception-2015-12-05-6726825d.pth")
    stats.add_argument("--dinov2-weights", type=Path, help="local dinov2_vitl14_pretrain.pth (--network dinov2)")
    stats.add_argument("--device", type=device_name, default="auto", help=METRICS_DEVICE_HELP)
    stats.set_defaults(func=cmd_stats)

    info = sub.add_parser("info", help="networks and parameter counts a config builds (no training)")
    info.add_argument("family", choices=family_names())
    _add_config_options(info)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    imp = sub.add_parser("import", help="import an official checkpoint as a ganforge run")
    imp.add_argument("source", choices=["pgan-zoo", "stargan2", "biggan-pytorch"],
                     help="pgan-zoo: a pytorch_GAN_zoo .pt/.pth, or a hub model's name (celeba, celebAHQ-256, "
                          "celebAHQ-512, DTD: downloaded once, or its local file); stargan2: *_nets_ema.ckpt and/or "
                          "*_nets.ckpt; "
                          "biggan-pytorch: a weights folder with G.pth, D.pth, G_ema.pth, state_dict.pth")
    imp.add_argument("files", type=Path, nargs="+")
    imp.add_argument("-o", "--out", type=Path, required=True, help="run directory to create (new or empty)")
    imp.add_argument("--data", help="dataset for further training (pgan-zoo default: 64 builtin:shapes images at "
                                    "the model's size, which only shape the networks: the run's first train may name "
                                    "its data; required for the others)")
    imp.add_argument("--domain-column", help="stargan2: the label column holding the domains")
    imp.add_argument("--wing-weights", type=Path, metavar="PATH", help="stargan2 files with w_hpf > 0: the "
                     "face-mask network's wing.ckpt (config: model.wing_weights)")
    imp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="shape the continued run, e.g. --set model.schedule.max_iter_at_scale=[16,64]")
    imp.set_defaults(func=cmd_import)

    trn = sub.add_parser("translate", help="StarGAN v2: reference- and latent-guided grids (and video) of a run, "
                         "or (--each) every source image translated, one file each")
    trn.add_argument("run", type=Path, help="run directory or checkpoint file")
    trn.add_argument("--src", type=Path, required=True, help="source images (flat, or in domain sub-folders)")
    trn.add_argument("--ref", type=Path, help="reference images in sub-folders named by domain (needed for the "
                     "grids; with --each, each source in each reference's style)")
    trn.add_argument("--each", action="store_true", help="one file per translated image: OUT/<domain>/<source>.png "
                     "(latent-guided, a style per source from --seed) or, with --ref, "
                     "OUT/<domain>/<source>--<reference>.png")
    trn.add_argument("--to", type=lambda text: text.split(","), metavar="DOMAIN[,DOMAIN...]",
                     help="with --each: the target domains (default all)")
    trn.add_argument("--psi", type=float, default=1.0, help="with --each, latent-guided: truncation towards the "
                     "domain's average style (1: none)")
    trn.add_argument("-o", "--out", type=Path, required=True)
    trn.add_argument("--step", type=int)
    trn.add_argument("--seed", type=int, default=0)
    trn.add_argument("--video", nargs="?", const="auto", metavar="NAME",
                     help="also the reference-interpolation video: NAME.gif or NAME.mp4 (needs ffmpeg); "
                          "default video_ref.mp4 with ffmpeg, else video_ref.gif")
    trn.add_argument("--device", default="auto")
    trn.add_argument("--wing-weights", type=Path, help="w_hpf > 0: the face-mask network's wing.ckpt")
    trn.add_argument("--overwrite", action="store_true", help="replace files of the names this writes that are "
                     "there already (by default they are kept and nothing is written)")
    trn.set_defaults(func=cmd_translate)

    aln = sub.add_parser("align-faces", help="StarGAN v2: face photos in the CelebA-HQ framing of its face models "
                         "(the official --mode align; needs the faces extra)")
    aln.add_argument("inputs", type=Path, metavar="IN", help="folder of face photos")
    aln.add_argument("-o", "--out", type=Path, required=True, help="folder for the aligned faces (same file names)")
    aln.add_argument("--size", type=positive_int, default=256, help="output size in pixels (default 256)")
    aln.add_argument("--wing-weights", type=Path, help="the landmark network's wing.ckpt "
                     "(default $GANFORGE_WING_WEIGHTS, then the cache)")
    aln.add_argument("--landmark-mean", type=Path, help="the official celeba_lm_mean.npz "
                     "(default $GANFORGE_LANDMARK_MEAN, then the cache)")
    aln.add_argument("--device", default="auto")
    aln.set_defaults(func=cmd_align_faces)

    rep = sub.add_parser("report", help="one self-contained HTML page of a run (curves, samples, checkpoints), "
                         "or several runs' curves overlaid by kimg")
    rep.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    rep.add_argument("-o", "--out", type=Path, help="HTML file (default RUN/report.html; several runs: "
                     "./report-compare.html)")
    rep.set_defaults(func=cmd_report)
    return parser



def _warning_line(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """A warning as one line a user reads, not a source location: `ganforge: warning: ...`."""
    return f"ganforge: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        with warnings.catch_warnings():
            if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command not in ("train", "info"):
                from ganforge.errors import ConfigError

                # every rank would run it whole and write the same files (evaluate: each a metrics row)
                raise ConfigError("runs in one process; launch it without torchrun (train is the command that "
                                  "uses several)")
            if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0":
                # torchrun: every rank reads the same config and data, so ganforge's warnings would come W times
                warnings.filterwarnings("ignore", module=r"ganforge(\.|$)")
            return args.func(args)
    except (ValueError, OSError, NotImplementedError) as err:
        # every user-facing error type in ganforge derives from ValueError: one line, no traceback
        print(f"ganforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        from ganforge.errors import RunStopped, is_out_of_memory

        if isinstance(err, RunStopped):  # a NaN loss, another rank's failure: said in one line, as other errors
            print(f"ganforge {args.command}: error: {err}", file=sys.stderr)
            return 2
        distributed = getattr(sys.modules.get("torch.distributed"), "DistError", ())
        if (distributed and isinstance(err, distributed) or _raised_in_a_collective(err)) \
                and not is_out_of_memory(err):  # torchrun: a collective
            # failed (most often another rank failed or was stopped; its error says why) or the rendezvous did
            said = (str(err).strip().splitlines() or [type(err).__name__])[0]
            print(f"ganforge {args.command}: error: rank {os.environ.get('RANK', '?')}: {said} (where another rank "
                  "failed or was stopped, its error is in its output)", file=sys.stderr)
            return 2
        if not is_out_of_memory(err):
            raise
        print(f"ganforge {args.command}: error: out of memory (a batch size, resolution or count too large for "
              "this machine or device?)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning  # main() is also called in-process (tests, notebooks)


if __name__ == "__main__":
    sys.exit(main())
