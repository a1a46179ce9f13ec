"""battle-rl: multi-agent reinforcement learning on MAgent2's battle_v4 with Hydra and
PyTorch Lightning (see the README)."""

__version__ = "0.5.0.dev0"  # the one place of the version: pyproject.toml reads it from here (CHANGELOG.md)
