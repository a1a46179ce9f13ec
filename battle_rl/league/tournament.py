"""Round-robin tournaments with Elo ratings.

    python -m battle_rl.league.tournament runs/a/policy.pt b.pt scripted random final \\
        course:path/red.pt champion --episodes 10 --out tournament/
    python -m battle_rl.league.tournament      # champion, scripted, random and the course nets

Every pair plays ``--episodes`` games with A as blue against B as red and as many with B as
blue against A as red (the batched evaluator; game ``i`` of every matchup uses seed
``seed + i``). An agent is seated on either side as it should be: a network plays its own
side as it is and the other side through the mirror (``sides.Mirrored``); the scripted agent
advances toward the enemy's side; random is random. Writes ``results.md`` (ratings, head to
head, per side), ``results.json`` (all of it, every game included) and ``ratings.png``.

Agents:
- ``random``, ``scripted``, ``passive``, ``passive_strict``; ``pretrained`` and ``final`` (the course's ``red.pt`` and
  ``red_final.pt`` from ``--opponents-dir``); ``champion`` (``battle_rl/assets/champion.pt``);
- a file: a battle-rl ``policy.pt`` or any TorchScript policy, a Lightning ``.ckpt`` of a
  battle-rl run, or a course-format state dict. Course-format files are taken as trained
  for red, everything else for blue; ``red:PATH`` / ``blue:PATH`` say it explicitly, and
  ``course:PATH`` insists on the course format (red);
- ``NAME=AGENT`` gives an agent a name in the tables (default: the file's stem, or its
  folder's name for ``policy.pt``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from battle_rl.errors import ConfigError, PolicyLoadError
from battle_rl.evaluation import Evaluator
from battle_rl.league import elo
from battle_rl.league.opponents import (COURSE_FILES, NetOpponent, Opponent, PassiveOpponent,
                                        RandomOpponent, ScriptedOpponent, champion_file,
                                        course_file, leave_out_missing, left_out_notice)
from battle_rl.league.sides import Mirrored
from battle_rl.networks import CourseQNetwork, load_course_net, load_policy

SIDES = ("blue", "red")
BUILT_IN_TEAMS = ("random", "scripted", "passive", "passive_strict")  # no file, either side
DEFAULT_AGENTS = ("champion", "scripted", "passive", "random", "pretrained", "final")  # none named
SCORE = {"blue": 1.0, "draw": 0.5, "red": 0.0}  # blue's points for each verdict


@dataclass
class Entrant:
    """An agent of the tournament and how to seat it on either side."""

    name: str
    spec: str
    kind: str  # "net", or a built-in team: "scripted", "passive", "passive_strict", "random"
    trained_as: str = "blue"  # for networks: the side whose view they were trained on
    net: nn.Module | None = None

    def policy(self, side: str) -> Opponent:
        if self.kind == "random":
            return RandomOpponent()
        if self.kind == "scripted":
            return ScriptedOpponent(advance_dx=+1 if side == "red" else -1)
        if self.kind in ("passive", "passive_strict"):  # home: red's edge at small x
            return PassiveOpponent(home_dx=-1 if side == "red" else +1,
                                   attack=self.kind == "passive")
        net = self.net if side == self.trained_as else Mirrored(self.net).eval()
        return NetOpponent(net, self.name)


def parse_entrant(spec: str, opponents_dir: str | Path) -> Entrant:
    """An :class:`Entrant` from a command-line agent (see the module's docstring)."""
    label, agent = (spec.split("=", 1) if "=" in spec and not Path(spec).exists()
                    else (None, spec))
    side = None
    for prefix in ("course:", "red:", "blue:"):
        if agent.startswith(prefix):
            side, agent = prefix[:-1], agent[len(prefix):]
    if side is None and agent in BUILT_IN_TEAMS:
        return Entrant(label or agent, spec, agent)
    if side is None and agent in COURSE_FILES:
        net = load_course_net(course_file(agent, opponents_dir))
        return Entrant(label or agent, spec, "net", "red", net)
    if side is None and agent == "champion":
        return Entrant(label or agent, spec, "net", "blue", load_policy(champion_file()))
    path = Path(agent)
    if not path.exists():
        raise ConfigError(f"agent {spec!r}: no such file, and not one of "
                          f"{', '.join(BUILT_IN_TEAMS)}, pretrained, final, champion")
    net = load_course_net(path) if side == "course" else load_policy(path)
    trained_as = {"course": "red", "red": "red", "blue": "blue"}.get(
        side, "red" if isinstance(net, CourseQNetwork) else "blue")
    name = path.parent.name if path.stem == "policy" and path.parent.name else path.stem
    return Entrant(label or name, spec, "net", trained_as, net)


def unique_names(entrants: list[Entrant]) -> None:
    seen: dict[str, int] = {}
    for e in entrants:
        seen[e.name] = seen.get(e.name, 0) + 1
        if seen[e.name] > 1:
            e.name = f"{e.name}-{seen[e.name]}"


def play_round_robin(entrants: list[Entrant], episodes: int, seed: int = 0,
                     evaluator: Evaluator | None = None, log=print,
                     focus: str | None = None) -> list[dict]:
    """Every ordered pair (blue, red) plays ``episodes`` games; one record per game.
    ``focus``: only the pairs with that agent in them (a gauntlet)."""
    evaluator = evaluator or Evaluator()
    games = []
    for a, b in itertools.permutations(range(len(entrants)), 2):
        blue, red = entrants[a], entrants[b]
        if focus is not None and focus not in (blue.name, red.name):
            continue
        t0 = time.perf_counter()
        results = evaluator.play(blue.policy("blue"), red.policy("red"), episodes, seed)
        for r in results:
            games.append({"blue": blue.name, "red": red.name, "seed": r.seed,
                          "blue_kills": r.blue_kills, "red_kills": r.red_kills,
                          "winner": r.winner, "cycles": r.cycles})
        verdicts = [r.winner for r in results]
        log(f"{blue.name} (blue) vs {red.name} (red): {verdicts.count('blue')}-"
            f"{verdicts.count('draw')}-{verdicts.count('red')}, kills "
            f"{np.mean([r.blue_kills for r in results]):.1f}:"
            f"{np.mean([r.red_kills for r in results]):.1f} ({time.perf_counter() - t0:.0f} s)")
    return games


def summarize(names: list[str], games: list[dict], bootstrap: int = 1000,
              prior_draws: float = 1.0, seed: int = 0) -> dict:
    """Ratings (Elo with a 95% interval, record per agent), head to head, per-side matchups."""
    index = {n: i for i, n in enumerate(names)}
    records = [(index[g["blue"]], index[g["red"]], SCORE[g["winner"]]) for g in games]
    rating, low, high = elo.ratings_with_ci(records, len(names), bootstrap, prior_draws,
                                            seed=seed)
    wdl = {n: [0, 0, 0] for n in names}  # each agent's wins, draws, losses (both sides)
    h2h = {a: {b: [0, 0, 0] for b in names if b != a} for a in names}
    for g in games:
        s = SCORE[g["winner"]]
        for me, them, points in ((g["blue"], g["red"], s), (g["red"], g["blue"], 1.0 - s)):
            k = {1.0: 0, 0.5: 1, 0.0: 2}[points]
            wdl[me][k] += 1
            h2h[me][them][k] += 1
    ratings = []
    for n in names:
        i = index[n]
        w, d, l_ = wdl[n]
        ratings.append({"name": n, "elo": float(rating[i]), "ci_low": float(low[i]),
                        "ci_high": float(high[i]), "games": w + d + l_, "win": w, "draw": d,
                        "lose": l_, "score": (w + d / 2) / max(w + d + l_, 1)})
    ratings.sort(key=lambda r: -r["elo"])
    matchups = []
    for a, b in itertools.permutations(names, 2):
        mine = [g for g in games if g["blue"] == a and g["red"] == b]
        if mine:
            v = [g["winner"] for g in mine]
            matchups.append({"blue": a, "red": b, "win": v.count("blue"),
                             "draw": v.count("draw"), "lose": v.count("red"),
                             "blue_kills": float(np.mean([g["blue_kills"] for g in mine])),
                             "red_kills": float(np.mean([g["red_kills"] for g in mine]))})
    return {"ratings": ratings, "head_to_head": h2h, "matchups": matchups}


def markdown(summary: dict, settings: dict) -> str:
    names = [r["name"] for r in summary["ratings"]]
    lines = [
        "# Tournament",
        "",
        f"{settings['episodes']} games per side per pair, max_cycles={settings['max_cycles']}, "
        f"seeds {settings['seed']}..{settings['seed'] + settings['episodes'] - 1}; Elo by "
        f"maximum likelihood (draws count half, {settings['prior_draws']:g} prior draw per "
        f"pair), 95% bootstrap interval over {settings['bootstrap']} resamples."
        + (f" A gauntlet: only the pairs with {settings['focus']} in them."
           if settings.get("focus") else ""),
        "",
        "## Ratings",
        "",
        "| rank | agent | Elo | 95% CI | W-D-L | score |",
        "|---:|---|---:|---|---|---:|",
    ]
    for k, r in enumerate(summary["ratings"], 1):
        lines.append(f"| {k} | {r['name']} | {r['elo']:.0f} | {r['ci_low']:.0f} to "
                     f"{r['ci_high']:.0f} | {r['win']}-{r['draw']}-{r['lose']} | "
                     f"{r['score']:.2f} |")
    lines += ["", "## Head to head", "",
              "The row agent's wins-draws-losses against the column agent, both sides together.",
              "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in names:
        cells = ["" if a == b else "-".join(map(str, summary["head_to_head"][a][b]))
                 for b in names]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += ["", "## By side", "", "| blue | red | blue W-D-L | kills blue:red |",
              "|---|---|---|---|"]
    for m in summary["matchups"]:
        lines.append(f"| {m['blue']} | {m['red']} | {m['win']}-{m['draw']}-{m['lose']} | "
                     f"{m['blue_kills']:.1f}:{m['red_kills']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["ratings"][::-1]  # best on top
    y = np.arange(len(rows))
    elo_ = np.array([r["elo"] for r in rows])
    err = np.array([[r["elo"] - r["ci_low"] for r in rows], [r["ci_high"] - r["elo"] for r in rows]])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    ax.errorbar(elo_, y, xerr=np.maximum(err, 0), fmt="o", capsize=4)
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.set_xlabel("Elo (95% bootstrap interval)")
    ax.set_title("battle_v4 tournament")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(agents: list[str], out: str | Path, episodes: int = 10, max_cycles: int = 300,
        seed: int = 0, opponents_dir: str | Path = "../shared/opponents", workers: int = 2,
        n_envs: int = 15, bootstrap: int = 1000, prior_draws: float = 1.0, log=print,
        focus: str | None = None) -> dict:
    """The whole tournament: load, play, rate, write the files. Returns the summary."""
    if len(agents) < 2:
        raise ConfigError("a tournament needs at least two agents")
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} is not allowed: an integer >= 1")
    entrants = [parse_entrant(a, opponents_dir) for a in agents]
    unique_names(entrants)
    if focus is not None and focus not in [e.name for e in entrants]:
        raise ConfigError(f"--focus={focus!r} is not one of the agents "
                          f"({', '.join(e.name for e in entrants)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"episodes": episodes, "max_cycles": max_cycles, "seed": seed,
                "bootstrap": bootstrap, "prior_draws": prior_draws, "focus": focus}
    t0 = time.perf_counter()
    evaluator = Evaluator(max_cycles=max_cycles, n_envs=n_envs, workers=workers)
    games = play_round_robin(entrants, episodes, seed, evaluator, log, focus)
    summary = summarize([e.name for e in entrants], games, bootstrap, prior_draws, seed)
    settings["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps({
        "settings": settings,
        "agents": [{"name": e.name, "spec": e.spec, "kind": e.kind,
                    "trained_as": e.trained_as if e.kind == "net" else None} for e in entrants],
        **summary, "games": games}, indent=1))
    (out / "results.md").write_text(markdown(summary, settings))
    plot(summary, out / "ratings.png")
    return summary


def main(argv: list[str] | None = None,
         prog: str = "python -m battle_rl.league.tournament") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("agents", nargs="*", help="policy files or random, scripted, passive, "
                   "passive_strict, pretrained, final, champion (course:PATH, red:PATH, "
                   "blue:PATH, NAME=AGENT); default: "
                   f"{' '.join(DEFAULT_AGENTS)} (the course nets only where their files are)")
    p.add_argument("--episodes", type=int, default=10, help="games per side per pair")
    p.add_argument("--max-cycles", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="game i is played with seed + i")
    p.add_argument("--out", default=f"tournament/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    p.add_argument("--opponents-dir", default=os.environ.get("BATTLE_RL_OPPONENTS_DIR",
                                                             "../shared/opponents"))
    p.add_argument("--workers", type=int, default=2, help="threads sharing the games")
    p.add_argument("--n-envs", type=int, default=15, help="games stepped in lockstep")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the intervals")
    p.add_argument("--prior-draws", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--focus", help="play only the pairs with this agent in them (a gauntlet: "
                   "every other agent against it, on both sides)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    agents = args.agents
    if not agents:  # the default line-up: the course nets whose files are missing sit out
        agents, left_out = leave_out_missing(list(DEFAULT_AGENTS), args.opponents_dir, set())
        if left_out:
            print(left_out_notice(left_out, args.opponents_dir, "--opponents-dir FOLDER"),
                  flush=True)
    try:
        run(agents, args.out, args.episodes, args.max_cycles, args.seed,
            args.opponents_dir, args.workers, args.n_envs, args.bootstrap, args.prior_draws,
            log=lambda m: print(m, flush=True), focus=args.focus)
    except (ConfigError, PolicyLoadError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    out = Path(args.out)
    print((out / "results.md").read_text().split("## Head to head")[0].rstrip(), flush=True)
    print(out / "results.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
