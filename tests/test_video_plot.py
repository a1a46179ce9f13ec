"""Battle videos, plots and the training display, through the real encoders and entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import ROOT, TINY, run_script
from battle_rl.evaluation import Evaluator
from battle_rl.league.opponents import NetOpponent, RandomOpponent
from battle_rl.networks import build_q_network, export_policy
from battle_rl.outputs.video import COLORS, HEADER, VideoSettings, record_battle

FRAME = (8 * 45 + 16 + HEADER, 8 * 45)  # (height, width) of a 45x45 map with the score header


def plot_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "battle_rl.outputs.plot", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def read_gif(path: Path) -> list[np.ndarray]:
    return [np.asarray(Image.fromarray(f).convert("RGB")) for f in imageio.mimread(path)]


def read_mp4(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [f for f in reader]


def untrained_policy(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return build_q_network({}).eval()


def test_gif_and_mp4_have_every_frame_at_full_size(tmp_path):
    v = record_battle(untrained_policy(), RandomOpponent(0), tmp_path / "battle",
                      VideoSettings(max_cycles=10, fps=5))
    assert v.frames == 11 and v.score.cycle == 10  # the start, then one frame per cycle
    # nobody falls in 10 cycles, and the last frame says so (the parallel API reports every
    # agent done at the last cycle: the header counts from the engine)
    assert v.score.alive == {"red": 81, "blue": 81}
    gif, mp4 = read_gif(v.paths["gif"]), read_mp4(v.paths["mp4"])
    assert len(gif) == len(mp4) == 11
    assert {f.shape for f in gif} == {f.shape for f in mp4} == {(*FRAME, 3)}
    # the header carries the score in the team colours, above the map
    header = gif[-1][:HEADER].reshape(-1, 3)
    for team, color in COLORS.items():
        assert (np.abs(header.astype(int) - color).sum(1) < 30).any(), team
    with imageio.get_reader(v.paths["mp4"], format="FFMPEG") as reader:
        assert reader.get_meta_data()["fps"] == 5


def test_stride_and_gif_scale(tmp_path):
    v = record_battle(untrained_policy(), RandomOpponent(0), tmp_path / "battle",
                      VideoSettings(max_cycles=10, stride=3, gif_scale=0.5))
    assert v.frames == 5  # cycles 0, 3, 6, 9 and the last one, 10
    gif, mp4 = read_gif(v.paths["gif"]), read_mp4(v.paths["mp4"])
    assert len(gif) == len(mp4) == 5
    assert gif[0].shape == (FRAME[0] // 2, FRAME[1] // 2, 3) and mp4[0].shape == (*FRAME, 3)


def test_video_replays_the_evaluation_game_of_its_seed(tmp_path):
    blue, red = untrained_policy(0), NetOpponent(untrained_policy(1), "net")
    game = Evaluator(max_cycles=40, n_envs=1).play(blue, red, episodes=1, seed=7)[0]
    v = record_battle(blue, red, tmp_path / "battle", VideoSettings(max_cycles=40), seed=7)
    assert v.score.cycle == game.cycles
    assert v.score.kills == {"blue": game.blue_kills, "red": game.red_kills}


@pytest.mark.parametrize("key,value", [("fps", 0), ("stride", 1.5), ("gif_scale", 2.0)])
def test_bad_video_settings_are_refused(key, value):
    from battle_rl.config import ConfigError

    with pytest.raises(ConfigError, match=f"video {key}="):
        VideoSettings(**{key: value})


def eval_config(checkpoint: Path, **overrides):
    cfg = OmegaConf.load(ROOT / "conf" / "evaluate.yaml")
    del cfg["hydra"], cfg["defaults"]
    cfg.merge_with({"checkpoint": str(checkpoint), "episodes": 1, "max_cycles": 10,
                    "opponents": ["random"], "threads": 1, **overrides})
    return cfg


def test_evaluate_renders_only_when_asked(tmp_path, monkeypatch):
    """Without video=true no environment has a render mode and no file is written."""
    import magent2.environments.battle as battle  # battle_v4 re-imports its parallel_env here

    from battle_rl.evaluation import run_evaluation

    render_modes = []
    parallel_env = battle.parallel_env

    def spy(*args, **kwargs):
        render_modes.append(kwargs.get("render_mode"))
        return parallel_env(*args, **kwargs)

    monkeypatch.setattr(battle, "parallel_env", spy)
    policy = export_policy(untrained_policy(), tmp_path / "policy.pt")

    run_evaluation(eval_config(policy), tmp_path / "plain")
    assert render_modes and set(render_modes) == {None}
    assert not list((tmp_path / "plain").rglob("*.gif"))
    assert not list((tmp_path / "plain").rglob("*.mp4"))
    assert (tmp_path / "plain" / "eval.png").stat().st_size > 0  # the Table I chart

    render_modes.clear()
    run_evaluation(eval_config(policy, video=True), tmp_path / "video")
    assert render_modes.count("rgb_array") == 1  # one rendered game for the one opponent
    assert len(read_gif(tmp_path / "video" / "videos" / "random.gif")) == 11


def test_evaluate_command_with_video(tmp_path):
    policy = export_policy(untrained_policy(), tmp_path / "policy.pt")
    out = tmp_path / "eval"
    r = run_script("evaluate.py", f"checkpoint={policy}", "episodes=1", "max_cycles=10",
                   "opponents=[random]", "video=true", "video_stride=2", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(read_mp4(out / "videos" / "random.mp4")) == 6  # cycles 0, 2, 4, 6, 8, 10
    assert "on top of the table's" in r.stdout  # the overhead is reported
    assert r.stdout.strip().splitlines()[-1] == str(out / "eval.json")


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """A tiny run with the default W&B logger, evaluations, a video each and a final table."""
    out = tmp_path_factory.mktemp("wandb") / "run"
    overrides = [o for o in TINY if not o.startswith(("logger", "eval."))]
    r = run_script("train.py", *overrides, "trainer.log_every_n_steps=5", "eval.every_n_steps=10",
                   "eval.episodes=1", "eval.opponents=[random]", "eval.stop_win_rate=null",
                   "eval.final_episodes=1", "eval.video_every=2", "print_config=true",
                   f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_training_logs_videos_to_wandb(wandb_run):
    out, _ = wandb_run
    # evaluations at steps 10, 20, 30 (and the last weights' one, if they were not the best):
    # every second one has a video
    steps = [json.loads(line)["step"] for line in (out / "eval_history.jsonl").open()]
    assert len(steps) >= 3
    filmed = {f"step-{s:06d}-random.mp4" for s in steps[1::2]}
    assert {p.name for p in (out / "videos").glob("*.mp4")} == filmed
    logged = list((out / "wandb").glob("offline-run-*/files/media/videos/**/*.mp4"))
    assert len(logged) == len(steps) // 2 and all(p.stat().st_size > 0 for p in logged)


def test_training_display_config_tree_and_live_figures(wandb_run):
    _, r = wandb_run
    assert "config\n" in r.stdout and "├── hparams" in r.stdout
    assert "batch_size: 32" in r.stdout
    bar = next(ln for ln in r.stdout.splitlines() if "upd/s" in ln)  # one line, 80 columns
    assert len(bar) <= 80 and "30/30" in bar and "eps " in bar and "win " in bar
    assert "random" in bar and "Epoch" not in bar


def test_plot_command_writes_pngs_from_a_wandb_run(wandb_run, tmp_path):
    out, _ = wandb_run
    assert (out / "csv" / "metrics.csv").is_file()  # the local copy kept beside W&B
    assert (out / "eval.png").stat().st_size > 0  # the final Table I chart
    r = plot_command(str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    names = {"td_loss", "q_mean", "epsilon", "episode_reward", "win_rate", "overview"}
    for name in names:
        png = out / "plots" / f"{name}.png"
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
        # a drawn curve, not an empty frame: many distinct colours
        assert len(np.unique(np.asarray(Image.open(png).convert("L")))) > 20
    assert set(r.stdout.split()) >= {str(out / "plots" / f"{n}.png") for n in names}


def test_plot_command_without_metrics_says_so_in_one_line(tmp_path):
    r = plot_command(str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no metrics in" in lines[0] and "Traceback" not in r.stderr
