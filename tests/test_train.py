"""End-to-end: tiny training runs and evaluation through the real entry points."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, evaluate_policy_and_checkpoint, run_script


def test_tiny_run_writes_policy_and_prints_its_path_last(tmp_path):
    out = tmp_path / "run"
    r = run_script("train.py", *TINY, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last == str(out / "policy.pt")
    policy = torch.jit.load(last)
    assert policy(torch.zeros(5, 5, 13, 13)).shape == (5, 21)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    metrics = (out / "csv" / "metrics.csv").read_text()
    for key in ("train/td_loss", "train/q_mean", "train/epsilon", "perf/agent_steps_per_s"):
        assert key in metrics


def test_acceptance_tiny_command_with_eval(tmp_path, opponents_dir):
    """`env.max_cycles=20 trainer.max_steps=50 logger=csv` (defaults otherwise) works."""
    out = tmp_path / "run"
    r = run_script("train.py", "env.max_cycles=20", "trainer.max_steps=50", "logger=csv",
                   "eval.final_episodes=3", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads((out / "eval.json").read_text())
    assert set(table) == {"random", "pretrained", "final", "scripted", "passive", "champion"}
    for row in table.values():
        assert row["win"] + row["draw"] + row["lose"] == 3


def test_wandb_offline_default_logs_config(tmp_path):
    out = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("logger")]
    r = run_script("train.py", *overrides, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # offline runs keep their records (config included) in the .wandb file until `wandb sync`
    record = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"hparams" in record and b"batch_size" in record and b"opponents_dir" in record


def test_checkpoint_evaluates_like_exported_policy(tmp_path, opponents_dir):
    out = tmp_path / "run"
    r = run_script("train.py", *TINY, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    results = evaluate_policy_and_checkpoint(out, tmp_path, max_cycles=30)
    for stdout in results["stdout"].values():
        assert "Win" in stdout and "Draw" in stdout and "Lose" in stdout
    assert results["policy"] == results["ckpt"]


@pytest.mark.parametrize("args,expected", [
    (["algo=nope"], "algo='nope' is not an option of 'algo'"),
    (["hparams.epsilon.start=1.5"], "hparams.epsilon.start=1.5"),
    (["hparams.epsilon.end=-0.1"], "hparams.epsilon.end=-0.1"),
    (["opponent=pretrained", "opponents_dir=/nonexistent/folder"], "red.pt"),
    (["trainer.precision=16-mixed"], "on a CPU use bf16-mixed"),
    (["hparams.lr_decay.after=1.5"], "hparams.lr_decay.after=1.5"),
    (["hparams.lr_decay.after=0.5", "trainer.max_steps=-1", "trainer.max_time=null"],
     "needs a budget"),
])
def test_bad_input_one_line_before_any_environment(tmp_path, args, expected):
    out = tmp_path / "run"
    r = run_script("train.py", *args, f"hydra.run.dir={out}", timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "policy.pt").exists() and not (out / "checkpoints").exists()


def test_evaluate_missing_checkpoint_one_line(tmp_path):
    r = run_script("evaluate.py", f"checkpoint={tmp_path / 'nope.pt'}", "opponents=[random]",
                   f"hydra.run.dir={tmp_path / 'ev'}", timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'nope.pt'}"]


def test_max_time_budget_ends_cleanly_with_best_policy(tmp_path):
    """trainer.max_time stops training; policy.pt is still written, from the best evaluation."""
    out = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith(("trainer.max_steps", "eval.every"))]
    r = run_script("train.py", *overrides, "trainer.max_steps=-1", "trainer.max_time=00:00:00:08",
                   "eval.every_n_steps=10", "eval.episodes=1", "eval.opponents=[random]",
                   "eval.stop_win_rate=null", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(out / "policy.pt")
    assert "Time limit reached" in (out / "train.log").read_text()  # stopped by the budget
    assert (out / "eval_history.jsonl").read_text().splitlines()  # evaluations ran
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] > 10


def test_evaluation_as_red_reads_from_the_learners_side():
    """The shipped champion (trained as blue) plays red through the mirror and wins; the rows
    count its wins and kills as its own, and passive_strict (it never attacks) kills nothing."""
    from battle_rl.evaluation import Evaluator, evaluate_as_red
    from battle_rl.league.opponents import PassiveOpponent, RandomOpponent, champion_file
    from battle_rl.networks import load_policy

    net = load_policy(champion_file())
    table = evaluate_as_red(net, {"random": RandomOpponent(0),
                                  "passive_strict": PassiveOpponent(attack=False)},
                            episodes=2, evaluator=Evaluator(max_cycles=60))
    assert table["random"]["win"] == 2 and table["random"]["lose"] == 0
    assert table["random"]["blue_kills"] > 60 > table["random"]["red_kills"]
    assert table["passive_strict"]["red_kills"] == 0


def test_bf16_on_a_cpu_without_bfloat16_instructions_is_named(monkeypatch):
    """The champion recipe trains in bf16-mixed for speed; a CPU that only emulates bfloat16
    makes it slower, and the run says so (not on a GPU, not in float32)."""
    from omegaconf import OmegaConf

    from battle_rl.training import emulated_bf16

    def cfg(precision, accelerator="cpu"):
        return OmegaConf.create({"trainer": {"precision": precision, "accelerator": accelerator}})

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False)
    assert emulated_bf16(cfg("bf16-mixed"))
    assert not emulated_bf16(cfg("32-true"))
    assert not emulated_bf16(cfg("bf16-mixed", accelerator="gpu"))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert not emulated_bf16(cfg("bf16-mixed"))


def test_the_default_run_trains_in_bfloat16_only_where_it_is_native(monkeypatch):
    """DDQN's recipe picks bf16-mixed on a CPU that computes bfloat16 (faster), float32 on
    one that would emulate it (slower); an explicit trainer.precision still wins."""
    from battle_rl.config import compose_overrides

    def precision(*overrides):
        return compose_overrides("config", list(overrides)).trainer.precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision() == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision() == "32-true"
    assert precision("trainer.precision=bf16-mixed") == "bf16-mixed"


def test_rematch_keeps_the_weights_that_play_better(capsys):
    """eval.rematch_episodes: candidate weights play new games, and each other; the better
    are kept (the first of equals), and the network ends with its own weights either way."""
    from battle_rl.callbacks import EvalCallback
    from battle_rl.league.opponents import PassiveOpponent, RandomOpponent, champion_file
    from battle_rl.networks import load_policy

    strong = load_policy(champion_file()).state_dict()
    idle = {k: torch.zeros_like(v) for k, v in strong.items()}  # all actions valued alike
    own = {k: torch.full_like(v, 0.5) for k, v in strong.items()}
    cb = EvalCallback({"random": RandomOpponent(0)}, every_n_steps=1, episodes=1, max_cycles=30,
                      sides=("blue", "red"))
    net = load_policy(champion_file())
    for candidates, winner in (({"a": strong, "b": idle}, "a"), ({"a": idle, "b": strong}, "b")):
        net.load_state_dict(own)
        assert cb.rematch(net, candidates, episodes=2) == winner
        assert all(torch.equal(v, own[k]) for k, v in net.state_dict().items())
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert f"keeping {winner}" in line
        assert line.count("vs a ") == line.count("vs b_as_red ") == 1
        assert line.count("random_as_red ") == 2
    # equals: the first is kept
    three = {"idle": idle, "strong": strong, "strong too": strong}
    assert cb.rematch(net, three, episodes=1) == "strong"
    # against an opponent neither can beat in time (it never fights and runs away), the
    # two tie; playing each other, the champion wins
    cb = EvalCallback({"passive_strict": PassiveOpponent(attack=False)}, every_n_steps=1,
                      episodes=1, max_cycles=80, sides=("blue", "red"))
    for candidates, winner in (({"a": strong, "b": idle}, "a"), ({"a": idle, "b": strong}, "b")):
        assert cb.rematch(net, candidates, episodes=2) == winner


def test_the_mean_and_the_last_weights_play_it_out_for_policy_pt(tmp_path):
    """With weight averaging and eval.rematch_episodes, the mean and the last weights are the
    candidates, and policy.pt holds the one the rematch kept."""
    out = tmp_path / "run"
    r = run_script("train.py", *TINY, "hparams.weight_average.after=0.5",
                   "eval.rematch_episodes=1", "eval.opponents=[random]", "eval.sides=[blue,red]",
                   f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("rematch"))
    kept = line.rsplit("keeping ", 1)[1]
    assert kept in ("mean", "last") and "vs last_as_red" in line and "vs mean " in line
    holds = {"mean": "the mean of the last 16 updates' weights", "last": "the last weights"}
    assert f"policy.pt holds {holds[kept]}" in r.stdout
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    mean = next(v for k, v in ckpt["callbacks"].items() if "WeightAverage" in k)["average"]
    policy = torch.jit.load(out / "policy.pt")
    same = all(torch.equal(v, mean[f"module.{k}"]) for k, v in policy.state_dict().items())
    assert same == (kept == "mean")


def test_evaluation_during_training_on_both_sides(tmp_path):
    out = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("eval.")]
    r = run_script("train.py", *overrides, "eval.every_n_steps=10", "eval.episodes=1",
                   "eval.opponents=[random]", "eval.sides=[blue,red]", "eval.final_episodes=0",
                   f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads((out / "eval_history.jsonl").read_text().splitlines()[0])
    assert set(first["table"]) == {"random", "random_as_red"}
    assert "eval/win_rate/random_as_red" in first and "random_as_red" in r.stdout
    bad = run_script("train.py", "eval.sides=[green]", f"hydra.run.dir={tmp_path / 'bad'}",
                     timeout=60)
    assert bad.returncode == 2 and "eval.sides" in bad.stderr


def test_lr_decay_holds_then_falls_linearly_to_its_end():
    from types import SimpleNamespace

    from battle_rl.callbacks import LRDecay, budget_fraction

    decay = LRDecay(after=0.6, to=0.1)
    assert decay.scale(0.0) == decay.scale(0.6) == 1.0
    assert decay.scale(0.8) == pytest.approx(0.55)
    assert decay.scale(1.0) == pytest.approx(0.1)
    steps = SimpleNamespace(max_steps=200, global_step=50, callbacks=[])
    assert budget_fraction(steps) == 0.25
    assert budget_fraction(SimpleNamespace(max_steps=-1, global_step=50, callbacks=[])) is None


def test_lr_decay_in_a_run_reaches_its_end_and_is_logged(tmp_path):
    """hparams.lr_decay lowers the optimiser's rate over the end of trainer.max_steps."""
    out = tmp_path / "run"
    r = run_script("train.py", *TINY, "hparams.lr=1e-3", "hparams.lr_decay.after=0.5",
                   "hparams.lr_decay.to=0.2", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == pytest.approx(1e-3)
    # the last update (step 29 of 30) ran at 1 - 0.8 * (29/30 - 0.5) / 0.5 of the rate
    assert group["lr"] == pytest.approx(1e-3 * (1 - 0.8 * (29 / 30 - 0.5) / 0.5))
    assert "train/lr_scale" in (out / "csv" / "metrics.csv").read_text()


def test_weight_average_is_the_mean_of_the_weights_over_the_end_of_the_budget():
    """hparams.weight_average: from fraction `after` of the budget, every update's weights go
    into a running mean, which replaces the policy network's weights when training ends; a
    checkpoint carries the mean so far, and a resumed run continues it."""
    from types import SimpleNamespace

    from battle_rl.callbacks import WeightAverage

    class Module:
        def __init__(self):
            self.net = torch.nn.Linear(2, 1)

        def policy_net(self):
            return self.net

    def play(callback, module, steps, max_steps=10):
        for step in steps:  # the weights of update `step` are all `step`
            torch.nn.init.constant_(module.net.weight, float(step))
            trainer = SimpleNamespace(max_steps=max_steps, global_step=step, callbacks=[])
            callback.on_train_batch_end(trainer, module, None, None, step)

    module, average = Module(), WeightAverage(after=0.6)
    play(average, module, range(1, 11))  # steps 6..10 are in the last 40%
    assert average.averaged() == 5
    average.on_train_end(None, module)
    assert torch.all(module.net.weight == 8.0)  # mean of 6, 7, 8, 9, 10

    # interrupted after step 7 and resumed from its checkpoint: the same mean at the end
    module, first = Module(), WeightAverage(after=0.6)
    play(first, module, range(1, 8))
    state = first.state_dict()
    resumed = WeightAverage(after=0.6)
    resumed.load_state_dict(state)
    play(resumed, module, range(8, 11))
    resumed.on_train_end(None, module)
    assert resumed.averaged() == 5 and torch.all(module.net.weight == 8.0)

    # before the window nothing is averaged and the last weights stay
    module, early = Module(), WeightAverage(after=0.95)
    play(early, module, range(1, 10))
    early.on_train_end(None, module)
    assert early.averaged() == 0 and early.state_dict() == {}
    assert torch.all(module.net.weight == 9.0)


def test_weight_average_in_a_run_is_what_policy_pt_and_the_checkpoint_hold(tmp_path):
    out = tmp_path / "run"
    r = run_script("train.py", *TINY, "hparams.weight_average.after=0.5", "checkpoint_every=20",
                   "eval.rematch_episodes=0", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if "WeightAverage" in k)["average"]
    assert int(state["n_averaged"]) == 16  # updates 15..30 of 30
    policy = torch.jit.load(out / "policy.pt")
    for name, value in policy.state_dict().items():
        assert torch.equal(value, state[f"module.{name}"])
        assert torch.equal(value, ckpt["state_dict"][f"q_net.{name}"])
    bad = run_script("train.py", *TINY, "hparams.weight_average.after=1.0", timeout=60)
    assert bad.returncode == 2 and "hparams.weight_average.after" in bad.stderr
