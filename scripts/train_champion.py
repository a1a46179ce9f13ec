"""Train, measure and ship the champion.

    python scripts/train_champion.py --minutes 90 --out runs/champion --install

1. trains with ``conf/experiment/<--experiment>.yaml`` (default ``champion``; self-play against a diverse pool: the
   scripted agent, both course nets, random and the learner's own snapshots) for
   ``--minutes`` of wall-clock time; ``policy.pt`` is the best evaluation during training;
2. plays a tournament (``battle_rl.league.tournament``) of the result against the scripted agent,
   ``red.pt``, ``red_final.pt``, random and a self-play snapshot from halfway through
   training, ``--episodes`` games per side per pair: this gives the acceptance numbers (the
   champion as blue against ``red_final.pt``, and as red, mirrored, against
   ``red_final.pt`` playing blue, mirrored) and the Elo table;
3. writes ``champion.json`` into the run folder and, with ``--install``, copies the policy to
   ``battle_rl/assets/champion.pt`` (with its report ``champion.json`` beside it), where
   ``opponent=champion`` and the tournament's ``champion`` find it.

Extra arguments are Hydra overrides of the training run (``hparams.lr=3e-4``). ``--resume``
continues the run in ``--out`` up to ``--minutes`` of training in all (a longer budget after
a first result); the overrides are kept in ``<out>/.hydra/overrides.yaml`` like a
``train.py`` run's, so ``python train.py resume=<out>`` continues it too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def duration(minutes: float) -> str:
    s = max(1, round(minutes * 60))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def acceptance(matchups: list[dict], name: str = "champion", rival: str = "final") -> dict:
    """The champion against ``rival`` on both sides, from the tournament's matchups."""
    out = {}
    for m in matchups:
        if m["blue"] == name and m["red"] == rival:
            out["as_blue"] = {"win": m["win"], "draw": m["draw"], "lose": m["lose"],
                              "kills": m["blue_kills"], "conceded": m["red_kills"]}
        if m["red"] == name and m["blue"] == rival:
            out["as_red"] = {"win": m["lose"], "draw": m["draw"], "lose": m["win"],
                             "kills": m["red_kills"], "conceded": m["blue_kills"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=90.0, help="training wall-clock budget")
    p.add_argument("--experiment", default="champion", help="conf/experiment/ recipe "
                   "(champion_2026_11_29: the shipped champion's)")
    p.add_argument("--out", default="runs/champion", help="the run folder")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: 0)")
    p.add_argument("--episodes", type=int, default=30, help="tournament games per side per pair")
    p.add_argument("--max-cycles", type=int, default=300, help="tournament game length")
    p.add_argument("--opponents-dir", default=None, help="folder of red.pt and red_final.pt "
                   "(default: the configuration's opponents_dir)")
    p.add_argument("--install", action="store_true",
                   help="copy the result to battle_rl/assets/champion.pt")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (same overrides) up to --minutes in all")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the training run")
    args = p.parse_args(argv)

    from battle_rl.config import compose_overrides, validate_train
    from battle_rl.errors import ConfigError, PolicyLoadError
    from battle_rl.league.opponents import CHAMPION_PATH
    from battle_rl.league.tournament import run as tournament
    from battle_rl.training import opponents_dir, train

    out = Path(args.out).resolve()
    overrides = [f"+experiment={args.experiment}", f"trainer.max_time={duration(args.minutes)}",
                 *([f"seed={args.seed}"] if args.seed is not None else []), *args.overrides]
    if args.opponents_dir:
        overrides.append(f"opponents_dir={args.opponents_dir}")
    saved = out / ".hydra" / "overrides.yaml"
    if args.resume:
        if not saved.is_file():
            print(f"error: --resume: {saved} not found (no champion run in {out})",
                  file=sys.stderr, flush=True)
            return 2
        merged = {}  # one override per key, the newest wins
        for o in yaml.safe_load(saved.read_text()) + overrides:
            merged.pop(o.split("=", 1)[0], None)
            merged[o.split("=", 1)[0]] = o
        overrides = list(merged.values())
    t0 = time.perf_counter()
    try:
        cfg = compose_overrides("config", overrides + ([f"resume={out}"] if args.resume else []))
        validate_train(cfg)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(overrides))
        summary = train(cfg, out)
        if summary["interrupted"]:
            print("interrupted: no tournament, nothing installed", flush=True)
            return 130
        odir = opponents_dir(cfg)
        snapshots = sorted(out.glob("snapshots/step-*.pt"), key=lambda q: int(q.stem[5:]))
        agents = [f"champion={out / 'policy.pt'}", "scripted", "pretrained", "final", "random"]
        if snapshots:
            half = snapshots[len(snapshots) // 2]
            agents.append(f"self-play-{half.stem[5:]}={half}")
        result = tournament(agents, out / "tournament", args.episodes, args.max_cycles,
                            0, odir, log=lambda m: print(m, flush=True))
    except (ConfigError, PolicyLoadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    report = {
        "command": "python scripts/train_champion.py " + " ".join(argv or sys.argv[1:]),
        "minutes": args.minutes,
        "steps": summary["steps"],
        "episodes_trained": summary["episodes"],
        "policy_source": summary["policy_source"],
        "seconds_total": round(time.perf_counter() - t0),
        "against_final": acceptance(result["matchups"]),
        "ratings": result["ratings"],
        "tournament": str(out / "tournament" / "results.md"),
    }
    (out / "champion.json").write_text(json.dumps(report, indent=1))
    for side, row in report["against_final"].items():
        print(f"champion {side.replace('_', ' ')} vs red_final.pt: {row['win']}-{row['draw']}-"
              f"{row['lose']}, kills {row['kills']:.1f}, conceded {row['conceded']:.1f}",
              flush=True)
    if args.install:
        CHAMPION_PATH.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "policy.pt", CHAMPION_PATH)
        (CHAMPION_PATH.parent / "champion.json").write_text(json.dumps(report, indent=1))
        print(f"installed {CHAMPION_PATH}", flush=True)
    print(out / "champion.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
