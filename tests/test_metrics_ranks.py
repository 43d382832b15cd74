"""Metrics spread over two CPU processes (torchrun, gloo): rank 0's values equal one process's, and an error on any
rank stops every rank with an error of its kind (no rank left waiting in a collective)."""

import json

import pytest
from conftest import write_inception_standin
from reliability_runs import torchrun, torchrun_failure

from ganforge.metrics.ranks import RankShare

SPREAD = r"""
import json, sys
from pathlib import Path
import numpy as np
import torch
import ganforge.metrics.evaluate
from ganforge.distributed import init_distributed, shutdown_distributed
from ganforge.metrics._images import ImageSetError
from ganforge.metrics.ranks import RankShare

evaluate_module = sys.modules["ganforge.metrics.evaluate"]
out, inception = Path(sys.argv[1]), sys.argv[2] or None


class TinyFeatures(torch.nn.Module):  # precision/recall's VGG-16 at a tiny size: sums of 8 x 8 blocks, exact in
    # float32, so the features are the same bits in every process (a k-NN radius flips on a last-bit difference)
    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # evaluate reads a network's device from a parameter

    def forward(self, images):
        n = images.shape[0]
        return images.to(torch.float32).reshape(n, 3, 4, 8, 4, 8).sum((3, 5)).flatten(1)


(out / "vgg16.pth").write_bytes(b"stand-in")
import os
os.environ["GANFORGE_VGG16_WEIGHTS"] = str(out / "vgg16.pth")
evaluate_module.load_vgg16_fc2 = lambda weights, device=None: TinyFeatures()

info = init_distributed("cpu")
share = RankShare.of(info)
rng = np.random.default_rng(0)
fakes = torch.from_numpy(rng.uniform(-1, 1, (20, 3, 32, 32)).astype(np.float32))
reals = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)  # SWD compares equal counts
metrics = ["swd", "msssim", "pr"] + (["fid", "kid", "is"] if inception else [])
BATCH = 7  # fakes 7 + 7 + 6: rank 0 has batches 0 and 2, rank 1 batch 1; MS-SSIM's pairs straddle batches


def own(images, batch=BATCH):
    return list(share.own(images[start:start + batch] for start in range(0, len(images), batch)))


def run(fake, real, names=metrics, **kw):
    return evaluate_module.evaluate(fake, real, names, batch_size=BATCH, seed=5, inception_weights=inception,
                                    **kw)


def outcome(call):
    try:
        return call()
    except Exception as err:
        return {"error": type(err).__name__, "message": str(err)}


record = {
    "written": run(own(fakes), own(reals), share=share, real_cache_key="k", cache_dir=out / "cache"),
    "cached": run(own(fakes), own(reals), share=share, real_cache_key="k", cache_dir=out / "cache"),
}


def failing(kind, on_rank_0=None):
    def batches():
        for index, batch in enumerate(own(fakes)):
            if info.rank == 1:
                raise kind("rank 1's own failure")
            if on_rank_0 is not None:
                raise on_rank_0("rank 0's own failure")
            yield batch
    return batches()


record["failure_on_rank_1"] = outcome(lambda: run(failing(ValueError), own(reals), share=share))
record["image_set_on_rank_1"] = outcome(lambda: run(failing(ImageSetError), own(reals), share=share))
record["memory_on_rank_1"] = outcome(lambda: run(failing(MemoryError), own(reals), share=share))
record["mixed"] = outcome(lambda: run(failing(MemoryError, on_rank_0=ImageSetError), own(reals), share=share))
small = torch.zeros(20, 3, 8, 8)
record["swd_too_small"] = outcome(lambda: run(own(small), own(reals[:, :, :8, :8]), ["swd"], share=share))
if info.rank == 0:
    record["single"] = run(fakes, reals)
(out / f"rank{info.rank}.json").write_text(json.dumps(record))
shutdown_distributed(info)
"""


@pytest.mark.slow
def test_metrics_spread_over_ranks_equal_one_process_and_share_every_error(tmp_path):
    try:
        inception = str(write_inception_standin(tmp_path / "inception.pth"))
    except pytest.skip.Exception:  # without ../shared: the metrics that need no Inception
        inception = ""
    script = tmp_path / "spread.py"
    script.write_text(SPREAD)
    done = torchrun([str(script), str(tmp_path), inception], timeout=600)
    assert done.returncode == 0, torchrun_failure(done)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    single = rank0["single"]
    assert set(single) == {"swd", "msssim", "pr"} | ({"fid", "kid", "is"} if inception else set())
    assert single["msssim"]["pairs"] == 10
    # the same batches through the same networks, added in the same order: equal up to the networks' float rounding
    # in another process (oneDNN/MKL need not round alike there); precision/recall counts, of exact features here
    for shared in (rank0["written"], rank0["cached"]):  # the second: the real features from the cache rank 0 wrote
        assert shared["pr"] == single["pr"] and shared["msssim"]["pairs"] == single["msssim"]["pairs"] == 10
        assert_values_close(shared, single)
    assert rank1["written"] == rank1["cached"] == {}
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1 + bool(inception)
    # rank 1's source fails at its first batch: rank 0 stops with an error of that kind at the next exchange
    assert rank1["failure_on_rank_1"]["error"] == "ValueError"
    assert rank0["failure_on_rank_1"]["error"] == "RankFailedError"
    assert [rank["image_set_on_rank_1"]["error"] for rank in (rank0, rank1)] == ["ImageSetError"] * 2
    assert rank0["memory_on_rank_1"]["error"] == "MemoryError"  # the engine moves the metrics to the CPU alike
    assert "rank 1: MemoryError: rank 1's own failure" in rank0["memory_on_rank_1"]["message"]
    # two kinds at once: every rank raises the more serious one (all move to the CPU, none skips a metric alone)
    assert [rank["mixed"]["error"] for rank in (rank0, rank1)] == ["MemoryError"] * 2
    assert "rank 0: ImageSetError: rank 0's own failure" in rank0["mixed"]["message"]
    # SWD refuses 8 px images in rank 0's merge: rank 1, which computed its share, stops with the same kind
    assert rank0["swd_too_small"]["error"] == "ImageSizeError"
    assert rank1["swd_too_small"]["error"] == "ImageSetError"


def assert_values_close(got, want, where: str = "values") -> None:
    """Nested metric values (dicts and lists from JSON): numbers to float32 rounding, everything else equal."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            assert_values_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for index, (one, other) in enumerate(zip(got, want, strict=True)):
            assert_values_close(one, other, f"{where}[{index}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-9), where
    else:
        assert got == want, where


def test_a_rank_owns_every_world_size_th_batch():
    shares = [RankShare(rank, 3) for rank in range(3)]
    assert [list(share.own(range(8))) for share in shares] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert [share.owns(4) for share in shares] == [False, True, False]
