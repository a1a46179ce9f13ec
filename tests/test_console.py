"""The short commands (``battle-rl rate | tournament | report | plot``) and the first screen of
the main command: what matters first, nothing wider than an 80-column terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import importlib
import time
from inspect import signature
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import OPPONENTS, ROOT, run_script
from battle_rl.console import COMMANDS, main

WIDTH = 80


def battle_rl_command() -> list[str]:
    """The installed console script (``pip install -e .``), else the same entry point."""
    script = shutil.which("battle-rl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "battle_rl.console"]


def tool(command: str):
    return importlib.import_module(COMMANDS[command][0]).main


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'battle-rl = "battle_rl.console:main"' in text


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if not command or "prog" in signature(tool(command[0])).parameters:  # report: not yet
        assert f"usage: {' '.join(['battle-rl', *command])} " in out
    assert max(map(len, out.splitlines())) <= WIDTH
    if not command:
        assert all(name in out for name in COMMANDS)


def test_unknown_or_missing_command_is_refused(capsys):
    with pytest.raises(SystemExit) as done:
        main(["nope"])
    assert done.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert main([]) == 2 and "rate" in capsys.readouterr().err


def test_python_m_forms_still_answer_help():
    for module in ("battle_rl.league.tournament", "battle_rl.outputs.report",
                   "battle_rl.outputs.plot", "battle_rl.league.gauntlet"):
        r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (module, r.stderr[-2000:])


def test_rate_a_policy_and_a_course_format_file(tmp_path):
    """``battle-rl rate``: a policy.pt and a course-format state dict, both sides of the
    chosen opponents, Elo for all; an agents folder that is not there sits out with a note."""
    import torch

    from battle_rl.networks import CourseQNetwork, QNetwork, export_policy

    policy = export_policy(QNetwork(conv_channels=[], hidden=[8], action_mask=True),
                           tmp_path / "run" / "policy.pt")
    course = tmp_path / "mine.pt"
    torch.save(CourseQNetwork(final=False).state_dict(), course)
    out = tmp_path / "rating.json"
    r = subprocess.run([*battle_rl_command(), "rate", str(policy), str(course), "--only",
                        "scripted", "passive", "--episodes", "1", "--max-cycles", "10",
                        "--bootstrap", "20", "--threads", "1", "--agents-dir",
                        str(tmp_path / "none"), "--json", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, BATTLE_RL_OPPONENTS_DIR=str(OPPONENTS)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "note: the reference champion and the held-out agents sit out" in r.stdout
    result = json.loads(out.read_text())
    assert result["gauntlet"] == ["scripted", "passive"]
    assert set(result["tables"]) == {"run", "mine"}  # a policy.pt is named after its folder
    for table in result["tables"].values():
        assert set(table) == {"scripted", "passive"}
        assert all({s: sum(sides[s][k] for k in ("win", "draw", "lose")) for s in sides}
                   == {"blue": 1, "red": 1} for sides in table.values())
    assert {x["name"] for x in result["ratings"]} == {"run", "mine", "scripted", "passive"}
    assert all(x["ci_low"] <= x["elo"] <= x["ci_high"] for x in result["ratings"])
    assert "| agent | Elo | 95% CI | W-D-L |" in r.stdout and "### mine" in r.stdout


def test_rate_names_the_gauntlet_and_refuses_what_is_not_in_it(tmp_path, capsys):
    from battle_rl.league.gauntlet import gauntlet_specs, name_policies

    specs = gauntlet_specs(opponents_dir=tmp_path, log=lambda m: None)  # no course files
    names = [s.split("=", 1)[0] for s in specs]
    assert names[:4] == ["random", "scripted", "passive", "passive_strict"]
    assert "champion-ref" in names and "champion" in names
    assert any(n.startswith("heldout-") for n in names)  # the checkout's benchmarks/agents
    with pytest.raises(SystemExit, match="not in the gauntlet: nobody"):
        gauntlet_specs(["nobody"], tmp_path, log=lambda m: None)
    # a policy named like an opponent of the line-up keeps its own name
    assert name_policies(["a/champion.pt", "runs/x/policy.pt"], {"champion"}) == {
        "champion-2": "a/champion.pt", "x": "runs/x/policy.pt"}


# --- the first screen ------------------------------------------------------------------------


def test_table_i_fits_80_columns():
    from battle_rl.evaluation import format_table

    row = {"win": 300, "draw": 0, "lose": 0, "episodes": 300, "blue_reward": -12.345,
           "blue_reward_std": 10.5, "red_reward": 5.018, "red_reward_std": 0.069,
           "blue_kills": 81.0, "red_kills": 81.0}
    names = ["random", "pretrained", "passive_strict", "pretrained_as_red",
             "heldout-ddqn-guided-15min_as_red"]
    lines = format_table({n: row for n in names}).splitlines()
    assert max(map(len, lines)) <= WIDTH, lines
    assert lines[0].split() == ["Opponent", "Win", "Draw", "Lose", "Blue", "reward", "Red",
                                "reward", "Kills", "B:R"]
    assert lines[2].split()[:4] == ["random", "300", "0", "0"] and "81.0:81.0" in lines[2]
    assert lines[-1].startswith("heldout-ddqn-guid…")  # cut short; eval.json keeps it whole


def fake_trainer(step: int, max_steps: int = -1):
    return SimpleNamespace(global_step=step, max_steps=max_steps, callbacks=[])


def test_progress_line_fits_80_columns_and_ends_on_the_runs_rate():
    """The line as rich draws it in an 80-column terminal; the rate left on screen at the end
    is the whole run's (updates over seconds), not the last second's."""
    from rich.console import Console

    from battle_rl.outputs.display import BattleProgressBar

    buffer = StringIO()
    bar = BattleProgressBar(console=Console(file=buffer, width=WIDTH, force_terminal=False))
    module = SimpleNamespace(rollout=SimpleNamespace(epsilon=0.05),
                             last_eval={"heldout-ddqn-guided-15min_as_red": 0.8, "random": 1.0})
    bar.on_train_start(fake_trainer(0), module)
    bar._start = (time.perf_counter() - 121.0, 0)  # 121 s ago
    bar._mark = (time.perf_counter() - 1.0, 5568)  # a slow last second: 1 update
    bar._last_eval = module.last_eval  # the evaluation shown is not new
    bar.on_train_batch_end(fake_trainer(5569), module, None, None, 0)
    assert "1.0 upd/s" in bar.progress.tasks[0].description
    bar.on_train_end(fake_trainer(5569), module)
    lines = [ln for ln in buffer.getvalue().splitlines() if ln.strip()]
    assert lines and max(map(len, lines)) <= WIDTH, lines
    assert "5569 updates" in lines[-1] and "46 upd/s" in lines[-1] and "eps 0.05" in lines[-1]


def test_the_rate_restarts_after_an_evaluation():
    from battle_rl.outputs.display import BattleProgressBar

    bar = BattleProgressBar()
    bar.disable()
    module = SimpleNamespace(rollout=None, last_eval=None)
    bar.on_train_start(fake_trainer(0), module)
    bar._mark = (time.perf_counter() - 30.0, 100)  # an evaluation took 30 s since the mark
    module.last_eval = {"random": 1.0}
    _, status = bar.status(fake_trainer(101), module)
    assert "upd/s" not in status  # the 30 s of the evaluation are not training's
    bar._mark = (time.perf_counter() - 0.5, 101)
    _, status = bar.status(fake_trainer(111), module)
    assert "20 upd/s" in status


def test_first_screen_of_the_main_command():
    """The main command (tiny budget) in an 80-column terminal: the run folder, the opponents
    and the progress in the first 15 lines, no line wider than 80, the configuration tree
    one flag away."""
    # where a user's run goes (outputs/DATE/TIME: the W&B line's length is a real one's)
    run = Path("outputs") / time.strftime("%Y-%m-%d") / f"t{os.getpid() % 10**7:07d}"  # HH-MM-SS
    try:
        r = run_script("train.py", "algo=ddqn", "threads=1", "env.max_cycles=20",
                       "trainer.max_steps=30", "hparams.warmup=64", "hparams.batch_size=32",
                       "eval.final_episodes=1", "eval.max_cycles=20", f"hydra.run.dir={run}",
                       env={"COLUMNS": str(WIDTH)})
    finally:
        shutil.rmtree(ROOT / run, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (r.stdout + r.stderr).splitlines()
    assert max(map(len, lines)) <= WIDTH, [ln for ln in lines if len(ln) > WIDTH]
    first = lines[:15]
    assert any(ln.startswith("run folder: ") for ln in first), first
    assert any(ln.startswith("opponents: ") for ln in first), first
    assert any("upd/s" in ln for ln in first), first
    assert any("print_config=true" in ln for ln in first)
    assert not any(ln.startswith("├──") for ln in lines)  # no configuration tree by default
    assert any(ln.startswith("Opponent ") for ln in lines)  # Table I, at the end
