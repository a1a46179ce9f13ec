"""Every algorithm of conf/algo/ (found by globbing, so new ones are picked up): a tiny run,
its exported policy, evaluation of the policy and the checkpoint, resume, and bad input.

Runs go through ``battle_rl.training.train`` in this process (what ``train.py`` calls after
Hydra has composed the configuration): the entry points themselves are tested elsewhere
(tests/test_train.py), and one process saves seconds of start-up per run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

import battle_rl
from battle_rl.config import ConfigError, compose_overrides, validate_train
from battle_rl.evaluation import Evaluator, evaluate
from battle_rl.league.opponents import NetOpponent, RandomOpponent
from battle_rl.league.sides import Mirrored
from battle_rl.networks import load_policy
from battle_rl.safe_load import torch_load

ROOT = Path(__file__).resolve().parent.parent
ALGOS = sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml")
               if not p.stem.startswith("_"))
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

# tiny settings for any learner; each run takes those whose key its configuration has
TINY = {
    "env.max_cycles": 20, "trainer.max_steps": 12, "trainer.log_every_n_steps": 2,
    "trainer.enable_progress_bar": False, "checkpoint_every": 6, "print_config": False,
    "eval.every_n_steps": 0, "eval.final_episodes": 0, "opponent.weights.random": 1,
    "opponent.weights.pretrained": 0, "opponent.weights.final": 0,
    # replay learners (batch, buffer and warmup count team steps for VDN / QMIX)
    "hparams.batch_size": 8, "hparams.buffer_size": 400, "hparams.warmup": 16,
    # on-policy learners: 8-cycle rollouts, 2 x 2 minibatches each
    "hparams.rollout_cycles": 8, "hparams.epochs": 2, "hparams.minibatches": 2,
}


def tiny_config(algo: str, run_dir: Path, **extra):
    cfg = compose_overrides("config", [f"algo={algo}", "logger=csv"])
    with open_dict(cfg):
        for key, value in {**TINY, **extra}.items():
            node, *path, leaf = [cfg, *key.split(".")]
            for part in path:
                node = node.get(part) if node is not None else None
            if node is not None and (leaf in node or key in extra):
                node[leaf] = value
    validate_train(cfg)
    return cfg


def tiny_train(algo: str, run_dir: Path, **extra) -> dict:
    from battle_rl.training import train

    return train(tiny_config(algo, run_dir, **extra), run_dir)


@pytest.fixture(scope="module", params=ALGOS)
def tiny_run(request, tmp_path_factory):
    algo = request.param
    run_dir = tmp_path_factory.mktemp(f"run-{algo}")
    return algo, run_dir, tiny_train(algo, run_dir)


def test_every_algorithm_is_found():
    from battle_rl.algos import ALGORITHMS

    assert {"ddqn", "dqn", "mfq", "vdn", "qmix", "ippo", "mappo"} <= set(ALGOS)
    for algo in ALGOS:
        cfg = compose_overrides("config", [f"algo={algo}"])
        assert cfg.algo.name in ALGORITHMS, f"conf/algo/{algo}.yaml: name {cfg.algo.name}"


def test_tiny_run_exports_a_policy(tiny_run):
    algo, run_dir, summary = tiny_run
    assert summary["steps"] == 12 and summary["policy"] == str(run_dir / "policy.pt")
    policy = torch.jit.load(str(run_dir / "policy.pt"))
    out = policy(torch.rand(7, 5, 13, 13))  # one argument, whatever the learner
    assert out.shape == (7, 21) and torch.isfinite(out).all()
    ckpt = torch_load(run_dir / "checkpoints" / "last.ckpt")  # the safe loader reads it
    assert ckpt["hyper_parameters"]["name"] == algo and ckpt["global_step"] == 12
    assert "rollout/cycles" in (run_dir / "csv" / "metrics.csv").read_text()


def test_policy_and_checkpoint_evaluate_alike(tiny_run):
    """The exported policy and the checkpoint's network play the same games, on both sides
    (red through the mirror)."""
    algo, run_dir, _ = tiny_run
    nets = [load_policy(run_dir / f) for f in ("policy.pt", "checkpoints/last.ckpt")]
    tables = [evaluate(net, {"random": RandomOpponent(0)}, episodes=2, seed=3, max_cycles=15,
                       n_envs=2) for net in nets]
    assert tables[0] == tables[1]
    assert tables[0]["random"]["episodes"] == 2
    as_red = [[(r.blue_kills, r.red_kills, r.cycles) for r in Evaluator(max_cycles=15, n_envs=2)
               .play(RandomOpponent(0), NetOpponent(Mirrored(net).eval(), algo), 2, seed=3)]
              for net in nets]
    assert as_red[0] == as_red[1] and [c for _, _, c in as_red[0]] == [15, 15]


def test_resume_continues_step_and_rollout_counters(tiny_run, tmp_path):
    algo, run_dir, _ = tiny_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    before = torch_load(ckpt)
    summary = tiny_train(algo, run_dir, **{"resume": str(ckpt), "trainer.max_steps": 16})
    after = torch_load(ckpt)
    assert summary["steps"] == after["global_step"] == 16
    assert after["rollout"]["cycles"] >= before["rollout"]["cycles"]
    assert after["rollout"]["episodes"] >= before["rollout"]["episodes"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_passes_the_checks(experiment):
    """`+experiment=NAME` recipes (the champion's is the measured one) stay valid as the
    groups they override change."""
    cfg = compose_overrides("config", [f"+experiment={experiment}"])
    validate_train(cfg)
    assert cfg.trainer.max_time  # every recipe is a time budget


def test_the_default_run_is_the_fighter_and_the_report_stays_one_override_away():
    """`python train.py` trains DDQN against the scripted and passive teams and self-play, and
    its final table plays them; the report's recipe is still there, value for value."""
    cfg = compose_overrides("config", [])
    weights = cfg.opponent.weights
    assert cfg.algo.name == "ddqn" and min(weights.scripted, weights.passive, weights.self_play) > 0
    assert {"scripted", "passive"} <= set(cfg.eval.opponents) and cfg.eval.final_episodes == 30
    assert cfg.trainer.max_time == "00:00:02:00" and cfg.reward.approach > 0
    network = cfg.algo.network  # an MLP over the view that never picks an action that can't act
    assert list(network.conv_channels) == [] and network.action_mask and cfg.reward.hurt < 0
    # it reads walls and HP only, and its exploring agents play the scripted agent's moves
    assert list(network.channels) == [0, 2, 4] and cfg.hparams.explore_with == "scripted"
    # it plays in a second process while the learner updates
    assert cfg.play == "process"
    # the champion's recipe is the same run given 15 minutes and a replay of 5x the rows, more
    # games against red_final.pt, a higher cost per hit taken and the previous champion as a
    # rival, played inline (as its figures were measured)
    champion = compose_overrides("config", ["+experiment=champion"])
    assert champion.trainer.max_time == "00:00:15:00" and champion.play == "inline"
    assert champion.hparams.buffer_size == 5 * cfg.hparams.buffer_size
    assert champion.opponent.weights.final > cfg.opponent.weights.final
    assert champion.reward.hurt < cfg.reward.hurt
    rival = Path(champion.policies.champion_0_4_0)
    assert rival.is_file() and rival.parent == Path(battle_rl.__file__).parent / "assets"
    assert champion.opponent.weights.champion_0_4_0 > 0
    champion.trainer.max_time, champion.play = cfg.trainer.max_time, cfg.play
    champion.hparams.buffer_size = cfg.hparams.buffer_size
    champion.opponent.weights.final = cfg.opponent.weights.final
    champion.reward.hurt = cfg.reward.hurt
    with open_dict(champion):
        del champion.opponent.weights["champion_0_4_0"]
        del champion["policies"]["champion_0_4_0"]
    assert champion == cfg
    assert compose_overrides("config", ["+experiment=fighter"]) == cfg  # the name it had before
    report = compose_overrides("config", ["+experiment=report"])
    assert (report.hparams.lr, report.hparams.batch_size, report.hparams.episodes) == (1e-4, 128, 4)
    assert {k: w for k, w in report.opponent.weights.items() if w} == {"random": 1}
    assert list(report.algo.network.conv_channels) == [5, 5] and report.reward.approach == 0
    assert not report.algo.network.action_mask and report.reward.hurt == 0
    assert report.algo.network.channels is None and report.hparams.explore_with == "random"
    assert list(report.eval.opponents) == ["random", "pretrained", "final"]
    # the other algorithms keep their own recipes
    assert compose_overrides("config", ["algo=mfq"]).opponent.weights.scripted == 0
    assert compose_overrides("config", ["algo=qmix"]).hparams.batch_size != cfg.hparams.batch_size


@pytest.mark.parametrize("algo", ALGOS)
def test_bad_input_is_one_line_before_anything_runs(algo):
    for override in ("hparams.lr=-1", "hparams.gamma=1.5"):
        cfg = compose_overrides("config", [f"algo={algo}", override])
        with pytest.raises(ConfigError, match=f"^{override} is not allowed") as e:
            validate_train(cfg)
        assert "\n" not in str(e.value)
    # hyperparameters of the other family (replay vs on-policy) are refused by name
    other = "fast" if "rollout_cycles" in cfg.hparams else "ppo"
    with pytest.raises(ConfigError, match=f"algo={cfg.algo.name}") as e:
        validate_train(compose_overrides("config", [f"algo={algo}", f"hparams={other}"]))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("algo", ALGOS)
def test_bf16_mixed_learns_in_bfloat16_and_exports_float32(algo, tmp_path):
    """trainer.precision=bf16-mixed: the learner's layers compute in bfloat16 (autocast);
    acting (the rollouts, outside the training step) stays float32, and policy.pt is the
    float32 network."""
    learner, acting = set(), set()

    def record(module, inputs, out):
        if isinstance(module, torch.nn.Linear):
            if torch.is_grad_enabled():
                learner.add(out.dtype)
            elif not torch.is_autocast_enabled("cpu"):
                acting.add(out.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        # inline: the hook sees this process's forwards (an actor process's are its own)
        summary = tiny_train(algo, tmp_path / "run", **{"trainer.precision": "bf16-mixed",
                                                        "play": "inline"})
    finally:
        hook.remove()
    assert summary["steps"] == TINY["trainer.max_steps"]
    assert learner == {torch.bfloat16} and acting == {torch.float32}
    policy = load_policy(tmp_path / "run" / "policy.pt")
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    assert policy(torch.zeros(3, 5, 13, 13)).dtype == torch.float32
    with pytest.raises(ConfigError, match="^trainer.precision=8 is not allowed"):
        validate_train(compose_overrides("config", [f"algo={algo}", "trainer.precision=8"]))


def test_equal_budget_rejects_an_unknown_algorithm_before_training(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("equal_budget",
                                                  ROOT / "benchmarks" / "equal_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--algos", "ddqn", "nope", "--minutes", "1"]) == 2
    assert "algo='nope' is not an option" in capsys.readouterr().err
    assert module.duration(3725) == "00:01:02:05"
