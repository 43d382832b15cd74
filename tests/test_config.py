"""Config loading: strict keys with suggestions, types, overrides, and the seed's pytorch_GAN_zoo JSON."""

import json
import re

import pytest
from conftest import zoo_pgan_defaults

from ganforge.config import ConfigError, apply_overrides, parse_overrides, read_config_file, to_dict
from ganforge.families import resolve_run_config
from ganforge.families.pgan import compile_schedule
from ganforge.models.pgan import pgan_widths

SEED_JSON = {"pathDB": "builtin:shapes", "config": {
    "miniBatchScheduler": {"1": 64, "2": 64, "3": 64, "4": 32, "5": 22},
    "configScheduler": {"3": {"baseLearningRate": 0.003}, "4": {"baseLearningRate": 0.003},
                        "5": {"baseLearningRate": 0.003}},
    "maxIterAtScale": [48000, 96000, 96000, 96000, 96000, 160000]}}


def test_seed_zoo_json_loads_exactly_as_written(tmp_path):
    path = tmp_path / "config_celeba_cropped.json"
    path.write_text(json.dumps(SEED_JSON))
    config = resolve_run_config("pgan", read_config_file(path))
    model = config.model
    assert config.family == "pgan" and config.data == "builtin:shapes"
    assert config.log_every == 100  # the zoo's train.py averages its logged losses over --eval_iter 100 iterations
    assert model.variant == "zoo" and model.resolution == 128
    assert model.schedule.max_iter_at_scale == [48000, 96000, 96000, 96000, 96000, 160000]
    # scale 0 keeps the default 16; each scheduler entry holds from its scale on
    assert model.schedule.batch_size == 16
    assert model.schedule.batch_per_resolution == {8: 64, 16: 64, 32: 64, 64: 32, 128: 22}
    assert model.schedule.lr_per_resolution == {32: 0.003, 64: 0.003, 128: 0.003}
    assert model.lr == 0.001


def test_zoo_scheduler_entries_persist_to_later_scales():
    data = {"pathDB": "x", "config": {"maxIterAtScale": [10, 10, 10, 10],
                                      "configScheduler": {"2": {"baseLearningRate": 0.01}}},
            "miniBatchScheduler": {"1": 8}}
    model = resolve_run_config(None, data).model
    assert model.schedule.lr_per_resolution == {16: 0.01, 32: 0.01}
    assert model.schedule.batch_per_resolution == {8: 8, 16: 8, 32: 8}


def test_unknown_keys_name_the_key_and_nearest_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.lamda_gp'.*'lambda_gp'"):
        resolve_run_config("pgan", {"model": {"lamda_gp": 5}})
    with pytest.raises(ConfigError, match=r"'sample_evry'.*'sample_every'"):
        resolve_run_config("pgan", {"sample_evry": 5})
    with pytest.raises(ConfigError, match=r"config.maxIterAtScal'.*'maxIterAtScale'"):
        resolve_run_config("pgan", {"pathDB": "x", "config": {"maxIterAtScal": [1]}})
    with pytest.raises(ConfigError, match=r"'pathDb'.*'pathDB'"):
        resolve_run_config("pgan", {"pathDb": "x", "config": {}})


def test_wrong_types_and_values_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"model.latent_dim: expected an integer, got 'big'"):
        resolve_run_config("pgan", {"model": {"latent_dim": "big"}})
    with pytest.raises(ConfigError, match=r"model.variant: 'tf' is not one of 'paper', 'zoo'"):
        resolve_run_config("pgan", {"model": {"variant": "tf"}})
    with pytest.raises(ConfigError, match=r"log_every: expected a positive integer"):
        resolve_run_config("pgan", {"log_every": 0})
    with pytest.raises(ConfigError, match=r"config.lossMode: ganforge's PGAN supports only 'WGANGP'"):
        resolve_run_config("pgan", {"pathDB": "x", "config": {"lossMode": "DCGAN"}})
    with pytest.raises(ConfigError, match=r"unknown family 'stylegan'"):
        resolve_run_config("stylegan", {})


def test_overrides_parse_yaml_values_and_create_sections():
    overrides = parse_overrides(["model.lr=2e-3", "model.schedule.batch_size=8", "data=builtin:shapes?count=64",
                                 "model.widths=[16, 8]"])
    data = apply_overrides({"model": {"lr": 1.0}}, overrides)
    assert data == {"model": {"lr": 2e-3, "schedule": {"batch_size": 8}, "widths": [16, 8]},
                    "data": "builtin:shapes?count=64"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["model.lr"])
    # YAML 1.1 would read `32:4` as the key 1924 with no value: the error says to add the space
    with pytest.raises(ConfigError, match=r"write a space after each colon in a mapping, e\.g\. \{32: 4\}"):
        parse_overrides(["model.schedule.batch_per_resolution={32:4,16: 8}"])
    assert parse_overrides(["model.schedule.batch_per_resolution={32: 4}", "data=http://x/y:z", "a={b: null}"]) == [
        (["model", "schedule", "batch_per_resolution"], {32: 4}), (["data"], "http://x/y:z"), (["a"], {"b": None})]


def test_yaml_and_json_files_and_their_errors(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("family: pgan\nmodel:\n  resolution: 16\n  schedule: {max_iter_at_scale: [1, 2, 3]}\n")
    config = resolve_run_config(None, read_config_file(good))
    assert config.model.resolution == 16
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"a folder, not a config file \(a run's config is its config.json\)"):
        read_config_file(tmp_path)


def test_configs_written_by_the_zoos_datasets_py_load():
    """datasets.py's celebaHQ config with fast training (-f, as the zoo's README runs it): a per-scale image folder
    profile, which a store replaces, and the batch scheduler at the top level."""
    celeba_hq = {"pathDB": "builtin:shapes", "config": {}, "miniBatchScheduler": {"7": 12, "8": 8},
                 "datasetProfile": {"0": "out/4", "1": "out/8", "8": "celeba_hq/1024"}}
    model = resolve_run_config(None, celeba_hq).model
    assert model.resolution == 1024 and model.schedule.batch_per_resolution == {512: 12, 1024: 8}
    for key, value in (("pathPartition", "partition.json"), ("partitionValue", "CLOTHING"),
                       ("selectedAttributes", ["Main"])):
        with pytest.raises(ConfigError, match=f"{key}: ganforge trains on the whole store"):
            resolve_run_config(None, {**celeba_hq, key: value})
    # ignoreAttribs turns the zoo's class-folder classes off (gan_trainer.py: no attribKeysOrder, no AC-GAN)
    folders = {**celeba_hq, "imagefolderDataset": True}
    assert resolve_run_config(None, folders).model.conditions == ["class"]
    assert resolve_run_config(None, {**folders, "ignoreAttribs": True}).model.conditions is None
    assert resolve_run_config(None, {**folders, "ignoreAttribs": False}).model.conditions == ["class"]


def test_the_zoos_default_config_is_ganforges_zoo_default():
    """Every value of pytorch_GAN_zoo's PGAN defaults (standard_configurations/pgan_config.py, read from the
    checkout's source where GANFORGE_REFS has it) written out in a config gives what an empty zoo config gives."""
    defaults = zoo_pgan_defaults()
    custom_jumps = {"iterAlphaJump", "alphaJumpVals"}  # read only by alphaJumpMode "custom"; the default is linear
    assert defaults["alphaJumpMode"] == "linear" and custom_jumps < set(defaults)
    written = {key: value for key, value in defaults.items() if key not in custom_jumps}

    def built(config: dict) -> tuple:
        """What a config trains: its widths, its schedule segment by segment and every other setting."""
        model = resolve_run_config(None, {"pathDB": "x", "config": config}).model
        widths = model.widths or pgan_widths(model.resolution, model.fmap_base, model.fmap_max)
        rest = {k: v for k, v in to_dict(model).items() if k not in ("widths", "fmap_base", "fmap_max", "schedule")}
        return widths, compile_schedule(model), rest

    assert built(written) == built({})
    assert built({})[0] == defaults["depthScales"]


@pytest.mark.parametrize(("family", "override", "hint"), [
    ("pgan", "model.learning_rate=0.01", "unknown config key 'model.learning_rate': did you mean 'model.lr'?"),
    ("wgan-gp", "model.n_critic=3", "unknown config key 'model.n_critic': did you mean 'model.critic_steps'?"),
    ("pgan", "model.batch_size=8", "unknown config key 'model.batch_size': it belongs in 'model.schedule.batch_size'"),
    ("pgan", "every=4", "unknown config key 'every': it belongs in 'lookahead.every'"),  # an optional section
    ("wgan-gp", "batch_size=8", "unknown config key 'batch_size': it belongs in 'model.batch_size'"),
    ("pgan", "batch_size=8", "unknown config key 'batch_size': it belongs in 'model.schedule.batch_size'"),
])
def test_mistaken_keys_are_pointed_to_where_they_belong(family, override, hint):
    """Names from other code (learning_rate, n_critic) and a key one section too high (the WGAN examples'
    model.batch_size is PGAN's model.schedule.batch_size) get the key they mean, not the nearest spelling."""
    with pytest.raises(ConfigError) as err:
        resolve_run_config(family, {"data": "builtin:shapes"}, parse_overrides([override]))
    assert str(err.value) == hint


def test_a_zoo_model_config_alone_says_how_train_py_reads_it(tmp_path):
    path = tmp_path / "small_train_config.json"
    path.write_text(json.dumps({"maxIterAtScale": [16, 32], "depthScales": [32, 32], "dimLatentVector": 32}))
    with pytest.raises(ConfigError, match=r'a pytorch_GAN_zoo model config .* \{"pathDB": STORE, "config": '):
        resolve_run_config("pgan", read_config_file(path), [])
    wrapped = resolve_run_config("pgan", {"pathDB": "builtin:shapes", "config": json.loads(path.read_text())}, [])
    assert wrapped.model.schedule.max_iter_at_scale == [16, 32]


@pytest.mark.parametrize(("override", "message"), [
    ("model.lr=-1", "model.lr: expected a positive learning rate, got -1.0"),
    ("model.schedule.lr_per_resolution.8=0", "model.schedule.lr_per_resolution.8: expected a positive learning "
                                             "rate, got 0.0"),
])
def test_pgan_learning_rates_must_be_positive(override, message):
    """Named by key, not torch's 'Invalid learning rate: -1.0' from inside the optimiser."""
    config = resolve_run_config("pgan", {"data": "builtin:shapes"}, parse_overrides([override]))
    with pytest.raises(ConfigError) as err:
        compile_schedule(config.model)  # where the family checks its schedule, before any network is built
    assert str(err.value) == message


def test_the_cifar10_preset_is_the_zoos_datasets_py_cifar10_config(tmp_path):
    """configs/pgan_cifar10_zoo.yaml equals, key for key, what the zoo trains from the config its datasets.py writes
    for cifar10 (class folders, maxIterAtScale [96000, 120000, 120000, 120000]) translated as any zoo JSON is."""
    from pathlib import Path

    zoo_json = tmp_path / "config_cifar10.json"
    zoo_json.write_text(json.dumps({"pathDB": "data/cifar10", "config": {
        "maxIterAtScale": [96000, 120000, 120000, 120000]}, "imagefolderDataset": True}))
    preset = Path(__file__).resolve().parents[1] / "configs" / "pgan_cifar10_zoo.yaml"
    ours, zoos = (to_dict(resolve_run_config("pgan", read_config_file(path))) for path in (preset, zoo_json))
    assert ours == zoos
    assert ours["model"]["conditions"] == ["class"] and ours["model"]["resolution"] == 32


def test_yaml_off_is_the_choice_off_not_false(tmp_path):
    """YAML 1.1 reads `amp: off` (and `--set tf32=off`) as False: a choice named "off" takes it back."""
    path = tmp_path / "c.yaml"
    path.write_text("family: pgan\namp: off\ntf32: off\n")
    config = resolve_run_config("pgan", read_config_file(path))
    assert (config.amp, config.tf32) == ("off", "off")
    assert resolve_run_config("pgan", {}, parse_overrides(["amp=off", "tf32=off"])).tf32 == "off"
    with pytest.raises(ConfigError, match="on_nan: False is not one of 'stop', 'rollback'"):
        resolve_run_config("pgan", {"on_nan": False})


@pytest.mark.parametrize(("text", "message"), [
    ("seed: 010\n", "seed: expected an integer, got '010'"),  # YAML 1.1: the octal 8
    ("log_every: 1:30\n", "log_every: expected an integer, got '1:30'"),  # YAML 1.1: the base-60 90
    ("model:\n  lr: .nan\n", "model.lr: expected a finite number, got nan"),
    ("seed: -1\n", "seed: expected an integer from 0 to 2^63 - 1, got -1"),
])
def test_numbers_are_read_as_yaml_1_2_reads_them_and_must_mean_something(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text("family: wgan-gp\n" + text)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        resolve_run_config(None, read_config_file(path))


def test_exponents_without_a_dot_are_numbers_in_files_and_overrides_alike(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("family: wgan-gp\nmodel:\n  steps: 1e4\n  lr: 2e-4\n")
    from_file = resolve_run_config(None, read_config_file(path)).model
    assert (from_file.steps, from_file.lr) == (10000, 2e-4)
    assert parse_overrides(["model.steps=1e4", "seed=010", "a=1:04"]) == [
        (["model", "steps"], 10000.0), (["seed"], "010"), (["a"], "1:04")]


def test_overrides_set_keys_of_unset_sections_and_never_replace_a_whole_section():
    saved = {"family": "wgan-gp", "lookahead": None, "model": {"steps": 10, "lr": 1e-4}}
    assert apply_overrides(saved, parse_overrides(["lookahead.every=5"]))["lookahead"] == {"every": 5}
    with pytest.raises(ConfigError, match=r"^--set model=\{\.\.\.\} would replace the whole model section .* e\.g\. "
                                          r"--set model\.resolution=\.\.\.$"):
        apply_overrides(saved, parse_overrides(["model={resolution: 32}"]))
    with pytest.raises(ConfigError, match="^--set family=dcgan: this is a wgan-gp config"):
        resolve_run_config("wgan-gp", {}, parse_overrides(["family=dcgan"]))


@pytest.mark.parametrize(("override", "message"), [
    ("model.betas=[0.5]", "model.betas: expected two numbers in [0, 1), got [0.5]"),
    ("model.adam_eps=-1", "model.adam_eps: expected a positive number, got -1.0"),
    ("model.gdpp=-1", "model.gdpp: expected a weight >= 0 (0: off), got -1.0"),
    ("model.schedule.alpha_jumps=-1", "model.schedule.alpha_jumps: expected counts >= 0, got -1"),
])
def test_pgan_optimiser_and_fade_settings_are_checked(override, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        compile_schedule(resolve_run_config("pgan", {}, parse_overrides([override])).model)


def test_surplus_fade_entries_are_cut_with_a_warning():
    """A zoo-style list longer than the networks' scales: its tail is unused, said (a saved run with one loads)."""
    model = resolve_run_config("pgan", {}, parse_overrides(["model.schedule.alpha_jumps=[0,20,20,20,20,20,99,99]"]))
    with pytest.warns(UserWarning, match=r"^model\.schedule\.alpha_jumps: 8 entries for the networks' 6 scales; the "
                                         r"last 2 are not used$"):
        segments = compile_schedule(model.model)
    assert len(segments) == 6


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"family: pgan\n\xff\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not a text file in UTF-8"):
        read_config_file(path)
