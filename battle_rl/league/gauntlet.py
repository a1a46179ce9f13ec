"""The gauntlet: how strong is an agent? It plays a fixed line-up on both sides.

    battle-rl rate runs/a/policy.pt                    # any policy.pt, .ckpt or course file
    battle-rl rate mine=runs/a/policy.pt red.pt --episodes 30 --json rating.json
    battle-rl rate runs/a/policy.pt --only scripted passive champion-ref   # a quick screen

The line-up (``gauntlet_specs``): ``random``, ``pretrained`` (the course's ``red.pt``),
``final`` (``red_final.pt``), ``scripted``, ``passive``, ``passive_strict``, the fixed
reference champion (``champion-ref``: ``champion-2026-11-29.pt`` in the agents folder), the
champion shipped now (``champion``, ``battle_rl/assets/champion.pt``) and the held-out agents
(``heldout-*.pt`` in the agents folder: trained with other seeds and recipes and kept out of
every training pool). The agents folder is a checkout's ``benchmarks/agents`` (``--agents-dir``,
or ``BATTLE_RL_AGENTS_DIR``); without it the reference and the held-out agents sit out, with a
note, and so does a course net missing from the opponents folder.

Every rated agent plays every opponent of the line-up ``episodes`` games on each side (blue,
and red through the mirror) with the tournament's batched evaluator. The result: W-D-L per
side, kills and kills conceded per game, a score (a win 1, a draw 1/2, per game), and Elo with
95% intervals, all agents and opponents rated together. ``benchmarks/strength.py`` is this
gauntlet with training in front (the time-to-strength curve).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

BUILT_IN = ["random", "pretrained", "final", "scripted", "passive", "passive_strict"]
REFERENCE = "champion-2026-11-29.pt"  # the fixed reference (champion-ref), in the agents folder
CHECKOUT_AGENTS = Path(__file__).resolve().parents[2] / "benchmarks" / "agents"


def default_agents_dir() -> Path:
    """``BATTLE_RL_AGENTS_DIR``, else the checkout's ``benchmarks/agents`` (the package is
    installed from a checkout: ``pip install -e .``)."""
    return Path(os.environ.get("BATTLE_RL_AGENTS_DIR") or CHECKOUT_AGENTS)


def default_opponents_dir() -> Path:
    """Where the course's ``red.pt`` and ``red_final.pt`` are, as for ``train.py``."""
    return Path(os.environ.get("BATTLE_RL_OPPONENTS_DIR", "../shared/opponents"))


def gauntlet_specs(only: list[str] | None = None, opponents_dir: str | Path | None = None,
                   agents_dir: str | Path | None = None, log=print) -> list[str]:
    """The line-up as tournament specs (``name`` or ``name=path``); course nets missing from
    ``opponents_dir`` and an agents folder that is not there are left out with a note;
    ``only``: just the agents of these names (an unknown name is an error)."""
    from battle_rl.league.opponents import COURSE_FILES

    odir = Path(opponents_dir) if opponents_dir is not None else default_opponents_dir()
    agents = Path(agents_dir) if agents_dir is not None else default_agents_dir()
    specs = []
    for name in BUILT_IN:
        if name in COURSE_FILES and not (odir / COURSE_FILES[name]).is_file():
            log(f"note: {name} left out of the gauntlet: {COURSE_FILES[name]} is not in "
                f"{odir} (set BATTLE_RL_OPPONENTS_DIR)")
            continue
        specs.append(name)
    if (agents / REFERENCE).is_file():
        specs.append(f"champion-ref={agents / REFERENCE}")
    elif not agents.is_dir():
        log(f"note: the reference champion and the held-out agents sit out: {agents} is not "
            f"a folder (a checkout's benchmarks/agents: --agents-dir DIR)")
    specs.append("champion")  # the one shipped now (battle_rl/assets/champion.pt)
    specs += [f"{p.stem}={p}" for p in sorted(agents.glob("heldout-*.pt"))]
    if only is not None:
        unknown = set(only) - {s.split("=", 1)[0] for s in specs}
        if unknown:
            raise SystemExit(f"not in the gauntlet: {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.split("=", 1)[0] in only]
    return specs


def play(policies: dict[str, str], episodes: int, seed: int = 0, workers: int = 2, log=print,
         max_cycles: int = 300, only: list[str] | None = None,
         opponents_dir: str | Path | None = None, agents_dir: str | Path | None = None,
         specs: list[str] | None = None) -> list[dict]:
    """Every policy (name: path) against every gauntlet opponent (``specs``, else
    ``gauntlet_specs(only, ...)``), ``episodes`` games on each side; one record per game."""
    from battle_rl.evaluation import Evaluator
    from battle_rl.league.tournament import parse_entrant, play_round_robin

    odir = Path(opponents_dir) if opponents_dir is not None else default_opponents_dir()
    if specs is None:
        specs = gauntlet_specs(only, odir, agents_dir, log=lambda m: print(m, flush=True))
    evaluator = Evaluator(max_cycles=max_cycles, workers=workers)
    opponents = [parse_entrant(s, odir) for s in specs]
    games = []
    for name, path in policies.items():
        me = parse_entrant(f"{name}={path}", odir)
        games += play_round_robin([me, *opponents], episodes, seed, evaluator, log, focus=name)
    return games


def per_side(games: list[dict], name: str) -> dict:
    """``name``'s record against each opponent, per side: W-D-L, kills and kills conceded."""
    table: dict[str, dict] = {}
    for g in games:
        if name not in (g["blue"], g["red"]):
            continue
        side = "blue" if g["blue"] == name else "red"
        opp = g["red"] if side == "blue" else g["blue"]
        mine, theirs = (g["blue_kills"], g["red_kills"]) if side == "blue" else \
            (g["red_kills"], g["blue_kills"])
        row = table.setdefault(opp, {}).setdefault(side, {"win": 0, "draw": 0, "lose": 0,
                                                           "kills": [], "conceded": []})
        verdict = "draw" if g["winner"] == "draw" else ("win" if g["winner"] == side else "lose")
        row[verdict] += 1
        row["kills"].append(mine)
        row["conceded"].append(theirs)
    for sides in table.values():
        for row in sides.values():
            row["kills"], row["conceded"] = (float(np.mean(row["kills"])),
                                             float(np.mean(row["conceded"])))
    return table


def score(table: dict) -> float:
    """Points per game over the whole gauntlet (a win 1, a draw 1/2)."""
    rows = [r for sides in table.values() for r in sides.values()]
    games = sum(r["win"] + r["draw"] + r["lose"] for r in rows)
    return sum(r["win"] + r["draw"] / 2 for r in rows) / max(games, 1)


def ratings(games: list[dict], bootstrap: int = 1000) -> list[dict]:
    """Elo with a 95% interval and W-D-L for every agent of the games, best first."""
    from battle_rl.league.tournament import summarize

    names = list(dict.fromkeys([n for g in games for n in (g["blue"], g["red"])]))
    return summarize(names, games, bootstrap=bootstrap)["ratings"]


def markdown(name: str, table: dict) -> str:
    """One agent's record as a Markdown table: a row per opponent, W-D-L and kills per side."""
    lines = [f"### {name}", "", "| opponent | as blue W-D-L | kills:conceded | as red W-D-L | "
             "kills:conceded |", "|---|---|---|---|---|"]
    for opp, sides in table.items():
        cells = []
        for side in ("blue", "red"):
            r = sides.get(side)
            cells += ["", ""] if r is None else [f"{r['win']}-{r['draw']}-{r['lose']}",
                                                 f"{r['kills']:.1f}:{r['conceded']:.1f}"]
        lines.append(f"| {opp} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratings_markdown(rated: list[dict]) -> str:
    lines = ["| agent | Elo | 95% CI | W-D-L |", "|---|---:|---|---|"]
    lines += [f"| {r['name']} | {r['elo']:.0f} | {r['ci_low']:.0f} to {r['ci_high']:.0f} | "
              f"{r['win']}-{r['draw']}-{r['lose']} |" for r in rated]
    return "\n".join(lines)


def rate(policies: dict[str, str], episodes: int = 10, seed: int = 0, workers: int = 2,
         max_cycles: int = 300, only: list[str] | None = None,
         opponents_dir: str | Path | None = None, agents_dir: str | Path | None = None,
         bootstrap: int = 1000, log=print, specs: list[str] | None = None) -> dict:
    """The whole gauntlet for these policies (name: path): the line-up (``specs``, else
    ``gauntlet_specs(only, ...)``), every game, each policy's table and score, and the
    ratings."""
    odir = Path(opponents_dir) if opponents_dir is not None else default_opponents_dir()
    if specs is None:
        specs = gauntlet_specs(only, odir, agents_dir, log=log)
    games = play(policies, episodes, seed, workers, log, max_cycles, opponents_dir=odir,
                 specs=specs)
    tables = {name: per_side(games, name) for name in policies}
    return {"gauntlet": specs, "episodes_per_side": episodes, "max_cycles": max_cycles,
            "seed": seed, "policies": policies, "tables": tables,
            "scores": {n: score(t) for n, t in tables.items()},
            "ratings": ratings(games, bootstrap), "games": games}


def report(result: dict) -> str:
    """Each policy's table and score, then the ratings (Markdown)."""
    parts = [markdown(name, table) + f"\n\ngauntlet score {result['scores'][name]:.3f} "
             f"(a win 1, a draw 1/2)" for name, table in result["tables"].items()]
    return "\n\n".join(parts + [ratings_markdown(result["ratings"])])


def name_policies(specs: list[str], taken: set[str] = frozenset()) -> dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (named after its folder for ``policy.pt``, else its file) to
    {name: path}; a name that is already an opponent's or another policy's gets a suffix."""
    named: dict[str, str] = {}
    for spec in specs:
        if "=" in spec and not Path(spec).exists():
            name, path = spec.split("=", 1)
        else:
            p = Path(spec)
            name = p.parent.name if p.stem == "policy" and p.parent.name else p.stem
            path = spec
        base, k = name, 1
        while name in named or name in taken:
            k += 1
            name = f"{base}-{k}"
        named[name] = path
    return named


def main(argv: list[str] | None = None, prog: str = "battle-rl rate") -> int:
    """``battle-rl rate``: rate policy files against the gauntlet."""
    from battle_rl.errors import ConfigError, PolicyLoadError

    p = argparse.ArgumentParser(
        prog=prog, description="Rate agents: each plays the gauntlet (the built-in teams, the "
        "course nets, the champions and the held-out agents) on both sides; prints W-D-L per "
        "side, kills, a score and Elo with 95% intervals.",
        epilog="A course net missing from --opponents-dir and an agents folder that is not "
        "there sit out with a note. benchmarks/strength.py trains first (--train) and draws "
        "the time-to-strength curve.")
    p.add_argument("policies", nargs="+", metavar="POLICY",
                   help="a policy.pt, a Lightning .ckpt of a battle-rl run, a run folder or a "
                   "course-format file (red.pt); NAME=POLICY names it")
    p.add_argument("--episodes", type=int, default=10, help="games per side per opponent "
                   "(default: 10; benchmarks/strength.py plays 30)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="play just these opponents of the gauntlet (e.g. --only scripted "
                   "passive champion-ref)")
    p.add_argument("--seed", type=int, default=0, help="game i is played with seed + i")
    p.add_argument("--max-cycles", type=int, default=300, help="cycles per game")
    p.add_argument("--workers", type=int, default=2, help="threads sharing the games")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="resamples for the Elo intervals")
    p.add_argument("--opponents-dir", default=str(default_opponents_dir()),
                   help="the course's red.pt and red_final.pt (default: "
                   "$BATTLE_RL_OPPONENTS_DIR or ../shared/opponents)")
    p.add_argument("--agents-dir", default=str(default_agents_dir()),
                   help="the reference champion and the held-out agents (default: "
                   "$BATTLE_RL_AGENTS_DIR or the checkout's benchmarks/agents)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write everything (every game included) to this JSON file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes={args.episodes}: an integer >= 1")
    import torch

    torch.set_num_threads(args.threads)
    say = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    try:
        specs = gauntlet_specs(args.only, args.opponents_dir, args.agents_dir, log=say)
        policies = name_policies(args.policies, {s.split("=", 1)[0] for s in specs})
        for path in policies.values():
            if not Path(path).exists():
                raise FileNotFoundError(f"{path}: no such file")
        result = rate(policies, args.episodes, args.seed, args.workers, args.max_cycles,
                      args.only, args.opponents_dir, args.agents_dir, args.bootstrap, log=say,
                      specs=specs)
    except (ConfigError, PolicyLoadError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr, flush=True)
        return 2
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print("\n" + report(result), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m battle_rl.league.gauntlet"))
