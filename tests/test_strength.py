"""The passive opponent (it retreats to its own edge and holds, deterministically) and the
strength benchmark's code path on tiny settings."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from battle_rl.env import BattleEnv
from battle_rl.league.opponents import PassiveOpponent, make_opponent
from battle_rl.league.sides import ATTACKS, MOVES

ROOT = Path(__file__).resolve().parent.parent
STAY = MOVES.index((0, 0))


def positions(env, team):
    return env.engine.get_pos(env.handles[("red", "blue").index(team)]).copy()


def play(seed, passive_team="red", cycles=60, other_policy=None):
    """The passive team against a team that stays put (or ``other_policy``); its positions at
    every cycle."""
    env = BattleEnv(45, 300)
    obs = env.reset(seed=seed)
    policy = PassiveOpponent(home_dx=-1 if passive_team == "red" else +1)
    other = "blue" if passive_team == "red" else "red"
    trace = [positions(env, passive_team)]
    for _ in range(cycles):
        theirs = (np.full(81, STAY) if other_policy is None
                  else other_policy.act(obs[other], env.alive[other]))
        step = env.step({passive_team: policy.act(obs[passive_team], env.alive[passive_team]),
                         other: theirs})
        obs = step.obs
        trace.append(positions(env, passive_team))
        if step.done:
            break
    return trace


@pytest.mark.parametrize("team", ["red", "blue"])
def test_passive_retreats_to_its_own_edge_and_holds(team):
    trace = play(seed=3, passive_team=team)
    x0, x_end = trace[0][:, 0].mean(), trace[-1][:, 0].mean()
    if team == "red":  # red's edge is at small x
        assert x_end < x0 - 4 and x_end < 4
    else:
        assert x_end > x0 + 4 and x_end > 40
    # then it holds: nobody moves over the last 20 cycles
    assert all(np.array_equal(trace[-21], t) for t in trace[-20:])


def test_passive_is_deterministic_under_a_seed():
    """Against a team that comes to fight: the same seed replays the same game, fights and
    deaths included."""
    from battle_rl.league.opponents import ScriptedOpponent

    a = play(5, cycles=120, other_policy=ScriptedOpponent(advance_dx=-1))
    b = play(5, cycles=120, other_policy=ScriptedOpponent(advance_dx=-1))
    assert len(a[-1]) < 81  # they fought: some passive agents died
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def adjacent_enemy_obs(n=4):
    obs = np.zeros((n, 13, 13, 5), np.float32)
    obs[:, 6, 6, 1] = 1  # itself
    obs[:, 6, 7, 3] = 1  # an enemy right next to it (dy=0, dx=+1)
    obs[:, 6, 7, 4] = 0.5
    return obs


def test_passive_attacks_only_what_comes_next_to_it_and_strict_never_attacks():
    obs = adjacent_enemy_obs()
    slots = np.arange(len(obs))
    attack = len(MOVES) + ATTACKS.index((0, 1))
    assert (PassiveOpponent(home_dx=-1).act_rows(obs, slots) == attack).all()
    assert (PassiveOpponent(home_dx=-1, attack=False).act_rows(obs, slots) < len(MOVES)).all()
    far = np.zeros_like(obs)
    far[:, 6, 6, 1] = 1
    far[:, 6, 11, 3] = 1  # an enemy in view, not adjacent: no attack, a move away from it
    actions = PassiveOpponent(home_dx=-1).act_rows(far, slots)
    assert (actions < len(MOVES)).all()
    assert all(MOVES[a][1] < 0 for a in actions)  # toward red's own edge, away from the enemy


def test_passive_by_name():
    assert make_opponent("passive", ".").name == "passive"
    strict = make_opponent("passive_strict", ".")
    assert strict.name == "passive_strict" and not strict.attack


def test_strength_benchmark_code_path(tmp_path):
    """A tiny training run, its snapshots' curve and the gauntlet on both sides."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "strength.py"), "--train", "--seeds", "0",
           "--every", "1", "--episodes", "1", "--curve-episodes", "1", "--max-cycles", "10",
           "--label", "tiny", "--results", str(tmp_path), "--out", str(tmp_path / "runs"),
           "trainer.max_steps=40", "env.max_cycles=20", "hparams.warmup=200",
           "hparams.batch_size=32", "eval.every_n_steps=0", "eval.final_episodes=0",
           "logger=none", "opponent=passive"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "strength-tiny.json").read_text())
    table = result["tables"]["tiny-s0"]
    for opponent in ("scripted", "passive", "passive_strict", "random", "champion"):
        assert set(table[opponent]) == {"blue", "red"}  # both sides played
        assert sum(table[opponent]["blue"][k] for k in ("win", "draw", "lose")) == 1
    assert {r["name"] for r in result["ratings"]} >= {"tiny-s0", "scripted", "passive"}
    assert result["runs"][0]["snapshots"], "no snapshot of the time-to-strength curve"
    assert (tmp_path / "strength-tiny.png").is_file()


def test_strength_benchmark_screens_a_policy_against_chosen_opponents(tmp_path):
    """--only: the named gauntlet opponents and no others, both sides; an unknown name is
    refused with the gauntlet's names."""
    from battle_rl.networks import QNetwork, export_policy

    policy = export_policy(QNetwork(conv_channels=[], hidden=[8], action_mask=True),
                           tmp_path / "policy.pt")
    base = [sys.executable, str(ROOT / "benchmarks" / "strength.py"), "--policy",
            f"p={policy}", "--episodes", "1", "--max-cycles", "10", "--label", "only",
            "--results", str(tmp_path)]
    done = subprocess.run(base + ["--only", "scripted", "passive"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "strength-only.json").read_text())
    assert set(result["tables"]["p"]) == {"scripted", "passive"} == set(result["gauntlet"])
    assert all(set(sides) == {"blue", "red"} for sides in result["tables"]["p"].values())
    refused = subprocess.run(base + ["--only", "nobody"], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode != 0 and "not in the gauntlet: nobody" in refused.stderr


def test_weight_average_benchmark_code_path(tmp_path):
    """A tiny run; its policy and the mean of its weights from half-way play both sides."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "weight_average.py"), "--seeds", "0",
           "--after", "0.5", "--opponents", "scripted", "passive", "--episodes", "1",
           "--max-cycles", "10", "--label", "tiny", "--results", str(tmp_path),
           "--out", str(tmp_path / "runs"), "trainer.max_steps=40", "env.max_cycles=20",
           "hparams.warmup=200", "hparams.batch_size=32", "eval.every_n_steps=0",
           "logger=none", "opponent=passive", "threads=1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads((tmp_path / "weight-average-tiny.json").read_text())["runs"][0]
    assert run["averaged"] == {"0.5": 21}  # updates 20..40 of 40
    assert run["policy_source"] == "final"  # the run's own averaging is off
    for name in ("run", "mean-from-0.5"):
        for opponent in ("scripted", "passive"):
            sides = run["tables"][name][opponent]
            assert {s: sum(sides[s][k] for k in ("win", "draw", "lose")) for s in sides} == \
                {"blue": 1, "red": 1}
    assert (tmp_path / "runs" / "seed0" / "mean-from-0.5.pt").is_file()
