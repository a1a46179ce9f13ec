"""Hydra sweep configurations (``python train.py -m +sweep=NAME``), found through
``hydra.searchpath: [pkg://multirun_sweeps]`` in ``conf/config.yaml``.

This file only makes the folder importable, so Hydra finds it from any working directory
(``train.py``'s folder is on ``sys.path``). Groups:

- ``sweep/``: what to sweep (epsilon, tau, gamma, grid, optuna, ppo), 3 seeds per configuration
  (``seeds=N``); the report is written into the sweep folder when it ends
- ``budget/``: how long each job trains (``+budget=tiny`` for a smoke test)
- ``hydra/launcher/``: where jobs run (``local`` joblib processes, ``slurm``, ``ray_local``,
  ``ray_cluster``)
"""
