"""Two CPU processes under torchrun (gloo) train the same run as one process with the same global batch."""

import copy
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml
from pgan_tiny import TINY_PGAN
from reliability_runs import child_env, torchrun, torchrun_cli, torchrun_failure

from ganforge.config import ConfigError
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.training.engine import NonFiniteError, PendingValues, Trainer


def pgan_for_two_processes() -> dict[str, Any]:
    """TINY_PGAN with a global batch of 8 (4 per rank, one mbstd group each) and an update ∝ gradient."""
    config = copy.deepcopy(TINY_PGAN)
    config["model"]["schedule"] = {"max_iter_at_scale": [2, 4, 4], "alpha_jumps": 2, "alpha_jump_size": 1,
                                   "batch_size": 8}
    # Adam with a large eps updates ∝ gradient: with the default 1e-8, gradients near zero become ±lr steps whose
    # sign float summation order decides, which hides a real mismatch behind noise
    config["model"].update(adam_eps=1.0, lr=0.1)
    config.update(sample_every=100, checkpoint_every=100, log_every=2)
    return config


def train_one_and_two_processes(config: dict[str, Any], tmp_path: Path, until: int) -> tuple[Path, Path]:
    """Train `config` to step `until` in one process and in two (torchrun, gloo); returns the two run directories
    after checking that both finished and that the weights of their checkpoints at `until` agree."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    single = subprocess.run([sys.executable, "-m", "ganforge.cli", "train", config["family"], "-c", str(path),
                             "--run", str(tmp_path / "single"), "--until", str(until)],
                            env=child_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = torchrun_cli(["train", config["family"], "-c", str(path), "--run-dir", str(tmp_path / "ddp"), "--until",
                        str(until)], timeout=300)
    assert ddp.returncode == 0, torchrun_failure(ddp)
    # rank 0 wrote the run and says where it stopped; the sync check at the checkpoint passed on every rank (a
    # rank that fails it exits non-zero)
    assert ddp.stdout.count(f"stopped at step {until} (--until)") == 1
    name = f"{until:08d}.safetensors"
    a = safetensors.torch.load_file(str(tmp_path / "single" / "checkpoints" / name))
    b = safetensors.torch.load_file(str(tmp_path / "ddp" / "checkpoints" / name))
    for key in a:
        if key.startswith(("net/", "lookahead/")):
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)
    return tmp_path / "single", tmp_path / "ddp"


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process_run(tmp_path):
    # four steps cover scale 0 and the start of the 8x8 fade; longer GAN runs amplify float summation-order noise
    # beyond any fixed tolerance. Lookahead pulls after steps 1 and 3, on every rank alike
    config = {**pgan_for_two_processes(), "lookahead": {"every": 2, "alpha": 0.5}}
    single, ddp = train_one_and_two_processes(config, tmp_path, until=4)
    assert any(key.startswith("lookahead/") for key in safetensors.torch.load_file(
        str(single / "checkpoints" / "00000004.safetensors")))
    logs = [json.loads(line) for line in (ddp / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logs] == [2, 4]  # only rank 0 logs
    # ...the global batch's losses, as one process logs them (each rank's share averaged over ranks)
    for one, two in zip((json.loads(x) for x in (single / "log.jsonl").read_text().splitlines()), logs, strict=True):
        losses = [key for key in one if key.startswith(("loss_", "wdist", "gp"))]
        assert {"loss_D", "loss_G", "wdist", "gp"} <= set(losses)
        assert {key: two[key] for key in losses} == pytest.approx({key: one[key] for key in losses}, rel=1e-4,
                                                                  abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["zoo", "paper"])
def test_both_variants_with_labels_match_across_process_counts(tmp_path, variant):
    """The zoo's minibatch-stddev groups are consecutive samples, so its processes train on contiguous blocks of the
    global batch (interleaved shares regrouped them: weights up to 0.04 apart after 2 steps), the paper's strided
    groups interleaved shares; with AC-GAN each rank also takes its share of the real labels and of the fake labels
    drawn at global-batch size (uniform, or the paper's classes of random training images)."""
    config = pgan_for_two_processes()
    config["model"].update(variant=variant, conditions=["shape", "background"], condition_weight_g=0.5)
    single, _ = train_one_and_two_processes(config, tmp_path, until=4)
    assert "classification_D" in (single / "log.jsonl").read_text()


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _rank_of(pid: int) -> int | None:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"RANK=")), None)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers through /proc")
def test_a_signal_that_reaches_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    config = pgan_for_two_processes()
    config["model"]["schedule"]["max_iter_at_scale"] = [2, 4, 100000]
    config.update(log_every=1, sample_every=1000, checkpoint_every=1000)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "ddp"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "ganforge.cli", "train", "pgan", "-c", str(path), "--run-dir", str(run)],
                            env={**child_env(), "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ((run / "log.jsonl").is_file() and len((run / "log.jsonl").read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, "the two-process run did not start"
            time.sleep(0.2)
        workers = {_rank_of(pid): pid for pid in _children(proc.pid)}
        os.kill(workers[1], signal.SIGTERM)  # rank 1 only: rank 0 learns of it through the vote
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-6000:]
    # one line, rank 0's; a rank that stopped at another step would have paired its checkpoint's sync check with
    # the other's gradient all-reduce and failed
    stops = re.findall(r"interrupted at step (\d+) of \d+ \(SIGTERM\)", stdout)
    assert len(stops) == 1, stdout[-2000:]
    assert (run / "checkpoints" / f"{int(stops[0]):08d}.safetensors").is_file()


def test_a_non_finite_loss_is_voted_on_so_every_rank_stops_at_the_same_read():
    votes = []

    class OtherRankFoundOne:
        enabled = True

        def max_over_ranks(self, value: int) -> int:
            votes.append(value)
            return 1

    trainer = types.SimpleNamespace(pending=PendingValues(), dist=OtherRankFoundOne(), step=7)
    trainer.pending.add_step({"loss_D": torch.tensor(1.0)})
    with pytest.raises(NonFiniteError, match="step 7: a loss on another rank is NaN/Inf"):
        Trainer.read_pending(trainer, logs=True)
    trainer.pending.watch_loss(8, "D", torch.tensor(float("nan")))  # this rank's own: the others hear of it
    with pytest.raises(NonFiniteError, match="step 8, phase D: loss is nan"):
        Trainer.read_pending(trainer, logs=True)
    assert votes == [0, 1]
    assert DistInfo().max_over_ranks(5) == 5  # one process: no vote


def test_ranks_that_find_different_checkpoints_stop_in_one_line_before_training(tmp_path):
    """Two nodes, each with a local copy of the run folder: one resumed step 4, the other started afresh, until a
    collective failed in gloo far from the cause (a SIGABRT)."""
    class OtherRankFoundNone:
        enabled, rank = True, 0

        def __init__(self) -> None:
            self.replies = iter([-1, 1])  # the other rank's step (none: -1), then its negation, in voting order

        def max_over_ranks(self, value: int) -> int:
            return max(value, next(self.replies))

    trainer = types.SimpleNamespace(dist=OtherRankFoundNone(), run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"^rank 0: the ranks found different checkpoints in {tmp_path / 'run'} "
                                          r"\(none to step 4; this rank: step 4\): every rank must read one run "
                                          r"folder, shared at the same path on every node"):
        Trainer._check_ranks_resume_alike(trainer, 4)
    agreeing = types.SimpleNamespace(dist=types.SimpleNamespace(enabled=True, rank=1, max_over_ranks=lambda v: v))
    Trainer._check_ranks_resume_alike(agreeing, 4)


@dataclasses.dataclass(frozen=True)
class SignalDuringVote(DistInfo):
    """One process pretending to be one of several: at its `at`-th vote a SIGTERM lands after the collective
    returned and before the caller stored the result, the window a real rank waiting in gloo hits most often."""

    at: int = 4  # the resume check's two votes, then the first step's
    votes: list[int] = dataclasses.field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return True

    def all_reduce_grads(self, params) -> None:
        pass

    def mean_over_ranks(self, values: dict) -> dict:  # the stop's log record: every rank logged alike
        return values

    def max_over_ranks(self, value: int) -> int:
        self.votes.append(value)
        if len(self.votes) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before this function returns
        return value


def test_a_signal_handled_right_after_a_vote_is_carried_to_the_next_vote_not_lost(tmp_path, monkeypatch):
    dist = SignalDuringVote()
    monkeypatch.setattr(Trainer, "check_ranks_in_sync", lambda self: None)  # one process: no other rank's weights
    config = copy.deepcopy(TINY_PGAN)
    config.update(sample_every=100, checkpoint_every=100, log_every=100)
    trainer = Trainer(resolve_run_config(None, config), tmp_path / "run", dist=dist)
    result = trainer.train()
    # the vote after step 2 saw 0 (the signal came later); the one after step 3 carries it: every rank stops there
    assert (result.stop, result.step, result.signal_number) == ("signal", 3, signal.SIGTERM)
    assert dist.votes[:5] == [-1, 1, 0, 0, signal.SIGTERM]  # first the resume check's two (no checkpoint: -1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ranks_leave_together_after_training_but_not_after_an_error(monkeypatch):
    """A finished run meets the other ranks at a barrier before tearing the process group down (rank 0 is still
    writing its last files when the others finish); a failed one must not wait for ranks that may never come."""
    from ganforge.training import engine

    calls: list[str] = []

    class StubDist:
        is_main = False

        def barrier(self) -> None:
            calls.append("barrier")

    class StubTrainer:
        fail = False
        config = types.SimpleNamespace(metrics=[])

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.dist = StubDist()

        def train(self, until: int | None = None) -> engine.TrainResult:
            calls.append("train")
            if StubTrainer.fail:
                raise RuntimeError("boom")
            return engine.TrainResult(Path("unused"), 4, 4, "finished")

    monkeypatch.setattr(engine, "Trainer", StubTrainer)
    monkeypatch.setattr(engine, "shutdown_distributed", lambda dist: calls.append("shutdown"))
    # another rank's result says so: what follows training (printing, a final metric) is rank 0's
    assert engine.train(None, Path("unused")) == engine.TrainResult(Path("unused"), 4, 4, "finished",
                                                                    main_process=False)
    assert calls == ["train", "barrier", "shutdown"]
    calls.clear()
    StubTrainer.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        engine.train(None, Path("unused"))
    assert calls == ["train", "shutdown"]

    def refused(*args: Any, **kwargs: Any) -> None:  # a config or resume refused after joining the group
        raise ConfigError("refused")

    monkeypatch.setattr(engine, "Trainer", refused)
    calls.clear()
    with pytest.raises(ConfigError, match="refused"):
        engine.train(None, Path("unused"))
    assert calls == ["shutdown"]  # the group is left (it stayed initialised for a Python caller)


RANK_TEARDOWN = """
import os, sys, torch, torch.distributed
from ganforge.distributed import init_distributed, shutdown_distributed
info = init_distributed("cpu")
torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo, as every training run does
gathered = [torch.empty(2) for _ in range(2)]
torch.distributed.all_gather(gathered, torch.ones(2))  # a collective holding tensors, then a barrier: as the engine
info.barrier()
def threads():
    return " ".join(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
before = threads()
shutdown_distributed(info)
open(os.path.join(sys.argv[1], f"rank{info.rank}.txt"), "w").write(before + "|" + threads())
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists the rank's threads through /proc")
def test_shutdown_ends_the_process_groups_threads_before_the_interpreter_exits(tmp_path):
    """With torch._dynamo imported after the group existed, destroy_process_group left gloo's threads running; at
    the interpreter's teardown one of them freed the tensors of a finished collective and aborted the rank (a rare
    race, after the run had finished and written everything; in CI about one full suite run in ten)."""
    script = tmp_path / "teardown.py"
    script.write_text(RANK_TEARDOWN)
    done = torchrun([str(script), str(tmp_path)], timeout=120)
    assert done.returncode == 0, torchrun_failure(done)
    for rank in (0, 1):  # the thread names: python, and gloo_tcp_loop / pt_gloo_runloop while the group lives
        before, after = (tmp_path / f"rank{rank}.txt").read_text().split("|")
        assert "gloo" in before and "gloo" not in after, (rank, before, after)


RANK_ZERO_ALONE = """
import datetime, time, torch, torch.distributed
from ganforge.distributed import init_distributed, shutdown_distributed
torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=2))  # collectives give up after 2 s
info = init_distributed("cpu")
if info.rank == 0:
    time.sleep(5)  # working alone (metrics) for longer than a collective waits
info.barrier()
shutdown_distributed(info)
total = torch.ones(1)
torch.distributed.all_reduce(total)  # the caller's group outlives ganforge's shutdown
assert total.item() == 2
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_the_other_ranks_wait_for_rank_zero_working_alone_beyond_the_collective_timeout(tmp_path):
    """Training-time metrics run on rank 0 alone while the others wait at the barrier; StarGAN v2's full protocol
    can take longer than the 30 minutes after which a collective gives up, and a barrier that gave up killed the
    run. Scaled down here: collectives give up after 2 s, rank 0 works for 5 s. The group is the caller's (a
    script that set it up before calling ganforge): shutdown leaves it working."""
    script = tmp_path / "wait.py"
    script.write_text(RANK_ZERO_ALONE)
    done = torchrun([str(script)], timeout=120)
    assert done.returncode == 0, torchrun_failure(done)


@pytest.mark.slow
def test_a_best_metric_tick_between_checkpoints_saves_on_every_rank(tmp_path):
    """A metric tick that ranks a checkpoint writes one even off the checkpoint interval; rank 0 alone gets the
    value (every rank computes its share), and every rank must enter the checkpoint (its weight-sync check is a
    collective), or the ranks' collectives pair up wrongly and the run hangs (it did, until the 60-second timeout,
    before every rank entered)."""
    config = pgan_for_two_processes()
    # 10 steps: ticks at 7 (16 px, between checkpoints) and 10 (the last); 160 images, generated and read in
    # batches of 64, 64 and 32: rank 0 computes the first and the last, rank 1 the second
    config.update(metrics=["swd"], metrics_every=7, metrics_n=160, best_metric="swd_avg", keep_best=1,
                  checkpoint_every=100, data="builtin:shapes?count=160&resolution=16")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    ddp = torchrun_cli(["train", "pgan", "-c", str(path), "--run-dir", str(tmp_path / "run"), "--final-swd", "160"],
                       timeout=300)
    assert ddp.returncode == 0, torchrun_failure(ddp)
    records = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # ...and the final SWD after training is rank 0's alone: one row, one summary, one report line
    assert [r["step"] for r in records] == [7, 10, 10]
    # the tick's SWD, computed by both ranks, is the one rank 0 alone computes of the same weights and images, up
    # to the last bits in which the generator loaded from the checkpoint rounds differently from the trained one
    # (one process gives the same 1e-7; test_metrics_ranks.py shows the shares' values equal one process's exactly)
    assert records[1]["swd_avg"] == pytest.approx(records[2]["swd_avg"], rel=1e-4) and records[2]["n"] == 160
    said = ("finished at step 10", "floor: the same real images", "report: ")
    assert [ddp.stdout.count(text) for text in said] == [1, 1, 1]
    best = json.loads((tmp_path / "run" / "best.json").read_text())["best"]
    assert len(best) == 1 and best[0]["step"] in (7, 10)
    assert (tmp_path / "run" / "checkpoints" / f"{best[0]['step']:08d}.json").is_file()


def test_log_means_are_averaged_over_ranks_only_when_every_rank_holds_the_same_keys(monkeypatch):
    """Rank 0 of two, the other rank's sums simulated: matching keys average; differing keys (or a rank with none,
    which would otherwise skip the sum and hang the others) stop with an error instead of logging wrong values."""
    import zlib

    import ganforge.distributed as distributed

    other: dict[str, float] = {"loss_D": 3.0, "loss_G": 5.0}

    def all_reduce(tensor: torch.Tensor, op=None, group=None) -> None:
        if tensor.dtype == torch.int64:  # the vote on the keys: the largest signature and negated signature
            theirs = zlib.crc32("\n".join(sorted(other)).encode())
            tensor.copy_(torch.maximum(tensor, torch.tensor([theirs, -theirs])))
        else:
            tensor += torch.tensor([other[key] for key in sorted(other)], dtype=torch.float64)

    monkeypatch.setattr(distributed.torch_dist, "all_reduce", all_reduce)
    two = DistInfo(rank=0, world_size=2)
    assert two.mean_over_ranks({"loss_G": 1.0, "loss_D": 1.0}) == {"loss_D": 2.0, "loss_G": 3.0}
    for theirs in ({"loss_D": 3.0, "gp": 5.0}, {}):
        other.clear()
        other.update(theirs)
        with pytest.raises(RuntimeError, match=r"rank 0: the ranks' log values differ in their keys"):
            two.mean_over_ranks({"loss_G": 1.0, "loss_D": 1.0})
    assert DistInfo().mean_over_ranks({"loss_D": 1.0}) == {"loss_D": 1.0}  # one process: nothing to agree on


@pytest.mark.slow
def test_a_shared_metric_tick_samples_rank_zeros_network(tmp_path):
    """BigGAN without sync_bn: each rank's G normalises its own share of the batch, so the ranks' running
    statistics differ. A tick's ranks all sample rank 0's network (its buffers, for the tick only): the value is the
    one `evaluate` gives of rank 0's checkpoint, and training goes on with each rank's own statistics."""
    from reliability_runs import tiny_run

    config = tiny_run("biggan", data="builtin:shapes?count=160&resolution=32", metrics=["swd"], metrics_every=4, seed=0,
                      metrics_n=160, checkpoint_every=4, log_every=4)
    config["model"].update(batch_size=8, steps=4)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    ddp = torchrun_cli(["train", "biggan", "-c", str(path), "--run-dir", str(tmp_path / "run")], timeout=300)
    assert ddp.returncode == 0, torchrun_failure(ddp)
    from ganforge.cli import main

    assert main(["evaluate", str(tmp_path / "run"), "--metrics", "swd", "--n", "160"]) == 0
    tick, evaluated = (json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    assert (tick["step"], evaluated["step"], evaluated["n"]) == (4, 4, 160)
    assert tick["swd_avg"] == pytest.approx(evaluated["swd_avg"], rel=1e-4)  # rank 1 own statistics: 3e-3 off


def test_a_peer_lost_inside_a_gloo_collective_is_one_line_on_the_surviving_ranks(monkeypatch, capsys):
    """gloo raises a plain RuntimeError from torch.distributed when another rank died: the healthy ranks printed a
    40-line traceback over the failed rank's one-line error."""
    from ganforge import cli

    namespace: dict[str, Any] = {}
    exec(compile("def all_reduce():\n    raise RuntimeError('Connection closed by peer [10.0.0.2]:1234\\nmore')\n",
                 os.path.join("site-packages", "torch", "distributed", "distributed_c10d.py"), "exec"), namespace)

    def train_in_a_collective(args):
        namespace["all_reduce"]()

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(cli, "cmd_info", train_in_a_collective)
    assert cli.main(["info", "wgan-gp"]) == 2
    assert capsys.readouterr().err == ("ganforge info: error: rank 0: Connection closed by peer [10.0.0.2]:1234 (where "
                                       "another rank failed or was stopped, its error is in its output)\n")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: not a collective's failure, raised as it is
    with pytest.raises(RuntimeError, match="Connection closed"):
        cli.main(["info", "wgan-gp"])


def test_a_stray_world_size_without_torchrun_is_one_line(monkeypatch):
    """WORLD_SIZE=2 left in a shell: a KeyError on RANK before, now what to do."""
    from ganforge.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"^WORLD_SIZE=2 is set, but RANK, MASTER_ADDR, MASTER_PORT are not: launch "
                                          "several processes with torchrun"):
        init_distributed("cpu")


def test_a_resume_in_another_process_count_is_refused_where_the_step_would_change(tmp_path):
    """BigGAN without sync_bn normalises each process's share (as model.bn_groups, which a resume may not change);
    PGAN's minibatch-stddev groups form within shares. The checkpoint records the process count it trained in."""
    from reliability_runs import tiny_run

    import ganforge
    from ganforge.training import checkpoint as ckpt

    for sync_bn in (False, True):
        config = tiny_run("biggan")
        config["model"]["sync_bn"] = sync_bn
        run = tmp_path / f"biggan-{sync_bn}"
        ganforge.train(config, run, until=1)
        record = ckpt.checkpoint_dir(run) / "00000001.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "world_size": 2}))  # as torchrun wrote it
        if sync_bn:
            assert ganforge.train(config, run, until=2).step == 2  # one batch's statistics either way
        else:
            with pytest.raises(ConfigError, match=rf"^{run} trained in 2 processes and this run has 1: G's batch norm "
                                                  r"normalises each process's share .* resume it in 2 \(torchrun "):
                ganforge.train(config, run, until=2)
            assert ganforge.train(config, run, until=1).stop == "until"  # no step to compute: nothing refused
            record.write_text(json.dumps({**json.loads(record.read_text()), "world_size": None}))
            with pytest.raises(ckpt.CheckpointError, match=r"00000001.json: world_size None: expected the positive "):
                ganforge.train(config, run, until=2)
    family = Trainer(resolve_run_config(None, copy.deepcopy(TINY_PGAN)), tmp_path / "pgan").family  # batch 4, group 4
    assert family.process_count_change(2, 1, 0).startswith("D's minibatch-stddev groups at 4 px are formed within")
    assert family.process_count_change(1, 1, 0) is None
