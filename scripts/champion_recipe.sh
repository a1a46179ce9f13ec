#!/usr/bin/env bash
# The shipped champion's whole recipe, end to end (about 2 hours on a 2-core CPU):
#
#   bash scripts/champion_recipe.sh [OUT]        # default OUT: runs/champion-recipe
#
# 1. rivals: four DDQNs of the kind people train on this game (the course recipe for 30 s
#    and for 3 minutes, the report's recipe against random, one trained against the scripted
#    agent), to join the league;
# 2. stage 1: self-play against the league (scripted agent, both course nets, random, the
#    learner's snapshots), both teams' transitions, `+experiment=champion_2026_11_29`;
# 3. stage 2: from stage 1's policy, the same league plus the rivals (less exploration);
#    then the tournament and `--install` (battle_rl/assets/champion.pt + champion.json).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/champion-recipe}
T="+experiment=course logger=csv eval.final_episodes=0 print_config=false"  # the defaults of its day

python train.py seed=10 $T hydra.run.dir=$OUT/rivals/ddqn-30s
python train.py seed=11 $T hydra.run.dir=$OUT/rivals/ddqn-3min eval.stop_win_rate=null \
    trainer.max_time=00:00:03:00
python train.py seed=12 $T hydra.run.dir=$OUT/rivals/report hparams=seed opponent=random
python train.py seed=13 $T hydra.run.dir=$OUT/rivals/vs-scripted opponent=scripted \
    eval.stop_win_rate=null trainer.max_time=00:00:05:00 \
    "eval.opponents=[random,pretrained,final,scripted]"

python scripts/train_champion.py --experiment champion_2026_11_29 --minutes 50 --out $OUT/stage1

R=$OUT/rivals
python scripts/train_champion.py --experiment champion_2026_11_29 --minutes 40 --out $OUT/stage2 --install \
    init_from=$OUT/stage1/policy.pt \
    hparams.epsilon.start=0.3 hparams.epsilon.decay=5000 \
    +policies.ddqn_30s=$R/ddqn-30s/policy.pt +policies.ddqn_3min=$R/ddqn-3min/policy.pt \
    +policies.report=$R/report/policy.pt +policies.vs_scripted=$R/vs-scripted/policy.pt \
    opponent.weights.random=0.25 opponent.weights.pretrained=0.5 opponent.weights.final=0.5 \
    opponent.weights.scripted=1.5 opponent.weights.self_play=2 \
    +opponent.weights.ddqn_30s=0.5 +opponent.weights.ddqn_3min=1 \
    +opponent.weights.report=0.5 +opponent.weights.vs_scripted=1 \
    "eval.opponents=[pretrained,final,scripted,ddqn_3min,vs_scripted]"
