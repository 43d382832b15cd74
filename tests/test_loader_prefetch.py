"""The loader's background prefetch: the batches and the saved state are exactly those of a loader without it
(PGAN's schedule across a growth and a fade, StarGAN v2's domain pairs, save/restore and rollback mid-run), and
its thread stops cleanly."""

import gc
import threading
from typing import Any

import numpy as np
import pytest
import torch

from ganforge.data.loader import Batch, BatchLoader, DataOptions, to_float_images
from ganforge.data.store import ImageDataset, open_dataset
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.families.pgan import PGANFamily
from ganforge.families.stargan2 import StarGAN2Family

CPU = torch.device("cpu")
PGAN_DATA = "builtin:shapes?count=20&resolution=16"  # 20 images: epochs end mid-batch
STARGAN_DATA = "builtin:shapes?count=64&resolution=16"


@pytest.fixture(scope="module")
def pgan_plans() -> list[tuple[int, int, float]]:
    """(batch, resolution, blend) of 24 PGAN steps: 4 px at batch 4, an 8 px fade at batch 3 (blend 1, 0.5, 0),
    16 px at batch 2."""
    config = resolve_run_config("pgan", {"data": PGAN_DATA, "model": {
        "resolution": 16, "latent_dim": 8, "widths": [8, 8, 8], "mirror": True,
        "schedule": {"max_iter_at_scale": [4, 8, 12], "alpha_jumps": 2, "alpha_jump_size": 2,
                     "batch_per_resolution": {4: 4, 8: 3, 16: 2}}}})
    family = PGANFamily(config.model, open_dataset(PGAN_DATA), CPU, DistInfo())
    plans = [family.plan(step) for step in range(24)]
    return [(plan.batch_size, plan.resolution, plan.real_blend) for plan in plans]


def assert_same_batch(actual: Batch, expected: Batch) -> None:
    assert torch.equal(actual.images, expected.images)
    for got, want in [(actual.labels, expected.labels), (actual.reference_labels, expected.reference_labels)]:
        assert (got is None and want is None) or torch.equal(got, want)
    assert (actual.references is None) == (expected.references is None)
    for got, want in zip(actual.references or (), expected.references or (), strict=True):
        assert torch.equal(got, want)


def pgan_loader(prefetch: int) -> BatchLoader:
    return BatchLoader(open_dataset(PGAN_DATA), seed=3, dist=DistInfo(), device=CPU,
                       options=DataOptions(mirror=True), prefetch=prefetch)


def record_threads(loader: BatchLoader) -> list[str]:
    """Names of the threads that prepare the loader's batches, in order."""
    names, prepare = [], loader._prepare

    def recorded(*args: Any) -> Any:
        names.append(threading.current_thread().name)
        return prepare(*args)
    loader._prepare = recorded
    return names


def test_first_batch_is_the_seeded_permutation_flipped_as_uint8() -> None:
    loader = pgan_loader(prefetch=2)
    batch = loader.next(4, 8)
    rng = np.random.default_rng([3, 0])
    order, flips = rng.permutation(20), rng.random(20) < 0.5
    expected = to_float_images(open_dataset(PGAN_DATA).images(8)[order[:4]], CPU)
    expected[flips[:4]] = expected[flips[:4]].flip(3)
    assert flips[:4].any() and torch.equal(batch.images, expected)
    loader.close()


def test_prefetched_batches_equal_plain_ones_across_growth_and_fade(pgan_plans) -> None:
    assert {plan[2] for plan in pgan_plans} == {0.0, 0.5, 1.0} and len({plan[:2] for plan in pgan_plans}) == 3
    plain, ahead = pgan_loader(prefetch=0), pgan_loader(prefetch=2)
    threads = record_threads(ahead)
    for batch_size, resolution, blend in pgan_plans:
        expected = plain.next(batch_size, resolution, blend=blend)
        assert_same_batch(ahead.next(batch_size, resolution, blend=blend), expected)
        assert ahead.state_dict() == plain.state_dict()  # the batches handed out, never the prefetched ones
    assert plain.state_dict()["epoch"] == 3
    # made on the calling thread only at the start and at each of the 2 changes of request
    assert threads.count("MainThread") == 3 and threads.count("ganforge-prefetch") >= 21
    ahead.close()


def test_save_restore_and_rollback_mid_run_replay_the_same_batches(pgan_plans) -> None:
    first = pgan_loader(prefetch=2)
    for plan in pgan_plans[:6]:  # stops inside the fade, with two batches prefetched
        first.next(plan[0], plan[1], blend=plan[2])
    saved = first.state_dict()
    later = [first.next(plan[0], plan[1], blend=plan[2]) for plan in pgan_plans[6:14]]
    resumed = pgan_loader(prefetch=2)
    resumed.load_state_dict(saved)
    first.load_state_dict(saved)  # rollback: the prefetched batches are dropped
    for plan, expected in zip(pgan_plans[6:14], later, strict=True):
        assert_same_batch(resumed.next(plan[0], plan[1], blend=plan[2]), expected)
        assert_same_batch(first.next(plan[0], plan[1], blend=plan[2]), expected)
    assert resumed.state_dict() == first.state_dict() != saved
    first.close()
    resumed.close()


def stargan_family(dataset: ImageDataset) -> StarGAN2Family:
    config = resolve_run_config("stargan2", {"data": STARGAN_DATA, "model": {
        "resolution": 16, "domain_column": "shape", "base_dim": 4, "max_conv_dim": 8, "mapping_dim": 8,
        "latent_dim": 4, "style_dim": 8, "w_hpf": 0.0, "batch_size": 4, "randcrop_prob": 0.5, "flip": True}})
    torch.manual_seed(0)
    return StarGAN2Family(config.model, dataset, CPU, DistInfo())


def test_domain_pair_batches_equal_plain_ones_also_when_the_family_moves_the_sampler() -> None:
    dataset = open_dataset(STARGAN_DATA)
    plain_family, ahead_family = stargan_family(dataset), stargan_family(dataset)
    plain = BatchLoader(dataset, seed=0, dist=DistInfo(), device=CPU, options=plain_family.data_options(),
                        prefetch=0)
    ahead = BatchLoader(dataset, seed=0, dist=DistInfo(), device=CPU, options=ahead_family.data_options())
    threads = record_threads(ahead)
    def same_batches(count: int) -> None:
        for _ in range(count):
            assert_same_batch(ahead.next(4, 16), plain.next(4, 16))
            assert ahead.state_dict() == plain.state_dict()
    same_batches(3)
    saved = plain.state_dict()["domain_pairs"]
    same_batches(2)
    for family in (plain_family, ahead_family):  # an old checkpoint's family state rewinds the sampler behind the
        family.sampler.load_state_dict(saved)  # loader's back (load_family_state): the prefetched draws are stale
    same_batches(3)
    assert ahead.next(4, 16).references is not None and threads.count("ganforge-prefetch") >= 6
    ahead.close()


def prefetch_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "ganforge-prefetch"]


def test_close_stops_the_thread_and_a_later_batch_restarts_it(pgan_plans) -> None:
    before = set(prefetch_threads())
    loader, plain = pgan_loader(prefetch=2), pgan_loader(prefetch=0)
    assert_same_batch(loader.next(4, 4), plain.next(4, 4))
    (thread,) = set(prefetch_threads()) - before
    assert thread.daemon
    loader.close()
    loader.close()
    assert not thread.is_alive()
    assert_same_batch(loader.next(4, 4), plain.next(4, 4))  # started again, from the position handed out
    (restarted,) = set(prefetch_threads()) - before
    del loader
    gc.collect()
    restarted.join(timeout=10)
    assert not restarted.is_alive()  # a dropped loader's thread ends with it


def test_errors_reach_the_caller() -> None:
    with pytest.raises(ValueError, match="prefetch must be >= 0"):
        pgan_loader(prefetch=-1)
    loader = pgan_loader(prefetch=2)
    with pytest.raises(ValueError, match="has no level 32"):
        loader.next(4, 32)
    assert loader.state_dict() == {"epoch": 0, "position": 0}
    loader.close()


def test_requests_that_change_every_batch_keep_no_stale_batches() -> None:
    """A drop (another request than the one queued) left the thread's finished batches in its result queue until
    a later matching request skipped them: alternating requests piled up two full batches each."""
    loader, plain = pgan_loader(prefetch=2), pgan_loader(prefetch=0)
    for index in range(40):
        request = (4, 8) if index % 2 else (3, 16)
        assert_same_batch(loader.next(*request), plain.next(*request))
    assert loader._results.qsize() + loader._jobs.qsize() <= 2 * loader.prefetch + 1  # queued, and one in flight
    loader.close()
