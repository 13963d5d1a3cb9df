#!/usr/bin/env bash
# The GPU checks behind docs/gpu.md, in parts that fit one device call each:
#
#   bash scripts/gpu_checks.sh OUTDIR PART [PART...]
#
# PART: smoke (README smoke run, wall time), compile_ahead (the same, cache off, with
# eval.compile_ahead off, end, on), members (ILCM main phase, d=4, 1/9/64/256
# members), steps (steps/s per method and phase, 1 and 9 members), eval (the 9-member
# dim_z=4 sweep, training plus evaluation), balls_bench (stage-1 steps/s at batch 256), balls
# (both stages at the README's data sizes, stage-1 epochs from $BALLS_EPOCHS), nonlinear
# (3-seed sweeps on nonlinear mechanisms and flow mixing, full schedule, four methods side by
# side on the one GPU).
# Each part logs to OUTDIR/PART.log (benchmarks: JSON lines) and keeps its workdirs under
# OUTDIR/runs; with PACK=FILE set, all of it but checkpoints and codes is archived to FILE
# after each part. Needs the package importable (PYTHONPATH or pip install -e .).
set -uo pipefail
out=$(realpath -m "$1"); shift
mkdir -p "$out/runs"
py=${PYTHON:-python3}
sweep="--config.sweep.seeds=4901,4902,4903 --config.sweep.data_seeds=302,303,304"
stamp() { date +%s%N; }
since() { echo "$(( ($(stamp) - $1) / 1000000 ))"; }  # milliseconds since $1

run_part() {
  local part=$1 t0
  t0=$(stamp)
  echo "== $part: start $(date -u +%T)"
  "part_$part" > "$out/$part.log" 2>&1
  echo "== $part: rc $? in $(since $t0) ms"
  # PACK=FILE: after each part, everything but checkpoints and codes in one archive
  [ -n "${PACK:-}" ] && tar czf "$PACK" -C "$out" --exclude=checkpoints --exclude=encoded .
}

part_smoke() {
  local t0; t0=$(stamp)
  $py scripts/train.py --config configs/scaling.py:ilcm,fast --workdir "$out/runs/smoke" \
    --config.data.dim_z=3 --config.seed=42 --config.data.nature.seed=42
  echo "wall_ms $(since $t0)"
  cat "$out/runs/smoke/metrics/test_metrics.csv"
}

# the smoke run with the evaluation compiling its own programs, with them compiled beside it from
# the end of training (`auto` on a CPU), then while training runs (`auto` on a GPU)
part_compile_ahead() {
  local t0 mode
  for mode in off end on; do
    t0=$(stamp)
    WSCRL_JAX_CACHE= $py scripts/train.py --config configs/scaling.py:ilcm,fast \
      --workdir "$out/runs/smoke_ahead_$mode" --config.data.dim_z=3 --config.seed=42 \
      --config.data.nature.seed=42 --config.eval.compile_ahead=$mode
    echo "compile_ahead_${mode}_wall_ms $(since $t0)"
  done
}

part_members() {
  $py scripts/benchmark.py --methods ilcm --phases main --dims 4 --members 1,9,64,256 \
    --plot "$out/members_gpu.png"
}

part_steps() {
  $py scripts/benchmark.py --methods ilcm --dims 3,4,8 --members 1
  $py scripts/benchmark.py --methods ilcm --dims 4 --members 9
  $py scripts/benchmark.py --methods dvae --phases pretrain --dims 4 --members 1,9
  $py scripts/benchmark.py --methods betavae --phases pretrain,main --dims 4 --members 1,9
  $py scripts/benchmark.py --methods "" --members 1,9 --md-z-dim 8 --md-domains 4 \
    --md-variants "linear+none,linear+mmd,linear+mmd@model.mmd.fix_sigma=1.0,linear+minmax"
}

part_eval() {
  local t0; t0=$(stamp)
  $py scripts/train.py --config configs/scaling.py:ilcm,fast --workdir "$out/runs/sweep4" \
    --config.data.dim_z=4 $sweep
  echo "wall_ms $(since $t0)"
  cat "$out/runs/sweep4/metrics/test_metrics.csv"
}

part_balls_bench() {
  $py scripts/benchmark.py --methods "" --balls resnet18,cnn --members 1 --steps 20 --calls 3 \
    --balls-images 5120
}

part_balls() {
  local s1="$out/runs/balls_s1" t0
  t0=$(stamp)
  $py scripts/train.py --config configs/md_balls.py:stage1 --workdir "$s1" \
    --config.training.epochs="${BALLS_EPOCHS:-20}"
  echo "stage1_wall_ms $(since $t0)"
  for penalty in minmax none; do
    t0=$(stamp)
    $py scripts/train.py --config "configs/md_balls.py:stage2,$penalty" \
      --workdir "$out/runs/balls_s2_$penalty" --config.data.stage1_workdir="$s1" \
      --config.sweep.seeds=1235,4256,49685,7383,9271 --config.training.epochs=300
    echo "stage2_${penalty}_wall_ms $(since $t0)"
    cat "$out/runs/balls_s2_$penalty/metrics/test_metrics.csv"
  done
}

part_nonlinear() {
  # Four sweeps at once on the one GPU, each with an eighth of its memory.
  local data="--config.data.dim_z=4 --config.data.nature.mechanisms=nonlinear"
  data="$data --config.data.mixing=flow $sweep"
  local name
  for name in ilcm ilcm_spline dvae betavae; do
    local config="configs/scaling.py:${name%_spline}" extra=""
    [ "$name" = ilcm_spline ] && extra="--config.model.scm.transform=rq_spline"
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.12 $py scripts/train.py --config "$config" \
      --workdir "$out/runs/nl_$name" $data $extra > "$out/runs/nl_$name.log" 2>&1 &
  done
  wait
  for name in ilcm ilcm_spline dvae betavae; do
    echo "== $name"; tail -3 "$out/runs/nl_$name.log"
    cat "$out/runs/nl_$name/metrics/test_metrics.csv"
  done
}

for part in "$@"; do run_part "$part"; done
