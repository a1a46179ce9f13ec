"""The first run: Hydra's command line as Hydra documents it (both entry points), the default
command without the course files, and a terminal free of other libraries' notices."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import OPPONENTS, ROOT, TINY, needs_opponents, run_script

CHAMPION = ROOT / "battle_rl" / "assets" / "champion.pt"
PICKLE_JOB = "+hydra.callbacks.save_job_info._target_=hydra.experimental.callbacks." \
             "PickleJobInfoCallback"  # what --experimental-rerun replays (Hydra's docs)

# Runs one entry point several times in one process (Hydra's own main each time): a Python
# start and the imports once instead of once per flag
LOOP = """
import json, runpy, sys
script, commands = sys.argv[1], json.loads(sys.argv[2])
for args in commands:
    sys.argv = [script] + args
    print("=== " + json.dumps(args), flush=True)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        print(f"=== exit {e.code}", flush=True)
"""


def run_commands(script: str, commands: list[list[str]], env: dict | None = None) -> list[str]:
    """The output (stdout and stderr) of each command, in order; a SystemExit shows as a last
    line ``=== exit N``."""
    full_env = dict(os.environ, BATTLE_RL_OPPONENTS_DIR=str(OPPONENTS), **(env or {}))
    r = subprocess.run([sys.executable, "-c", LOOP, str(ROOT / script), json.dumps(commands)],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600, env=full_env)
    chunks = re.split(r"^=== \[.*\]\n", r.stdout, flags=re.M)
    assert r.returncode == 0 and len(chunks) == len(commands) + 1, r.stdout[-3000:]
    return chunks[1:]


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    """A copy of conf/ with other seeds (for -cp), and an extra folder (for --config-dir)
    with a new hparams option and a new primary config for evaluate.py."""
    tmp = tmp_path_factory.mktemp("configs")
    copy = shutil.copytree(ROOT / "conf", tmp / "conf")
    for name, seed in (("config.yaml", 41), ("evaluate.yaml", 42)):
        text = (copy / name).read_text()
        (copy / name).write_text(re.sub(r"^seed: 0", f"seed: {seed}", text, count=1, flags=re.M))
    extra = tmp / "extra"
    (extra / "hparams").mkdir(parents=True)
    (extra / "hparams" / "mine.yaml").write_text("defaults:\n  - fast\n  - _self_\nlr: 0.25\n")
    (extra / "mine_eval.yaml").write_text("defaults:\n  - evaluate\n  - _self_\nepisodes: 7\n")
    return {"copy": copy, "extra": extra}


def test_hydra_flags_train(configs, tmp_path):
    extra = str(configs["extra"])
    run = tmp_path / "run"
    out = run_commands("train.py", [
        ["--cfg", "job", "-p", "env"],
        ["-c", "job", "-p", "eval"],
        ["-c", "job", "--resolve", "-p", "eval"],
        ["--cfg", "hydra", "-p", "hydra.job.name"],
        ["--cfg", "all"],
        ["--info", "defaults"],
        ["--help"],
        ["-cn", "evaluate", "--cfg", "job", "-p", "episodes"],
        ["-cp", str(configs["copy"]), "--cfg", "job", "-p", "seed"],
        ["--config-dir", extra, "--cfg", "job", "-p", "hparams", "hparams=mine"],
        ["--config-dir", extra, "hparams=mine", "hparams.tau=7"],  # checked with the extra dir
        ["-m", "algo=ddqn,nope"],
        [*TINY, f"hydra.run.dir={run}", PICKLE_JOB],
        ["--experimental-rerun", str(run / ".hydra" / "config.pickle")],
    ])
    (env, job, resolved, name, everything, info, help_, other, cp, config_dir, bad, multi,
     trained, rerun) = out
    assert env.startswith("# @package env\n") and "max_cycles: 300" in env
    assert "max_cycles: ${env.max_cycles}" in job
    assert "max_cycles: 300" in resolved and "${" not in resolved
    assert name.strip() == "train"
    assert "hydra:\n" in everything and "\nhparams:\n" in everything
    assert "Defaults List" in info and "hparams/fighter" in info
    assert "train is powered by Hydra" in help_ and help_.endswith("=== exit 0\n")
    assert other.strip() == "30"  # evaluate.yaml's episodes
    assert cp.strip() == "41"
    assert "lr: 0.25" in config_dir
    assert bad.splitlines() == ["error: hparams.tau=7 is not allowed: tau must be in (0, 1]",
                                "=== exit 2"]
    assert multi.splitlines() == [
        "error: algo='nope' is not an option of 'algo' (choose from: "
        + ", ".join(sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))) + ")",
        "=== exit 2"]
    assert trained.strip().splitlines()[-1] == str(run / "policy.pt")
    assert rerun.strip().splitlines()[-1] == str(run / "policy.pt")  # the same job again


def test_hydra_flags_evaluate(configs, tmp_path):
    ev, sweep = tmp_path / "ev", tmp_path / "sweep"
    play = [f"checkpoint={CHAMPION}", "episodes=1", "max_cycles=5", "opponents=[random]"]
    out = run_commands("evaluate.py", [
        ["--cfg", "job", "-p", "opponents"],
        ["-c", "job"],
        ["-c", "job", "--resolve"],
        ["--cfg", "hydra", "-p", "hydra.job.name"],
        ["--cfg", "all"],
        ["--info", "config"],
        ["--help"],
        ["-cn", "config", "--cfg", "job", "-p", "env"],
        ["-cp", str(configs["copy"]), "--cfg", "job", "-p", "seed"],
        ["--config-dir", str(configs["extra"]), "-cn", "mine_eval", "--cfg", "job", "-p",
         "episodes"],
        ["episodes=0", f"checkpoint={CHAMPION}"],
        ["-m", *play, "seed=0,1", f"hydra.sweep.dir={sweep}"],
        [*play, f"hydra.run.dir={ev}", PICKLE_JOB],
        ["--experimental-rerun", str(ev / ".hydra" / "config.pickle")],
    ])
    (opponents, job, resolved, name, everything, info, help_, other, cp, config_dir, bad, multi,
     played, rerun) = out
    assert opponents.startswith("# @package opponents\n")
    assert "video_max_cycles: ${max_cycles}" in job
    assert "video_max_cycles: 300" in resolved and "${" not in resolved
    assert name.strip() == "evaluate"
    assert "hydra:\n" in everything and "\nepisodes: 30\n" in everything
    assert "Config" in info and "checkpoint: ???" in info
    assert "evaluate is powered by Hydra" in help_ and help_.endswith("=== exit 0\n")
    assert other.startswith("# @package env\n")
    assert cp.strip() == "42" and config_dir.strip() == "7"
    assert bad.splitlines()[0].startswith("error: episodes=0 is not allowed")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert all((sweep / n / "eval.json").is_file() for n in ("0", "1")), multi
    assert played.strip().splitlines()[-1] == str(ev / "eval.json")
    assert rerun.strip().splitlines()[-1] == str(ev / "eval.json")
    assert "played in" in rerun


# what other libraries print that a battle-rl user has no use for
NOISE = re.compile(r"GPU available|TPU available|litlogger|Tip:|LeafSpec|weights_only|"
                   r"anonymous|^wandb:|\[INFO\]|Warning|Epoch \d")


def note_at(lines: list[str], i: int) -> str:
    """The note starting at line ``i`` and its indented continuation lines, each at most 80
    columns, as one string."""
    end = i + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    assert all(len(ln) <= 80 for ln in lines[i:end]), lines[i:end]
    return " ".join(ln.strip() for ln in lines[i:end])


def test_default_run_without_course_files_is_clean(tmp_path):
    """A fresh machine: no course files. The default command (tiny) trains and evaluates on
    what ships, says so in one line, and shows nothing from other libraries."""
    empty = tmp_path / "no-opponents"
    empty.mkdir()
    run, ev = tmp_path / "run", tmp_path / "ev"
    env = {"BATTLE_RL_OPPONENTS_DIR": str(empty)}
    r = run_script("train.py", "env.max_cycles=20", "trainer.max_steps=20", "eval.episodes=1",
                   "eval.every_n_steps=10", "eval.final_episodes=1", "print_config=false",
                   "hparams.warmup=64", "hparams.batch_size=32", f"hydra.run.dir={run}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (r.stdout + r.stderr).strip().splitlines()
    notes = [i for i, ln in enumerate(lines)
             if ln.startswith("note: left out the course opponents")]
    assert len(notes) == 1
    note = note_at(lines, notes[0])  # wrapped to the 80 columns of the first screen
    assert "red.pt" in note and "red_final.pt" in note
    assert "opponents_dir=FOLDER" in note and "github.com" in note
    assert not [ln for ln in lines if NOISE.search(ln)], lines
    at = next(i for i, ln in enumerate(lines) if ln.startswith("run folder:"))
    where = " ".join(lines[at:at + 2])  # a second line where one would pass 80 columns
    assert f"wandb sync {run}/wandb/offline-run-*" in where
    bar = next(ln for ln in lines if "upd/s" in ln)
    assert len(bar) <= 80 and "20/20" in bar and "eps " in bar
    assert lines[-1] == str(run / "policy.pt")
    table = json.loads((run / "eval.json").read_text())
    assert table and not {"pretrained", "final"} & set(table)
    record = json.loads((run / "opponents.json").read_text())
    assert sorted(record["left_out"]) == ["final", "pretrained"]
    assert record["evaluation"] == list(table)
    assert not {"pretrained", "final"} & set(record["training"])

    r = run_script("evaluate.py", f"checkpoint={run / 'policy.pt'}", "episodes=1",
                   "max_cycles=5", f"hydra.run.dir={ev}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (r.stdout + r.stderr).strip().splitlines()
    notes = [i for i, ln in enumerate(lines) if ln.startswith("note: left out")]
    assert len(notes) == 1 and "red_final.pt" in note_at(lines, notes[0])
    assert not [ln for ln in lines if NOISE.search(ln)], lines
    assert list(json.loads((ev / "eval.json").read_text())) == ["random"]
    assert json.loads((ev / "opponents.json").read_text())["evaluation"] == ["random"]


@pytest.mark.parametrize("script,args", [
    ("train.py", ["opponent=pretrained"]),
    ("train.py", ["opponent.weights.final=1"]),
    ("train.py", ["eval.opponents=[random,final]"]),
    ("evaluate.py", [f"checkpoint={CHAMPION}", "opponents=[final]"]),
])
def test_named_course_opponent_without_its_file_is_an_error(tmp_path, script, args):
    r = run_script(script, *args, f"hydra.run.dir={tmp_path / 'run'}", timeout=300,
                   env={"BATTLE_RL_OPPONENTS_DIR": str(tmp_path)})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: opponent '") and "which is missing" in lines[0]
    assert not (tmp_path / "run" / "policy.pt").exists()


@needs_opponents
def test_with_course_files_nothing_is_left_out(tmp_path):
    from battle_rl.league.opponents import leave_out_missing, named_on_command_line

    names = ["random", "pretrained", "final", "scripted"]
    assert leave_out_missing(names, OPPONENTS, set()) == (names, [])
    assert leave_out_missing(names, tmp_path, set()) == (["random", "scripted"],
                                                         ["pretrained", "final"])
    assert leave_out_missing(names, tmp_path, {"final"}) == (["random", "final", "scripted"],
                                                             ["pretrained"])
    assert leave_out_missing(names, tmp_path, None) == (names, [])  # outside Hydra: strict
    assert named_on_command_line(["opponent=pretrained", "eval.opponents=[random,final]",
                                  "+opponent.weights.rival=1", "hparams.tau=0.1"]) == {
        "pretrained", "random", "final", "rival"}


def test_debug_shows_other_libraries_again(tmp_path):
    r = run_script("train.py", *TINY, "trainer.max_steps=5", "print_config=false", "debug=true",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "GPU available" in r.stdout + r.stderr


def test_tournament_defaults_without_course_files(tmp_path):
    out = tmp_path / "t"
    r = subprocess.run([sys.executable, "-m", "battle_rl.league.tournament", "--episodes", "1",
                        "--max-cycles", "3", "--bootstrap", "10", "--opponents-dir",
                        str(tmp_path), "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    notes = [ln for ln in r.stdout.splitlines() if ln.startswith("note: left out")]
    assert len(notes) == 1 and "--opponents-dir FOLDER" in notes[0]
    agents = [a["name"] for a in json.loads((out / "results.json").read_text())["agents"]]
    assert agents == ["champion", "scripted", "passive", "random"]
