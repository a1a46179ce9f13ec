"""The game layer and the batched evaluator against the real game."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from battle_rl.env import BattleEnv, winner
from battle_rl.evaluation import Evaluator, summarize
from battle_rl.league.opponents import RandomOpponent, make_mix
from battle_rl.networks import QNetwork

from conftest import needs_opponents


def test_team_arrays_and_alive_mask():
    env = BattleEnv(max_cycles=30)
    obs = env.reset(seed=3)
    assert obs["blue"].shape == (81, 13, 13, 5) and obs["red"].dtype == np.float32
    assert env.alive["blue"].all() and env.alive["red"].all()
    assert env.state().shape == (45, 45, 5)
    rng = np.random.default_rng(0)
    # red attacks a lot (actions 13..20), so agents die; check the bookkeeping
    total_died = {"red": 0, "blue": 0}
    for _ in range(30):
        step = env.step({"red": rng.integers(13, 21, 81), "blue": rng.integers(0, 21, 81)})
        for t in ("red", "blue"):
            total_died[t] += int(step.died[t].sum())
            assert (step.obs[t][~step.alive[t]] == 0).all()
            assert not (step.died[t] & step.alive[t]).any()
        if step.done:
            break
    assert step.done and step.truncated and env.cycle == 30
    for t in ("red", "blue"):
        assert (~env.alive[t]).sum() == total_died[t]


@pytest.mark.parametrize("seed", [0, 5])
def test_engine_path_plays_the_same_game_as_parallel_api(seed):
    """BattleEnv steps MAgent's engine directly; the dict API must give identical numbers."""
    from magent2.environments import battle_v4

    fast = BattleEnv(max_cycles=120)
    rng = np.random.default_rng(seed)
    fast.reset(seed=seed)
    log = []
    while True:
        acts = {t: rng.integers(0, 21, 81) for t in ("red", "blue")}
        acts["red"] = np.where(rng.random(81) < 0.6, rng.integers(13, 21, 81), acts["red"])
        step = fast.step(acts)
        log.append((acts, step))
        if step.done:
            break
    # played after, not interleaved: the engine's random numbers are per process
    ref = battle_v4.parallel_env(map_size=45, max_cycles=120)
    ref.reset(seed=seed)
    ref.team_sizes = [ref.env.get_num(h) for h in ref.handles]  # magent2's reset bug, see env.py
    deaths = 0
    for acts, step in log:
        o, r, term, trunc, _ = ref.step(
            {a: int(acts[a.split("_")[0]][int(a.split("_")[1])]) for a in ref.agents})
        for a in o:
            team, i = a.split("_")[0], int(a.split("_")[1])
            if not term[a]:
                assert np.array_equal(step.obs[team][i], o[a])
            assert step.reward[team][i] == np.float32(r[a])
            assert step.died[team][i] == term[a]
            deaths += term[a]
    assert not ref.agents and len(log) == 120 and deaths > 0


def test_kills_follow_course_rule_and_dead_slots_ignored():
    env = BattleEnv(max_cycles=300)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    kills = {"red": 0, "blue": 0}
    while True:
        step = env.step({"red": rng.integers(0, 21, 81), "blue": rng.integers(0, 21, 81)})
        for t in kills:
            kills[t] += step.kills[t]
            assert step.kills[t] == int((step.reward[t] > 4.5).sum())
        if step.done:
            break
    assert env.cycle == 300 or not step.alive["red"].any() or not step.alive["blue"].any()


def test_hurt_costs_each_hit_an_agent_takes():
    """reward.hurt: the same game played with and without it differs, cycle by cycle, by
    hurt x the hits the surviving agents took; with nobody dying in a cycle, those are all the
    hits the other team landed (its reward: 1 per hit, 5 per kill, nothing else here)."""
    from battle_rl.league.opponents import ScriptedOpponent

    game = dict(step_reward=0.0, dead_penalty=0.0, attack_penalty=0.0, attack_opponent_reward=1.0)
    plain, shaped = BattleEnv(max_cycles=80, reward=game), \
        BattleEnv(max_cycles=80, reward={**game, "hurt": -0.5})
    red, blue = ScriptedOpponent(advance_dx=+1), ScriptedOpponent(advance_dx=-1)
    obs, _ = plain.reset(seed=5), shaped.reset(seed=5)
    checked = 0
    for _ in range(80):
        alive = plain.alive
        actions = {"red": red.act(obs["red"], alive["red"]),
                   "blue": blue.act(obs["blue"], alive["blue"])}
        a, b = plain.step(actions), shaped.step(actions)
        for team, them in (("blue", "red"), ("red", "blue")):
            taken = -(b.reward[team] - a.reward[team]).sum() / 0.5
            landed = a.reward[them].sum() - 5 * a.kills[them]
            assert taken == pytest.approx(round(taken)) and 0 <= taken <= landed + 1e-4
            if not a.died[team].any():
                assert taken == pytest.approx(landed)
                checked += landed > 0
        obs = a.obs
        if a.done:
            break
    assert checked > 10  # cycles with hits and no deaths were checked


def test_same_seed_replays_same_episode():
    ev = Evaluator(max_cycles=40, n_envs=2)
    torch.manual_seed(0)
    net = QNetwork().eval()
    a = ev.play(net, RandomOpponent(seed=5), episodes=3, seed=7)
    b = ev.play(net, RandomOpponent(seed=5), episodes=3, seed=7)
    assert [r.blue_reward for r in a] == [r.blue_reward for r in b]
    assert [r.seed for r in a] == [7, 8, 9]


@pytest.mark.parametrize("red_kind", ["net", "random"])
def test_results_do_not_depend_on_batching_or_threads(red_kind):
    """Game i is the game of seed + i, however many games run side by side or in threads."""
    from battle_rl.league.opponents import NetOpponent

    torch.manual_seed(0)
    net = QNetwork().eval()
    red = NetOpponent(QNetwork().eval(), "r") if red_kind == "net" else RandomOpponent(seed=3)

    def key(results):
        return [(r.seed, r.blue_kills, r.red_kills, round(r.blue_reward, 5), r.cycles)
                for r in results]

    one = key(Evaluator(max_cycles=40, n_envs=1).play(net, red, 5, seed=11))
    assert key(Evaluator(max_cycles=40, n_envs=3).play(net, red, 5, seed=11)) == one
    assert key(Evaluator(max_cycles=40, n_envs=2, workers=2).play(net, red, 5, seed=11)) == one
    assert [s for s, *_ in one] == [11, 12, 13, 14, 15]


def test_summary_counts_verdicts():
    from battle_rl.evaluation import EpisodeResult

    rs = [EpisodeResult(0, 1.0, 0.0, 10, 2, 300), EpisodeResult(1, 0.0, 1.0, 2, 10, 300),
          EpisodeResult(2, 0.5, 0.5, 4, 2, 300)]
    s = summarize(rs)
    assert (s["win"], s["draw"], s["lose"]) == (1, 1, 1)
    assert s["blue_kills"] == np.mean([10, 2, 4])
    assert [r.winner for r in rs] == [winner(10, 2), winner(2, 10), winner(4, 2)]


@needs_opponents
def test_mix_samples_every_opponent(opponents_dir):
    mix = make_mix({"random": 1, "pretrained": 1, "final": 1}, opponents_dir, seed=0)
    seen = set()
    for _ in range(30):
        mix.new_episode()
        seen.add(mix.name)
    assert seen == {"random", "pretrained", "final"}
