"""``play: process`` (battle_rl/actor.py): a forked process plays and samples the replay while
the learner updates. Its batches are the inline stream's, its runs repeat, and what only it
knows (the stream's state, the replay, the self-play pool) reaches checkpoints and callbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from battle_rl.config import ConfigError, compose_overrides
from battle_rl.safe_load import torch_load
from battle_rl.training import build, plays_in_process, preflight
from test_algorithms import tiny_config, tiny_train

pytestmark = pytest.mark.skipif(not __import__("battle_rl.actor").actor.available(),
                                reason="play: process needs fork and shared memory")


def stream_of(tmp_path, play: str, seed: int = 3):
    """The default recipe's rollout stream on small settings (random and scripted opponents
    and self-play; both teams stored, flips), without a Trainer: the weights never change."""
    cfg = tiny_config("ddqn", tmp_path / play, play=play, seed=seed)
    with open_dict(cfg):
        cfg.opponent.weights.scripted = 1
        cfg.hparams.batch_size = 32
    torch.manual_seed(seed)
    module, dataset, _ = build(cfg, tmp_path / play)
    dataset.play_in_process = plays_in_process(cfg)
    return module, dataset


def test_the_actor_serves_the_inline_stream_batch_for_batch(tmp_path):
    """With weights that do not change, the lag of one update is nothing: the actor's batches,
    rows, flips and counters are the inline stream's, batch for batch, over several episodes."""
    _, inline = stream_of(tmp_path, "inline")
    _, process = stream_of(tmp_path, "process")
    assert process.play_in_process and not inline.play_in_process
    a, b = iter(inline), iter(process)
    try:
        for _ in range(60):
            x, y = next(a), next(b)
            assert process.actor is not None and process.actor.process.is_alive()
            assert x.keys() == y.keys()
            for key in x:
                assert torch.equal(x[key], y[key]), key
            for key in ("cycles", "episodes", "agent_steps", "batches", "last_episode"):
                assert getattr(inline, key) == getattr(process, key), key
        assert inline.episodes >= 2  # episodes of 20 cycles ended and new ones began
        # the logs read the actor's replay (this process's copy stays empty)
        assert len(process.buffer) == 0
        assert 0 < process.log_metrics()["rollout/buffer_size"] <= process.buffer.capacity
        # the state a checkpoint gets is the actor's (it played the next batch already)
        state = process.state_dict()
        assert state["cycles"] >= inline.cycles and state["batches"] == inline.batches + 1
    finally:
        process.close()
    assert process.actor is None and process.cycles == state["cycles"]


def test_an_error_in_the_actor_stops_the_learner_with_its_traceback(tmp_path):
    _, stream = stream_of(tmp_path, "process")

    def broken():
        raise ValueError("the engine broke")

    stream.play_cycle = broken  # the forked actor inherits it
    with pytest.raises(RuntimeError, match="(?s)actor process.*failed.*the engine broke"):
        next(iter(stream))
    stream.close()


def test_a_run_that_plays_in_a_process_repeats_and_keeps_its_state(tmp_path):
    """The same seed gives the same weights (the actor gets the learner's weights at fixed
    points of its program); the checkpoint holds the actor's counters, the self-play
    snapshots it was handed and the games it played against them, and its replay."""
    extra = {"opponent.weights.self_play": 3, "self_play.every_n_steps": 4, "play": "process"}
    first = tiny_train("ddqn", tmp_path / "a", **extra)
    second = tiny_train("ddqn", tmp_path / "b", **extra)
    assert first["steps"] == second["steps"] == 12
    ckpt_a = torch_load(tmp_path / "a" / "checkpoints" / "last.ckpt")
    ckpt_b = torch_load(tmp_path / "b" / "checkpoints" / "last.ckpt")
    for key, value in ckpt_a["state_dict"].items():
        assert torch.equal(value, ckpt_b["state_dict"][key]), key
    rollout = ckpt_a["rollout"]
    assert rollout["cycles"] == first["cycles"] > 0 and rollout["batches"] >= 12
    pool = next(o for o in rollout["opponent"]["opponents"] if "snapshots" in o)  # self-play
    assert [s["step"] for s in pool["snapshots"]] == [4, 8, 12][:len(pool["snapshots"])]
    assert len(pool["snapshots"]) >= 2
    replay = np.load(tmp_path / "a" / "checkpoints" / "replay.npz")
    assert int(replay["size"]) > 0 and replay["ready"].any()


def test_play_is_checked_before_any_work():
    with pytest.raises(ConfigError, match="^play='thread' is not allowed"):
        preflight(compose_overrides("config", ["play=thread"]), None)
    with pytest.raises(ConfigError, match="^play=process is for the replay learners"):
        plays_in_process(compose_overrides("config", ["algo=ippo", "play=process"]))
    assert plays_in_process(compose_overrides("config", ["algo=qmix", "play=process"]))
    assert not plays_in_process(compose_overrides("config", ["play=process",
                                                             "trainer.accelerator=gpu"]))


def test_the_actor_ends_with_the_learner(tmp_path):
    """A learner that dies without a word (a crash, a kill) leaves no actor behind: the actor
    reads the end of its pipe and exits."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = f"""
import os, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_actor import stream_of
_, stream = stream_of(Path({str(tmp_path)!r}), "process")
next(iter(stream))
print(stream.actor.process.pid, flush=True)
os._exit(1)  # no clean-up: as a crash would
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parent.parent)
    pid = int(out.stdout.split()[-1])
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            state = next(line for line in status.read_text().splitlines()
                         if line.startswith("State:"))
        except FileNotFoundError:
            return
        if "Z" in state.split()[1]:  # exited (not reaped by this container's init)
            return
        time.sleep(0.2)
    raise AssertionError(f"the actor {pid} outlived its learner")


def test_without_fork_or_shared_memory_the_run_plays_inline_and_says_so(tmp_path, monkeypatch,
                                                                          capsys):
    import battle_rl.actor

    monkeypatch.setattr(battle_rl.actor, "available", lambda: False)
    summary = tiny_train("ddqn", tmp_path / "run", play="process")
    assert summary["steps"] == 12
    out = " ".join(capsys.readouterr().out.split())
    assert "play=process needs a CPU learner, fork and shared memory: this run plays the game " \
           "inline" in out
