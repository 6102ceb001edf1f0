#!/usr/bin/env bash
# Reproduce every figure of docs/RESULTS.md. Each experiment writes runs/experiments/<name>/
# (per-run metrics, results.md, results.json, plots); its results.md, results.json and plots are
# then copied into docs/results/<name>/. `bash scripts/results.sh sim` runs only the simulator
# experiments (minutes); `loop` only the real tiny-model loop (about 18 hours, one run at a
# time; a finished run is skipped and an unfinished one resumed when the script is run again).
set -euo pipefail
cd "$(dirname "$0")/.."
KRL=${KRL:-.venv/bin/krl}
what=${1:-all}

publish() {
  local name=$1
  mkdir -p "docs/results/$name"
  cp "runs/experiments/$name"/{results.md,results.json,*.png} "docs/results/$name/"
}

# link_uniform FROM TO SEED...: TO reuses FROM's uniform runs (uniform reads no solve setting)
link_uniform() {
  local from=$1 to=$2; shift 2
  mkdir -p "runs/experiments/$to/runs"
  for s in "$@"; do
    ln -sfn "../../$from/runs/uniform-seed$s" "runs/experiments/$to/runs/uniform-seed$s"
  done
}

experiment() {
  local name=$1; shift
  "$KRL" experiment --out "runs/experiments/$name" "$@"
  publish "$name"
}

# default_and_paper NAME SEEDS WHAT FLAG...: the default (NAME) and the paper's objective
# (NAME-paper) against one set of uniform runs, then the two head to head
default_and_paper() {
  local name=$1 seeds=$2 what=$3; shift 3
  experiment "$name" "$@" --strategies uniform,knapsack-eb --seeds "$seeds" \
    --title "$what: the default vs uniform (uniform at 2x)"
  link_uniform "$name" "$name-paper" ${seeds//,/ }
  experiment "$name-paper" "$@" --objective paper --strategies uniform,knapsack-eb \
    --seeds "$seeds" --title "$what: the paper's objective vs uniform (uniform at 2x)"
  "$KRL" pool "docs/results/$name-paper" --against "docs/results/$name"
}

if [[ $what == all || $what == sim ]]; then
  # the repo's default population and learning model
  experiment sim-default --seeds 5 --steps 1000
  # a fixed population: effective ratios that depend on no learning model
  experiment sim-static --seeds 5 --steps 500 --lr-shared 0 --lr-own 0 \
    --title "simulator, fixed population beta:0.2,0.4 (no learning)"
  # the learning model's loss aggregation: the trainer's token mean instead of a constant divisor
  experiment sim-token-mean --seeds 5 --steps 1000 --loss-agg token-mean \
    --title "simulator, population beta:0.2,0.4, token-mean loss aggregation"
  # held-out populations, chosen before any were run and never tuned on: a large dataset (a
  # prompt returns every 256 steps), an easy fast-moving one, a hard one, graded levels with
  # an unsolvable level
  experiment heldout-large --seeds 3 --steps 1000 --difficulty beta:0.3,0.5 --prompts 16384 \
    --title "held-out: beta:0.3,0.5, 16,384 prompts (revisit every 256 steps)"
  experiment heldout-easy --seeds 3 --steps 600 --difficulty beta:1.2,0.8 --prompts 2048 \
    --title "held-out: beta:1.2,0.8, 2,048 prompts"
  experiment heldout-hard --seeds 3 --steps 800 --difficulty beta:0.5,2 --prompts 4096 \
    --title "held-out: beta:0.5,2, 4,096 prompts"
  experiment heldout-levels --seeds 3 --steps 400 --difficulty levels:0,0.05,0.2,0.5,0.9 \
    --title "held-out: levels 0, 0.05, 0.2, 0.5, 0.9, 1,024 prompts"
  # a second held-out set, picked (2026-12) before the gradient objective was run on any of
  # them: a skewed-hard mid-size set, graded levels with an unsolvable one, a unimodal
  # moderate set, a 20,000-prompt easy-skewed set (revisit every 312 steps), a very hard set
  experiment heldout2-skewed --seeds 3 --steps 800 --difficulty beta:0.3,0.8 --prompts 8192 \
    --title "held-out: beta:0.3,0.8, 8,192 prompts"
  experiment heldout2-levels --seeds 3 --steps 600 --difficulty levels:0,0.02,0.1,0.4,0.8,0.97 \
    --prompts 3000 --title "held-out: levels 0, 0.02, 0.1, 0.4, 0.8, 0.97, 3,000 prompts"
  experiment heldout2-moderate --seeds 3 --steps 500 --difficulty beta:2,2 --prompts 1024 \
    --title "held-out: beta:2,2, 1,024 prompts"
  experiment heldout2-huge --seeds 3 --steps 1000 --difficulty beta:0.6,0.3 --prompts 20000 \
    --title "held-out: beta:0.6,0.3, 20,000 prompts (revisit every 312 steps)"
  experiment heldout2-veryhard --seeds 3 --steps 800 --difficulty beta:0.2,1.5 --prompts 4096 \
    --title "held-out: beta:0.2,1.5, 4,096 prompts"
  # the original GRPO's group mean: every group weighs 1/M whatever its n; the default
  # objective, and the objective made for that loss (group-gradient)
  experiment sim-group-mean --seeds 5 --steps 1000 --loss-agg group-mean \
    --title "simulator, population beta:0.2,0.4, group-mean loss aggregation"
  experiment sim-group-mean-objective --seeds 5 --steps 1000 --loss-agg group-mean \
    --objective group-gradient --strategies uniform,knapsack-eb,knapsack-paper \
    --title "simulator, group-mean loss aggregation, knapsack-eb with objective group-gradient"
fi
if [[ $what == all || $what == loop ]]; then
  # The learning benchmark (about 15 hours one run at a time; two experiments side by side
  # with KRL_ROLLOUT_THREADS_PER_REPLICA=1 and --threads 1 use 2 cores best). One shared
  # warm-up per draw (warmup_seed 0 unless given); the seed changes the data order and
  # sampling only, so runs pair by seed.
  # The default (prompt-mean loss, declared; group-gradient) against uniform in the same
  # trainer, 8 seeds, 1,536 held-out items, uniform given twice the rollouts to read how many
  # it needs to match
  experiment loop-reverse-pm --backend loop --seeds 100,101,102,103,104,105,106,107 \
    --steps 120 --baseline-factor 2 --eval-per-level 256 --threads 1 \
    --strategies uniform,knapsack-eb
  # knapsack-probe (a uniform probe of 4 per prompt, then the budget allocated again with n >= 4,
  # so the first epoch is allocated too) and the default against uniform on 8 other seeds
  experiment loop-reverse-probe --backend loop --seeds 401,402,403,404,405,406,407,408 \
    --steps 120 --baseline-factor 2 --eval-per-level 256 --threads 1 \
    --strategies uniform,knapsack-eb,knapsack-probe
  # the second task, reasoning-gym's spell_backward (its generator and scorer) in six levels
  experiment loop-spell-pm --backend loop --task reasoning_gym:spell_backward \
    --seeds 200,201,202,203,204,205,206,207 --steps 96 --train-per-level 256 \
    --eval-per-level 256 --max-new-tokens 14 --warmup-steps 50 --threads 1 \
    --strategies uniform,knapsack-eb
  # spell_backward with binary rewards (--reward success: the loss sees 1 or 0, as in the paper;
  # partial credit gave 99% of rollouts a gradient under uniform), uniform at twice the rollouts:
  # the default against uniform on 16 paired seeds picked before any run, and knapsack-probe on
  # the first 8 of them
  spell=(--backend loop --task reasoning_gym:spell_backward --steps 96 --train-per-level 256
    --eval-per-level 256 --max-new-tokens 14 --warmup-steps 50 --threads 1 --reward success
    --baseline-factor 2)
  experiment loop-spell-binary "${spell[@]}" \
    --seeds 501,502,503,504,505,506,507,508,509,510,511,512,513,514,515,516 \
    --strategies uniform,knapsack-eb \
    --title "tiny-model loop, reasoning-gym spell_backward, binary rewards (--reward success), M=64, B=512"
  experiment loop-spell-binary-probe "${spell[@]}" --seeds 501,502,503,504,505,506,507,508 \
    --strategies uniform,knapsack-eb,knapsack-probe \
    --title "tiny-model loop, reasoning-gym spell_backward, binary rewards (--reward success), M=64, B=512"
  # the same on a fresh draw (warm-up seed 1: other words, another initial model), 16 seeds
  # picked before any run, to check that the gain is not one warm-up's
  experiment loop-spell-binary-w1 "${spell[@]}" --warmup-seed 1 \
    --seeds 601,602,603,604,605,606,607,608,609,610,611,612,613,614,615,616 \
    --strategies uniform,knapsack-eb \
    --title "tiny-model loop, spell_backward, binary rewards, warm-up seed 1 (a fresh draw of words and model), M=64, B=512"
  # a third draw (warm-up seed 2), 16 paired seeds picked before any run (1207, 1208, 1215 and
  # 1216 ran a session later, under a rule written before they started)
  experiment loop-spell-binary-w2 "${spell[@]}" --warmup-seed 2 \
    --seeds 1201,1202,1203,1204,1205,1206,1207,1208,1209,1210,1211,1212,1213,1214,1215,1216 \
    --strategies uniform,knapsack-eb \
    --title "tiny-model loop, spell_backward, binary rewards, warm-up seed 2 (a third draw of words and model), M=64, B=512"
  # a third task, picked after the spell_backward claim: reasoning-gym's letter_counting (binary:
  # an integer answer), 16 paired seeds declared before any was read, uniform at the same budget
  letters=(--backend loop --task reasoning_gym:letter_counting --steps 96 --train-per-level 256
    --eval-per-level 256 --max-new-tokens 3 --warmup-steps 50 --threads 1 --reward success)
  letters16=(--baseline-factor 1 --strategies uniform,knapsack-eb
    --seeds 1301,1302,1303,1304,1305,1306,1307,1308,1309,1310,1311,1312,1313,1314,1315,1316)
  experiment loop-letters-binary "${letters[@]}" "${letters16[@]}" \
    --title "letter_counting (reasoning-gym), binary rewards: default vs uniform at equal rollouts, M=64, B=512"
  # screen: knapsack-eb with the paper's objective on the same seeds, uniform's runs reused
  # (a rerun of uniform on the same warm model reproduces them exactly)
  link_uniform loop-letters-binary loop-letters-paper 1301 1302 1303 1304 1305 1306 1307 1308 \
    1309 1310 1311 1312 1313 1314 1315 1316
  experiment loop-letters-paper "${letters[@]}" "${letters16[@]}" --objective paper \
    --title "letter_counting, binary: knapsack-eb with the paper's objective vs uniform"
  # the confirmation of the paper's objective (declared before that screen's last seeds were
  # read), fresh seeds: the default and the paper's objective against one set of uniform runs
  # (uniform at twice the rollouts). spell_backward binary, warm-up seed 2:
  default_and_paper loop-spell-fresh \
    1501,1502,1503,1504,1505,1506,1507,1508,1509,1510,1511,1512,1513,1514,1515,1516 \
    "spell_backward binary, warm-up seed 2, fresh seeds" "${spell[@]}" --warmup-seed 2
  # reverse, warm-up seed 2 (loop-reverse-w2-fresh's settings, uniform at 2x):
  default_and_paper loop-reverse-fresh 1601,1602,1603,1604,1605,1606,1607,1608 \
    "Reverse, warm-up seed 2, fresh seeds" --backend loop --warmup-seed 2 --steps 120 \
    --baseline-factor 2 --eval-per-level 256 --threads 1
  # letter_counting binary, its 16 declared fresh seeds in two halves of 8 on one warm model
  # (the second half ran a session later, on the same cached warm-up), then the 16 together:
  # each arm against uniform, and the two head to head
  default_and_paper loop-letters-fresh-a 1401,1402,1403,1404,1405,1406,1407,1408 \
    "letter_counting binary, fresh seeds" "${letters[@]}" --baseline-factor 2
  default_and_paper loop-letters-fresh-b 1409,1410,1411,1412,1413,1414,1415,1416 \
    "letter_counting binary, fresh seeds" "${letters[@]}" --baseline-factor 2
  "$KRL" pool docs/results/loop-letters-fresh-{a,b}-paper
  "$KRL" pool docs/results/loop-letters-fresh-{a,b}
  "$KRL" pool docs/results/loop-letters-fresh-{a,b}-paper --against docs/results/loop-letters-fresh-{a,b}
  # the decision on the paper's objective as the default (RESULTS.md "Declared, running"): a draw
  # never run (warm-up seed 3) on the three tasks, 12 declared seeds each in batches of four, one
  # torch thread per rollout replica as they ran (two runs side by side)
  export KRL_ROLLOUT_THREADS_PER_REPLICA=1
  default_and_paper loop-reverse-w3-a 1701,1702,1703,1704 \
    "Reverse, warm-up seed 3 (the decision's draw)" --backend loop --warmup-seed 3 --steps 120 \
    --baseline-factor 2 --eval-per-level 256 --threads 1
  default_and_paper loop-spell-w3-a 1801,1802,1803,1804 \
    "spell_backward binary, warm-up seed 3 (the decision's draw)" "${spell[@]}" --warmup-seed 3
  unset KRL_ROLLOUT_THREADS_PER_REPLICA
  # docs/results/loop-reverse-fresh-headroom and loop-letters-fresh-a-headroom (the screen of
  # group-headroom, which left the product by its declared rule) were measured at ac4c6f7:
  # `git checkout ac4c6f7 && bash scripts/results.sh loop`
  # reverse on a fresh draw (warm-up seed 1: other training and held-out strings, another
  # initial model), 8 seeds picked before any run
  experiment loop-reverse-w1 --backend loop --warmup-seed 1 \
    --seeds 701,702,703,704,705,706,707,708 --steps 120 --baseline-factor 2 \
    --eval-per-level 256 --threads 1 --strategies uniform,knapsack-eb \
    --title "tiny-model loop, reverse, warm-up seed 1 (a fresh draw of strings and model), M=64, B=512"
  # screen: knapsack-eb with the paper's objective on the same runs' seeds, uniform's runs reused
  link_uniform loop-reverse-w1 loop-reverse-w1-paper 701 702 703 704 705 706 707 708
  experiment loop-reverse-w1-paper --backend loop --warmup-seed 1 --objective paper \
    --seeds 701,702,703,704,705,706,707,708 --steps 120 --baseline-factor 2 \
    --eval-per-level 256 --threads 1 --strategies uniform,knapsack-eb \
    --title "screen: knapsack-eb with the paper objective, reverse, warm-up seed 1"
  # screen: a task setting not run before, 128 training strings per level (ten epochs)
  experiment loop-reverse-tpl128 --backend loop --seeds 901,902,903,904,905,906,907,908 --steps 120 \
    --baseline-factor 2 --eval-per-level 256 --threads 1 --train-per-level 128 \
    --strategies uniform,knapsack-eb \
    --title "tiny-model loop, reverse with 128 training strings per level (ten epochs), M=64, B=512"
  # reverse on a third draw (warm-up seed 2), seeds picked before any run
  experiment loop-reverse-w2 --backend loop --warmup-seed 2 \
    --seeds 1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012 \
    --steps 120 --baseline-factor 2 --eval-per-level 256 --threads 1 \
    --strategies uniform,knapsack-eb \
    --title "tiny-model loop, reverse, warm-up seed 2 (a third draw of strings and model), M=64, B=512"
  # screen: a floor on n (--min-n 4 = B/M/2), on the third draw's seeds, uniform's runs reused
  link_uniform loop-reverse-w2 loop-reverse-w2-floor4 \
    1001 1002 1003 1004 1005 1006 1007 1008 1009 1010 1011 1012
  experiment loop-reverse-w2-floor4 --backend loop --warmup-seed 2 --min-n 4 \
    --seeds 1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012 \
    --steps 120 --baseline-factor 2 --eval-per-level 256 --threads 1 \
    --strategies uniform,knapsack-eb \
    --title "Reverse, third draw: knapsack-eb with min_n 4 against uniform"
  # the same draw on fresh seeds (picked before the screen ran): the default and the floor,
  # both against one set of uniform runs
  experiment loop-reverse-w2-fresh --backend loop --warmup-seed 2 --seeds 1101,1102,1103,1104 \
    --steps 120 --baseline-factor 2 --eval-per-level 256 --threads 1 \
    --strategies uniform,knapsack-eb \
    --title "Reverse, third draw, fresh seeds: the default against uniform"
  link_uniform loop-reverse-w2-fresh loop-reverse-w2-fresh-floor4 1101 1102 1103 1104
  experiment loop-reverse-w2-fresh-floor4 --backend loop --warmup-seed 2 --min-n 4 \
    --seeds 1101,1102,1103,1104 --steps 120 --baseline-factor 2 --eval-per-level 256 \
    --threads 1 --strategies uniform,knapsack-eb \
    --title "Reverse, third draw, fresh seeds: knapsack-eb with min_n 4 against uniform"
  # the floor head to head with the default, seed by seed, on both sets of seeds
  "$KRL" pool docs/results/loop-reverse-w2-floor4 docs/results/loop-reverse-w2-fresh-floor4 \
    --against docs/results/loop-reverse-w2 docs/results/loop-reverse-w2-fresh
  # the pooled figures: every reverse draw of the default, both binary spell_backward draws
  "$KRL" pool docs/results/loop-reverse-pm docs/results/loop-reverse-probe \
    docs/results/loop-reverse-w1 docs/results/loop-reverse-w2 docs/results/loop-reverse-w2-fresh
  "$KRL" pool docs/results/loop-reverse-pm docs/results/loop-reverse-probe \
    docs/results/loop-reverse-w1 docs/results/loop-reverse-w2 docs/results/loop-reverse-w2-fresh \
    docs/results/loop-reverse-fresh
  "$KRL" pool docs/results/loop-spell-binary docs/results/loop-spell-binary-w1 \
    docs/results/loop-spell-binary-w2
  "$KRL" pool docs/results/loop-spell-binary docs/results/loop-spell-binary-w1 \
    docs/results/loop-spell-binary-w2 docs/results/loop-spell-fresh
  # the paper's objective on reverse over the screen and the confirmation (a description)
  "$KRL" pool docs/results/loop-reverse-w1-paper docs/results/loop-reverse-fresh-paper
  # docs/results/loop-reverse and loop-reverse-sqrt-gradient (the token-mean trainer, 5 seeds)
  # were measured with release 572e7a0: `git checkout 572e7a0 && bash scripts/results.sh loop`
fi
if [[ $what == all || $what == calibration ]]; then
  # the value models' predictive log-loss on simulated traces and on the real loop's histories
  runs=()
  for d in runs/experiments/loop-reverse/runs/*-seed*; do runs+=(--run "$d"); done
  "$KRL" calibrate --out runs/calibration --sim beta:0.3,0.5:4096:300 \
    --sim levels:0,0.05,0.3,0.7,0.95:1024:200 --sim beta:1.2,0.8:2048:200 \
    --sim beta:0.5,2:4096:300 "${runs[@]}"
  mkdir -p docs/results/calibration
  cp runs/calibration/{results.md,results.json,calibration.png} docs/results/calibration/
fi
