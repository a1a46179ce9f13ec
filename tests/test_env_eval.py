"""The game layer and the batched evaluator against the real game."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from battle_rl.env import BattleEnv, winner
from battle_rl.evaluation import Evaluator, summarize
from battle_rl.league.opponents import NetOpponent, RandomOpponent, make_mix
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


def _play_seeded(env: BattleEnv, seed: int, max_cycles: int) -> list:
    """A whole episode: both teams scripted (they close in and fight, so agents die), a fifth
    of the actions random, all seeded."""
    from battle_rl.league.opponents import ScriptedOpponent

    rng = np.random.default_rng(seed)
    teams = {"red": ScriptedOpponent(advance_dx=+1), "blue": ScriptedOpponent(advance_dx=-1)}
    obs = env.reset(seed=seed)
    log = []
    for _ in range(max_cycles):
        alive = env.alive
        acts = {t: np.where(rng.random(81) < 0.2, rng.integers(0, 21, 81),
                            p.act(obs[t], alive[t])) for t, p in teams.items()}
        step = env.step(acts)
        obs = step.obs
        log.append((acts, step))
        if step.done:
            break
    return log


def _differences_from_magent2(log: list, seed: int, max_cycles: int) -> list[str]:
    """Replays ``log``'s actions on magent2's own ``battle_v4.parallel_env``, unpatched, and
    lists every cycle where observations, rewards, deaths or the episode's end differ."""
    from magent2.environments import battle_v4

    # played after, not interleaved: the engine's random numbers are per process
    ref = battle_v4.parallel_env(map_size=45, max_cycles=max_cycles)
    ref.reset(seed=seed)
    diffs = []
    for cycle, (acts, step) in enumerate(log, 1):
        o, r, term, trunc, _ = ref.step(
            {a: int(acts[a.split("_")[0]][int(a.split("_")[1])]) for a in ref.agents})
        for a in o:
            team, i = a.split("_")[0], int(a.split("_")[1])
            if (not term[a] and not np.array_equal(step.obs[team][i], o[a])) \
                    or step.reward[team][i] != np.float32(r[a]) or step.died[team][i] != term[a]:
                diffs.append(f"cycle {cycle}: {a}")
        if step.done != (not ref.agents) or step.truncated != any(trunc.values()):
            diffs.append(f"cycle {cycle}: episode end")
    if ref.agents:
        diffs.append("magent2's episode goes on")
    return diffs


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_plays_magent2s_game_cycle_for_cycle(seed):
    """BattleEnv against magent2's parallel env as it is (first cycle included: blue plays
    red's first actions there), the same seeded actions for a whole episode."""
    log = _play_seeded(BattleEnv(max_cycles=300), seed, 300)
    assert sum(int(s.died["red"].sum() + s.died["blue"].sum()) for _, s in log) > 20
    assert _differences_from_magent2(log, seed, 300) == []


def test_the_differential_test_sees_a_corrected_first_cycle():
    """The comparison above can fail: the corrected first cycle (blue's own actions) is
    another game, and it differs from magent2's from the first cycle on."""
    log = _play_seeded(BattleEnv(max_cycles=20, corrected_first_cycle=True), 0, 20)
    diffs = _differences_from_magent2(log, 0, 20)
    assert diffs and diffs[0].startswith("cycle 1: ")


def test_first_cycle_blue_plays_reds_actions():
    """magent2's rule, by position: red told to stay and blue to move, no blue agent moves on
    the first cycle and all move on the second; red told to move, blue moves the same way
    (the same absolute move, not its mirror image), and ``Step.actions`` says so."""
    stay, right = 6, 7  # (0, 0) and (0, +1) in the move diamond
    env = BattleEnv(max_cycles=5)
    env.reset(seed=1)
    blue = env.handles[1]
    before = np.array(env.engine.get_pos(blue))
    step = env.step({"red": np.full(81, stay), "blue": np.full(81, right)})
    assert (np.array(env.engine.get_pos(blue)) == before).all()
    assert (step.actions["blue"] == stay).all() and (step.actions["red"] == stay).all()
    step = env.step({"red": np.full(81, stay), "blue": np.full(81, right)})
    assert (step.actions["blue"] == right).all()
    moved = np.array(env.engine.get_pos(blue)) - before
    assert (moved == [1, 0]).all(1).sum() > 60  # x is the first coordinate; walls stop a few

    env.reset(seed=1)
    before = np.array(env.engine.get_pos(blue))
    reds = np.full(81, right)
    reds[:3] = stay  # by slot: blue slots 0..2 stay, as red slots 0..2 were told
    step = env.step({"red": reds, "blue": np.full(81, stay)})
    moved = np.array(env.engine.get_pos(blue)) - before
    assert (moved[:3] == 0).all() and (moved[3:] == [1, 0]).all(1).sum() > 60
    assert (step.actions["blue"] == reds).all()


def test_the_learner_on_red_moves_blue_on_the_first_cycle():
    """The mirror: a blue-trained policy playing red through the mirror chooses red's first
    actions, so it also chooses blue's (unmirrored, as the engine plays them)."""
    from battle_rl.league.sides import ACTION_MIRROR

    env = BattleEnv(max_cycles=5)
    obs = env.reset(seed=2)
    chosen_as_blue = np.full(81, 5)  # (0, -2): two cells left, towards red from blue's side
    red = np.array(ACTION_MIRROR)[chosen_as_blue]  # through the mirror: two cells right
    step = env.step({"red": red, "blue": np.zeros(81, int)})
    assert (step.actions["blue"] == red).all() and (step.actions["red"] == red).all()
    assert obs["blue"].shape == (81, 13, 13, 5)


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


@needs_opponents
@pytest.mark.parametrize("red_file", ["red_final.pt", "red.pt"])
def test_evaluator_agrees_with_the_course_loop_game_by_game(opponents_dir, red_file):
    """The batched evaluator against the course's own AEC loop (``battle_v4.env``, one forward
    pass per agent per turn, as the course's eval.py), the shipped champion as blue: the same
    kills for both teams and the same cycle count in every game."""
    import sys

    from battle_rl.league.opponents import champion_file
    from battle_rl.networks import load_course_net, load_policy

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from course_protocol import run_course_eval

    torch.set_num_threads(1)
    blue, red = load_policy(champion_file()), load_course_net(opponents_dir / red_file)
    seed, games = 1000, 3
    course = run_course_eval(blue, red, games, seed=seed)
    ours = Evaluator(max_cycles=300, n_envs=games).play(blue, NetOpponent(red, "red"), games,
                                                        seed=seed)
    assert [(r.seed, r.blue_kills, r.red_kills, r.cycles) for r in ours] == \
        [(c["seed"], c["blue_kills"], c["red_kills"], c["cycles"]) for c in course]
