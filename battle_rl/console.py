"""``battle-rl``: the tools a user runs besides training, under one short command.

    battle-rl rate runs/a/policy.pt          # how strong is it? the gauntlet, both sides, Elo
    battle-rl tournament a.pt b.pt scripted  # round robin with Elo ratings
    battle-rl report multirun/2026-12-01/10-00-00   # a sweep's report.md, report.csv, plots
    battle-rl plot outputs/2026-12-01/10-00-00      # a run's training curves

Each subcommand is the tool's own command line (``battle-rl COMMAND --help``), the same as its
``python -m`` form. Training and evaluation stay Hydra apps: ``python train.py``,
``python evaluate.py`` (their overrides and Hydra's flags need Hydra's own command line).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

# name: (module with main(argv), one line of help)
COMMANDS = {
    "rate": ("battle_rl.league.gauntlet",
             "rate agents: the gauntlet on both sides, W-D-L, kills, Elo"),
    "tournament": ("battle_rl.league.tournament",
                   "a round-robin tournament with Elo ratings"),
    "report": ("battle_rl.outputs.report",
               "a sweep folder's report: report.md, report.csv, plots"),
    "plot": ("battle_rl.outputs.plot",
             "a run folder's training curves and Table I chart (PNG)"),
}


def parser() -> argparse.ArgumentParser:
    from battle_rl import __version__

    commands = "\n".join(f"  {name:<12}{about}" for name, (_, about) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="battle-rl", usage="battle-rl [-h] [-V] COMMAND [ARGS ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="battle-rl's tools (MAgent2 battle_v4). Training and evaluation are the\n"
        "Hydra apps: python train.py, python evaluate.py.",
        epilog=f"commands:\n{commands}\n\nbattle-rl COMMAND --help: that command's options.")
    p.add_argument("-V", "--version", action="version", version=f"battle-rl {__version__}")
    p.add_argument("command", metavar="COMMAND", choices=list(COMMANDS),
                   help="one of: " + ", ".join(COMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # the command's
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # what there is to run, rather than an error about a missing argument
        parser().print_help(sys.stderr)
        return 2
    args = parser().parse_args(argv)
    tool = importlib.import_module(COMMANDS[args.command][0]).main
    named = "prog" in inspect.signature(tool).parameters  # usage lines say "battle-rl COMMAND"
    code = tool(args.args, prog=f"battle-rl {args.command}") if named else tool(args.args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
