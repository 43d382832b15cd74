"""PGAN family: schedule compilation, alpha, per-scale learning rate, optimiser/EMA resets, real-image fade."""

from pathlib import Path

import pytest
import safetensors.torch
import torch
from pgan_tiny import TINY_PGAN

import ganforge
from ganforge.config import ConfigError, read_config_file
from ganforge.data.loader import half_resolution_blend
from ganforge.families import resolve_run_config
from ganforge.families.pgan import compile_schedule
from ganforge.training.engine import Trainer


def tiny(tmp_path=None, **model):
    base = {"resolution": 16, "latent_dim": 16, "widths": [16, 16, 8],
            "schedule": {"max_iter_at_scale": [4, 8, 8], "alpha_jumps": 2, "alpha_jump_size": 2, "batch_size": 4}}
    for key, value in model.items():
        if key == "schedule":  # a kimg schedule replaces the iteration keys (they would do nothing there)
            kept = base["schedule"] if value.get("unit", "iterations") == "iterations" else {"batch_size": 4}
            base["schedule"] = {**kept, **value}
        else:
            base[key] = value
    return resolve_run_config("pgan", {"data": "builtin:shapes?count=64&resolution=16", "progress": False,
                                       "tensorboard": False, "model": base})


def test_zoo_style_schedule_alpha_steps_linearly_from_one_to_zero():
    segments = compile_schedule(tiny().model)
    assert [(s.resolution, s.start, s.steps, s.fade_steps) for s in segments] == [
        (4, 0, 4, 0), (8, 4, 8, 4), (16, 12, 8, 4)]
    alphas = [segments[1].alpha(i) for i in range(8)]
    assert alphas == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert segments[0].alpha(0) == 0.0


def test_official_kimg_schedule_converts_images_to_steps_per_batch_size():
    config = tiny(schedule={"unit": "kimg", "stable_kimg": 0.016, "transition_kimg": 0.008, "total_kimg": 0.1,
                            "batch_per_resolution": {16: 2}})
    segments = compile_schedule(config.model)
    # TF's lod on the images shown before a step: stable while <= 16 (4x4: 0, 4, ..., 16: 5 steps); fade while < 24
    # (one step from 20); stable while <= 40 (24..40: 5 steps); 16x16 at batch 2: fade while < 48 (44, 46), then
    # until 100 images
    assert [(s.steps, s.fade_steps, s.batch_size) for s in segments] == [(5, 0, 4), (6, 1, 4), (28, 2, 2)]
    assert segments[2].alpha(1) == pytest.approx(0.5)
    images = sum(s.steps * s.batch_size for s in segments)
    assert images == 100


def test_schedule_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"max_iter_at_scale: 2 entries but resolution 16 has 3 scales"):
        compile_schedule(tiny(schedule={"max_iter_at_scale": [4, 8]}).model)
    with pytest.raises(ConfigError, match=r"scale 1 has 3 iterations but its fade needs 4"):
        compile_schedule(tiny(schedule={"max_iter_at_scale": [4, 3, 8]}).model)
    with pytest.raises(ConfigError, match=r"resolution 12 .* not one of"):
        compile_schedule(tiny(schedule={"batch_per_resolution": {12: 3}}).model)


def test_per_scale_learning_rate_reaches_the_optimiser(tmp_path):
    trainer = Trainer(tiny(schedule={"lr_per_resolution": {8: 0.003, 16: 0.004}}), tmp_path / "run")
    seen = {}
    for step in (0, 5, 13):
        trainer.step = step
        plan = trainer.family.plan(step)
        trainer.family.begin_step(step, plan)
        seen[plan.resolution] = {g["lr"] for opt in trainer.family.optimizers.values() for g in opt.param_groups}
    assert seen == {4: {0.001}, 8: {0.003}, 16: {0.004}}


def _adam_steps(trainer):
    return {name: sum(int(s["step"]) for s in opt.state.values()) for name, opt in trainer.family.optimizers.items()}


@pytest.mark.parametrize("variant", ["paper", "zoo"])
def test_optimiser_and_ema_resets_follow_the_variant(tmp_path, variant):
    trainer = Trainer(tiny(variant=variant, schedule={"max_iter_at_scale": [2, 6, 2], "alpha_jumps": 2,
                                                      "alpha_jump_size": 1}), tmp_path / "run")
    family = trainer.family
    history = []
    while trainer.step < 6:
        plan = family.plan(trainer.step)
        trainer.train_step(plan)
        trainer.step += 1
        history.append((trainer.step, max(int(s["step"]) for s in family.optimizers["D"].state.values())))
    # scale 1 starts at step 2 and its fade ends at step 4 (2 jumps x 1 step)
    if variant == "paper":  # reset at the start of the fade and of the stable phase
        assert history == [(1, 1), (2, 2), (3, 1), (4, 2), (5, 1), (6, 2)]
    else:  # reset only at growth
        assert history == [(1, 1), (2, 2), (3, 1), (4, 2), (5, 3), (6, 4)]
    g, ema = family.nets["G"], family.nets["G_ema"]
    assert not torch.equal(g.blocks[1].conv0.weight, ema.blocks[1].conv0.weight)


def test_zoo_variant_restarts_ema_at_growth_paper_keeps_it(tmp_path):
    for variant, expect_equal in (("zoo", True), ("paper", False)):
        trainer = Trainer(tiny(variant=variant), tmp_path / variant)
        family = trainer.family
        for step in range(4):
            trainer.step = step
            trainer.train_step(family.plan(step))
        trainer.step = 4
        family.begin_step(4, family.plan(4))  # growth to 8x8
        same = all(torch.equal(a, b) for a, b in zip(family.nets["G"].state_dict().values(),
                                                     family.nets["G_ema"].state_dict().values(), strict=True))
        assert same is expect_equal


def test_real_images_fade_like_the_networks(tmp_path):
    """The loader blends the reals by the plan's exact alpha: 2×2 box down, nearest up, lerp."""
    trainer = Trainer(tiny(), tmp_path / "run")
    family = trainer.family
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) / 400 - 0.5
    plan = family.plan(6)  # scale 1, alpha 0.5
    assert plan.progress["alpha"] == 0.5 and plan.real_blend == 0.5
    blended = half_resolution_blend(images, plan.real_blend)
    low = images.reshape(2, 3, 4, 2, 4, 2).mean((3, 5)).repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(blended, 0.5 * images + 0.5 * low)
    assert half_resolution_blend(images, family.plan(9).real_blend) is images  # alpha 0: untouched
    trainer.loader.load_state_dict({"epoch": 0, "position": 0})
    plain = trainer.loader.next(4, 8).images
    trainer.loader.load_state_dict({"epoch": 0, "position": 0})
    torch.testing.assert_close(trainer.loader.next(4, 8, blend=0.5).images, half_resolution_blend(plain, 0.5))


def test_the_maths_use_the_exact_alpha_the_logs_show_it_rounded(tmp_path):
    """Alpha 1 − 1/3 reaches the blend and the networks exactly; only `progress` (logs, bar) rounds it."""
    family = Trainer(tiny(schedule={"alpha_jumps": 3, "alpha_jump_size": 1}), tmp_path / "run").family
    plan = family.plan(5)  # scale 1, first jump done
    assert plan.real_blend == 1 - 1 / 3 and family.position(5) == (1, 1 - 1 / 3)
    assert plan.progress["alpha"] == 0.666667 != plan.real_blend
    z = torch.randn(2, 16)
    torch.testing.assert_close(family.generate({"z": z}, "G", plan), family.nets["G"](z, 1, 1 - 1 / 3),
                               rtol=0, atol=0)


def test_paper_variant_mirrors_zoo_does_not(tmp_path):
    for model, mirror in (({}, True), ({"variant": "zoo"}, False), ({"mirror": False}, False)):
        trainer = Trainer(tiny(**model), tmp_path / str(model))
        assert trainer.family.data_options().mirror is mirror and trainer.loader.mirror is mirror


def test_styles_config_defaults_and_refusals(tmp_path):
    assert tiny(styles=True).model.mapping_layers == 2
    assert Trainer(tiny(styles=True), tmp_path / "on").family.describe()["styles"] == "on, 2 mapping layers"
    assert "styles" not in Trainer(tiny(), tmp_path / "off").family.describe()
    assert tiny(styles=True, mapping_layers=0).model.mapping_layers == 0
    with pytest.raises(ConfigError, match=r"model.mapping_layers: 3 does nothing without model.styles: true"):
        tiny(mapping_layers=3)
    with pytest.raises(ConfigError, match=r"model.mapping_layers: expected an integer >= 0, got -1"):
        tiny(styles=True, mapping_layers=-1)


def test_styled_run_resumes_exactly_and_trains_the_styles(tmp_path):
    config = {**TINY_PGAN, "model": {**TINY_PGAN["model"], "styles": True, "mapping_layers": 1}}
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    ganforge.train(config, straight)
    ganforge.train(config, pieces, until=9)  # inside the 8x8 fade
    ganforge.train(config, pieces)

    def tensors(run, step):
        return safetensors.torch.load_file(str(run / "checkpoints" / f"{step:08d}.safetensors"))

    a, b = tensors(straight, 20), tensors(pieces, 20)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    styles = sorted(k for k in a if k.startswith("net/G/") and ("styles" in k or "mapping" in k))
    assert len(styles) == 14  # weight and bias of 3 scales' block and toRGB styles and of the mapping layer
    # steps 16-20 are the stable 16x16 phase: every style G uses there has moved since step 16
    earlier = tensors(straight, 16)
    used = [k for k in styles if "rgb_styles" not in k or "rgb_styles.2" in k]
    assert [k for k in used if torch.equal(a[k], earlier[k])] == []


def test_only_the_quick_start_config_uses_styles():
    configs = Path(__file__).resolve().parents[1] / "configs"
    pgan = {path.name: resolve_run_config(None, read_config_file(path)) for path in sorted(configs.glob("*.yaml"))}
    pgan = {name: config.model for name, config in pgan.items() if config.family == "pgan"}
    assert {name for name, model in pgan.items() if model.styles} == {"quickstart_pgan.yaml"}
    assert pgan["quickstart_pgan.yaml"].mapping_layers == 2
    assert len(pgan) >= 3  # the paper configs were read too


@pytest.mark.parametrize(("model", "calls"), [
    ({}, [(8, 2), (4, 1), (4, 1)]),  # WGAN-GP: reals and fakes together, the penalty's mix, G's fakes
    ({"loss": "logistic-r1", "r1_interval": 1}, [(4, 1), (4, 1), (4, 1)]),  # R1 needs the reals' own call
    ({"loss": "logistic-r1", "r1_interval": 2}, [(8, 2), (4, 1)]),  # lazy R1, not this step
])
def test_d_phase_scores_reals_and_fakes_in_one_call(tmp_path, model, calls):
    """D's batch sizes and `batch_parts` in one training step: one call for reals and fakes unless R1 is measured
    on the reals' call."""
    trainer = Trainer(tiny(**model), tmp_path / "run")
    seen = []
    trainer.family.nets["D"].register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append((args[0].shape[0], kwargs.get("batch_parts", 1))), with_kwargs=True)
    trainer.step = 1
    trainer.train_step(trainer.family.plan(1))
    assert seen == calls


def test_growing_a_kimg_schedule_is_refused_saying_why() -> None:
    """In kimg the last resolution's phase ends otherwise than a middle one's (TF's schedule), so the trained
    scales' steps would change: growth needs an iterations schedule."""
    import copy

    from ganforge.config import to_dict
    from ganforge.families.pgan import PGANFamily

    def model(resolution: int, widths: list[int]) -> dict:
        raw = copy.deepcopy(TINY_PGAN)
        raw["model"].update(resolution=resolution, widths=widths, schedule={
            "unit": "kimg", "stable_kimg": 0.03, "transition_kimg": 0.03, "batch_size": 4})
        return to_dict(resolve_run_config(None, raw).model)

    with pytest.raises(ConfigError, match="model.resolution 8 → 16 adds scales to the trained run, so the schedule "
                                          "must count iterations"):
        PGANFamily.extends_schedule(model(8, [16, 16]), model(16, [16, 16, 8]))
    assert PGANFamily.extends_schedule(model(16, [16, 16, 8]), model(16, [16, 16, 8]))  # no growth: as before


def test_growing_a_run_whose_batch_table_named_every_scale() -> None:
    """batch_per_resolution naming every trained scale leaves batch_size unset in the saved run; the grown config's
    default batch size for the new scale is no change to what was trained (pytorch_GAN_zoo's miniBatchScheduler
    converts to such tables)."""
    import copy

    from ganforge.config import to_dict
    from ganforge.families.pgan import PGANFamily

    def model(resolution: int, widths: list[int], iterations: list[int], table: dict) -> dict:
        raw = copy.deepcopy(TINY_PGAN)
        raw["model"].update(resolution=resolution, widths=widths)
        raw["model"]["schedule"].update(max_iter_at_scale=iterations, batch_size=None, batch_per_resolution=table)
        return to_dict(resolve_run_config(None, raw).model)

    saved = model(8, [16, 16], [4, 8], {4: 4, 8: 4})
    assert saved["schedule"]["batch_size"] is None
    grown = model(16, [16, 16, 8], [4, 8, 8], {4: 4, 8: 4})
    assert grown["schedule"]["batch_size"] == 16 and PGANFamily.extends_schedule(saved, grown)
    with pytest.raises(ConfigError, match=r"model.schedule.batch_per_resolution must keep the trained "
                                          r"\{\"4\": 4, \"8\": 4\}"):
        PGANFamily.extends_schedule(saved, model(16, [16, 16, 8], [4, 8, 8], {4: 4}))  # 8 px would run batch 16
