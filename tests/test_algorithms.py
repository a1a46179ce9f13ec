"""Every algorithm of conf/algo/ (found by globbing, so new ones are picked up): a tiny run,
its exported policy and checkpoint played in the evaluator on both sides, a resumed run, and
bad input rejected in one line. Runs are in-process (``training.train`` with the composed
configuration, what train.py calls): a subprocess per run would cost more than the run itself;
tests/test_train.py and test_reliability.py cover the command line and its resume."""

from __future__ import annotations

import pytest
import torch

from battle_rl.config import ConfigError, compose_overrides, validate_train
from battle_rl.errors import PolicyLoadError
from battle_rl.evaluation import Evaluator
from battle_rl.networks import load_policy
from battle_rl.opponents import NetOpponent, RandomOpponent
from battle_rl.sides import Mirrored

from conftest import OPPONENTS, ROOT, TINY

ALGOS = sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))

# TINY, with replay sizes that suit agent-transition and team-step learners alike
# (a team learner's 400 rows are allocated lazily and only a few are written)
SMALL = [o for o in TINY if not o.startswith(("hparams.", "trainer.max_steps", "env."))] + [
    "env.max_cycles=10", "trainer.max_steps=20", "hparams.buffer_size=400",
    "hparams.batch_size=8", "hparams.warmup=64", "checkpoint_every=10", "print_config=false",
    "trainer.enable_progress_bar=false", f"opponents_dir={OPPONENTS}",
]


def train(overrides: list[str], run_dir):
    from battle_rl.training import train as train_run

    cfg = compose_overrides("config", overrides)
    validate_train(cfg)
    return train_run(cfg, run_dir)


def play(blue, red, games: int = 2):
    """Kills per game, blue vs red, in short games of the batched evaluator."""
    return [(r.blue_kills, r.red_kills, r.cycles) for r in
            Evaluator(max_cycles=10, n_envs=2).play(blue, red, games, seed=3)]


@pytest.mark.parametrize("algo", ALGOS)
def test_tiny_run_export_evaluate_resume(tmp_path, algo):
    out = tmp_path / "run"
    overrides = [f"algo={algo}", *SMALL]
    assert train(overrides, out)["policy"] == str(out / "policy.pt")
    ckpt_path = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 20

    # the exported policy: one argument works for every algorithm, as a course harness calls it
    policy = load_policy(out / "policy.pt")
    assert policy(torch.zeros(3, 5, 13, 13)).shape == (3, 21)
    # it plays both sides (red through the mirror) in the batched evaluator, and the
    # checkpoint plays the same games as the exported policy
    from_ckpt = load_policy(ckpt_path)
    as_blue = play(NetOpponent(policy, algo), RandomOpponent(0))
    assert as_blue == play(NetOpponent(from_ckpt, algo), RandomOpponent(0))
    assert [c for _, _, c in as_blue] == [10, 10]
    as_red = play(RandomOpponent(0), NetOpponent(Mirrored(policy).eval(), algo))
    assert as_red == play(RandomOpponent(0), NetOpponent(Mirrored(from_ckpt).eval(), algo))

    # resume: the same run goes on from its checkpoint to a larger step budget
    train([*overrides, f"resume={out}", "trainer.max_steps=30"], out)
    resumed = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 30
    assert resumed["hyper_parameters"]["name"] == ckpt["hyper_parameters"]["name"]

    # a checkpoint whose weights do not fit its own network: one clear error
    if "hidden" in (ckpt["hyper_parameters"].get("network") or {}):
        ckpt["hyper_parameters"]["network"]["hidden"] = [7]
        bad = tmp_path / "bad.ckpt"
        torch.save(ckpt, bad)
        with pytest.raises(PolicyLoadError, match="do not fit"):
            load_policy(bad)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("override,key", [("hparams.gamma=1.5", "hparams.gamma"),
                                          ("hparams.batch_size=0", "hparams.batch_size")])
def test_bad_hyperparameters_rejected_before_any_work(algo, override, key):
    cfg = compose_overrides("config", [f"algo={algo}", override])
    with pytest.raises(ConfigError, match=key) as e:
        validate_train(cfg)
    assert "\n" not in str(e.value)


def test_every_algorithm_is_registered():
    from battle_rl.algos import ALGORITHMS

    for algo in ALGOS:
        cfg = compose_overrides("config", [f"algo={algo}"])
        assert cfg.algo.name in ALGORITHMS, f"conf/algo/{algo}.yaml: name {cfg.algo.name}"


def test_equal_budget_rejects_an_unknown_algorithm_before_training(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("equal_budget",
                                                  ROOT / "benchmarks" / "equal_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--algos", "ddqn", "nope", "--minutes", "1"]) == 2
    assert "algo='nope' is not an option" in capsys.readouterr().err
    assert module.duration(3725) == "00:01:02:05"
