"""Battle videos: an episode rendered by MAgent2 (``rgb_array``), the score drawn on every
frame, written to MP4 (ffmpeg's libx264 through imageio-ffmpeg) and GIF (Pillow's encoder).

Nothing here runs unless a video is asked for: evaluation and training build their
environments without a render mode and import this module only when videos are on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from battle_rl.config import ConfigError
from battle_rl.env import DEFAULT_REWARD, TEAMS, BattleEnv
from battle_rl.league.opponents import Opponent
from battle_rl.mean_field import mean_action, rows_mean_action
from battle_rl.networks import greedy_actions

# rgb_array draws on off-screen surfaces; the dummy driver keeps pygame from seeking a display
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

COLORS = {"red": (192, 64, 64), "blue": (64, 64, 192)}  # MAgent2's team colours
HEADER = 34  # pixels above the map for the score (even: MP4 frames need no resizing)


@dataclass
class VideoSettings:
    fps: int = 10  # playback frames per second
    max_cycles: int = 300
    stride: int = 1  # render every k-th cycle (and the last): k times fewer frames and seconds
    gif_scale: float = 1.0  # the GIF's frames are resized by this factor (the MP4's are not)

    def __post_init__(self):
        def integer(x, low):
            return int(x) == x and x >= low

        for key, ok, allowed in (
            ("fps", integer(self.fps, 1), "an integer >= 1"),
            ("max_cycles", integer(self.max_cycles, 1), "an integer >= 1"),
            ("stride", integer(self.stride, 1), "an integer >= 1"),
            ("gif_scale", 0.0 < self.gif_scale <= 1.0, "in (0, 1]"),
        ):
            if not ok:
                raise ConfigError(f"video {key}={getattr(self, key)!r} is not allowed: {allowed}")


    @classmethod
    def from_config(cls, node) -> VideoSettings:
        """From the ``video_*`` keys of evaluate.yaml, or of the ``eval`` group in training."""
        return cls(fps=node.video_fps, max_cycles=node.video_max_cycles,
                   stride=node.video_stride, gif_scale=node.video_gif_scale)


@dataclass
class Score:
    """The state of the game shown on a frame."""

    cycle: int
    max_cycles: int
    kills: dict[str, int]
    alive: dict[str, int]
    names: dict[str, str]  # team -> who plays it


def play_frames(blue: nn.Module, red: Opponent, max_cycles: int = 300, seed: int = 0,
                stride: int = 1, map_size: int = 45) -> Iterator[tuple[np.ndarray, Score]]:
    """One episode of blue (greedy) vs red under the game's default rewards, as
    ``(frame, score)`` at cycles 0, stride, 2 * stride, ... and at the last cycle."""
    env = BattleEnv(map_size, max_cycles, DEFAULT_REWARD, render_mode="rgb_array")
    names = {"blue": "blue (policy)", "red": f"red ({red.name})"}
    kills = {t: 0 for t in TEAMS}
    done = False
    try:
        red.new_episode()
        obs = env.reset(seed=seed)
        blue_mean = None
        while True:
            if done or env.cycle % stride == 0:
                yield env.render(), Score(env.cycle, max_cycles, dict(kills), standing(env), names)
            if done:
                return
            alive = env.alive
            # an MF-Q blue gets its team's mean action of the previous cycle
            mean = rows_mean_action(blue_mean, len(obs["blue"]))
            blue_acts = greedy_actions(blue, obs["blue"], alive["blue"], mean_action=mean)
            blue_mean = mean_action(blue_acts, alive["blue"])
            step = env.step({"blue": blue_acts, "red": red.act(obs["red"], alive["red"])})
            obs, done = step.obs, step.done
            for t in TEAMS:
                kills[t] += step.kills[t]
    finally:
        env.close()


def standing(env: BattleEnv) -> dict[str, int]:
    """Agents alive per team, from the game engine (as MAgent2's own banner counts them): at
    the last cycle the parallel API reports every agent done, survivors included."""
    grid = env.env.env
    return {t: int(grid.get_alive(h).sum()) for t, h in zip(TEAMS, grid.get_handles())}


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def draw_score(frame: np.ndarray, score: Score, font=None) -> np.ndarray:
    """The frame under a header: who plays each team, kills, agents left, and the cycle."""
    font = font or _font()
    h, w, _ = frame.shape
    img = Image.new("RGB", (w, h + HEADER), "white")
    img.paste(Image.fromarray(frame), (0, HEADER))
    draw = ImageDraw.Draw(img)

    def text(x, y, s, fill, align):
        x -= {"left": 0, "right": 1, "center": 0.5}[align] * draw.textlength(s, font=font)
        draw.text((x, y), s, fill=fill, font=font)

    for team, x, align in (("blue", 6, "left"), ("red", w - 6, "right")):
        text(x, 1, score.names[team], COLORS[team], align)
        text(x, HEADER // 2, f"{score.kills[team]} kills, {score.alive[team]} left",
             COLORS[team], align)
    text(w / 2, HEADER // 4, f"cycle {score.cycle}/{score.max_cycles}", "black", "center")
    return np.asarray(img)


def _palette() -> Image.Image:
    """One palette for every GIF frame: white, and shades from white to each colour the
    renderer and the header use (antialiased text lands on them). Quantising to a fixed
    palette is ~15x faster than an adaptive one per frame, and the file is half the size."""
    inks = [(0, 0, 0), (127, 127, 127), *COLORS.values()]
    t = np.linspace(0.0, 1.0, 16)[:, None]
    shades = np.concatenate([255 + t * (np.array(c) - 255) for c in inks]).round()
    colors = np.unique(np.concatenate([[[255, 255, 255]], shades]).astype(np.uint8), axis=0)
    pal = Image.new("P", (1, 1))
    pal.putpalette(colors.ravel().tolist())
    return pal


def write_video(frames: Iterable[np.ndarray], stem: str | Path, fps: int = 10,
                gif_scale: float = 1.0) -> dict[str, Path]:
    """Frames -> ``stem.mp4`` (streamed to ffmpeg) and ``stem.gif`` (resized by
    ``gif_scale``), both at ``fps`` frames per second."""
    import imageio.v2 as imageio

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"mp4": stem.with_suffix(".mp4"), "gif": stem.with_suffix(".gif")}
    # yuv420p needs even sizes; ours are, so macro_block_size=2 means no resizing
    mp4 = imageio.get_writer(paths["mp4"], format="FFMPEG", fps=fps, codec="libx264",
                             macro_block_size=2, ffmpeg_log_level="error")
    palette, gif = _palette(), []
    try:
        for frame in frames:
            mp4.append_data(frame)
            img = Image.fromarray(frame)
            if gif_scale != 1.0:
                img = img.resize((round(img.width * gif_scale), round(img.height * gif_scale)),
                                 Image.Resampling.LANCZOS)
            gif.append(img.quantize(palette=palette, dither=Image.Dither.NONE))
    finally:
        mp4.close()
    # the last frame holds for 2 s, so the final score can be read before the GIF loops
    durations = [1000 / fps] * (len(gif) - 1) + [max(2000, 1000 / fps)]
    gif[0].save(paths["gif"], save_all=True, append_images=gif[1:], duration=durations, loop=0)
    return paths


@dataclass
class BattleVideo:
    paths: dict[str, Path]
    frames: int
    score: Score  # at the last frame
    seconds: float  # playing, rendering and encoding


def record_battle(blue: nn.Module, red: Opponent, stem: str | Path,
                  settings: VideoSettings | None = None, seed: int = 0,
                  map_size: int = 45) -> BattleVideo:
    """Play one episode of ``blue`` vs ``red`` and write it to ``stem.mp4`` and ``stem.gif``."""
    s = settings or VideoSettings()
    t0 = time.perf_counter()
    font = _font()
    seen: list[Score] = []

    def annotated():
        for frame, score in play_frames(blue, red, s.max_cycles, seed, s.stride, map_size):
            seen.append(score)
            yield draw_score(frame, score, font)

    # one game's forward (<= 81 observations) gains nothing from intra-op threads, and ffmpeg
    # encodes beside it: on 2 busy cores one torch thread renders ~6x faster (measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = write_video(annotated(), stem, s.fps, s.gif_scale)
    finally:
        torch.set_num_threads(threads)
    return BattleVideo(paths, len(seen), seen[-1], time.perf_counter() - t0)


def record_battles(blue: nn.Module, opponents: dict[str, Opponent], out_dir: str | Path,
                   settings: VideoSettings | None = None, seed: int = 0,
                   map_size: int = 45) -> dict[str, BattleVideo]:
    """One battle per opponent, to ``out_dir/<opponent>.mp4`` and ``.gif``."""
    return {name: record_battle(blue, red, Path(out_dir) / name, settings, seed, map_size)
            for name, red in opponents.items()}
