#!/usr/bin/env bash
# The rectified coupling (docs/method.md, section 7) against the recipe: a uniform-source DFM model
# draws pairs (x0, x1) at $PAIR_STEPS steps (data/rectified/prepare.py), is fine-tuned on them (round 1),
# draws pairs again and is fine-tuned again (round 2); the recipe's student (config/shakespeare_char_cpu_student.py)
# is distilled from the original model and from each rectified one. All are scored by the AR judge
# against the ORIGINAL model's frontier (DFM, cumulative, $REFERENCE_STEPS steps, several temperatures):
# the distribution to match is the original model's.
#
#   DFM=out-teacher-curve/dfm-8000/best.pt JUDGE=out-teacher-curve/ar/best.pt bash config/reproduce_rectified.sh
#   DFM=... JUDGE=... PAIRS=32 PAIR_STEPS=4 TUNE_ARGS="--max_iters=10" STUDENT_ARGS="--max_iters=10" SAMPLES=4 \
#       REFERENCE_STEPS=8 REFERENCE_TEMPERATURES=1.0,0.9 OUT=out-smoke bash config/reproduce_rectified.sh  # minutes
#
# DFM is the original model (trained by config/reproduce_teacher_curve.sh or train.py with --source=uniform),
# JUDGE the AR judge. Pair counts and steps: 4,096 pairs of 128 tokens (the model's context) at 128 steps
# take about 25 CPU-minutes with one thread, a quarter of 1024 steps' cost. One process at a time, one
# thread; a rerun into the same $OUT continues (a stage whose output is there is skipped). The rows land
# in $OUT/coupling-uniform.json (the students) and $OUT/dfm-steps-*.json (each DFM model at 8, 16 and 64
# steps); PREVIOUS=file.json reuses the reference rows of an earlier evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DFM:?set DFM to the original DFM checkpoint}" "${JUDGE:?set JUDGE to the AR judge checkpoint}"
OUT=${OUT:-out-rectified}
ROUNDS=${ROUNDS-1 2}  # "": the original's student and the reference only
PAIRS=${PAIRS:-4096}
PAIR_STEPS=${PAIR_STEPS:-128}
TUNE_ARGS=${TUNE_ARGS:---max_iters=1000 --learning_rate=3e-4 --min_lr=3e-5 --warmup_iters=50}
STUDENT_ARGS=${STUDENT_ARGS:-}
SAMPLES=${SAMPLES:-256}
REFERENCE_STEPS=${REFERENCE_STEPS:-1024}
REFERENCE_TEMPERATURES=${REFERENCE_TEMPERATURES:-1.0,0.95,0.9,0.85,0.8,0.7,0.5,0.4}
DATASET=${DATASET:-shakespeare_char}  # the original model's data: held-out text and n-gram reference for every row
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

source config/timed.sh  # timed NAME COMMAND...: a stage, run once
student() {  # student NAME PARENT: the recipe's student of a DFM checkpoint, on the parent's data
  timed "student-$1" python train.py config/shakespeare_char_cpu_student.py --init_from="$2" \
      --out_dir="$OUT/student-$1" --overwrite=True $STUDENT_ARGS
}

student original "$DFM"
students="$OUT/student-original/best.pt"
model=$DFM
for r in $ROUNDS; do
  timed "pairs-$r" python data/rectified/prepare.py --ckpt="$model" --pairs="$PAIRS" --steps="$PAIR_STEPS" \
      --seed="$r" --out_dir="$OUT/pairs-$r"
  timed "dfm-$r" python train.py config/shakespeare_char_cpu.py --init_from="$model" --data_dir="$OUT/pairs-$r" \
      --out_dir="$OUT/dfm-$r" --overwrite=True $TUNE_ARGS
  model="$OUT/dfm-$r/best.pt"
  student "rectified-$r" "$model"
  students="$students,$OUT/student-rectified-$r/best.pt"
done
timed eval python eval.py --mode=quality --device=cpu --dataset="$DATASET" --judge="$JUDGE" --dfm="$DFM" \
    --student="$students" --steps_list="$REFERENCE_STEPS" --dfm_methods=cumulative \
    --reference_temperatures="$REFERENCE_TEMPERATURES" --student_steps_list=4,8,16 --num_samples="$SAMPLES" \
    ${PREVIOUS:+--previous="$PREVIOUS"} --out_json="$OUT/coupling-uniform.json"
# the DFM models themselves at few steps: a rectified model should lose less as steps fall
for name in original $(for r in $ROUNDS; do echo "rectified-$r"; done); do
  ckpt=$DFM; [ "$name" = original ] || ckpt="$OUT/dfm-${name#rectified-}/best.pt"
  timed "dfm-steps-$name" python eval.py --mode=quality --device=cpu --dataset="$DATASET" --judge="$JUDGE" \
      --dfm="$ckpt" --steps_list=8,16,64 --dfm_methods=cumulative --num_samples="$SAMPLES" \
      --out_json="$OUT/dfm-steps-$name.json"
done
tail -n 30 "$OUT/eval.log"
# the students against the reference's temperature curve (needs matplotlib)
python - "$OUT/coupling-uniform.json" "$OUT/coupling-uniform.png" <<'EOF' || echo "no plot: pip install matplotlib"
import json, os, sys
sys.path.insert(0, ".")
from results.plots import plot_levers
report = json.load(open(sys.argv[1]))
seed = next(r["seed"] for r in report["rows"] if r["name"] == "dfm cumulative")
name = lambda row: os.path.basename(os.path.dirname(row["made_by"])).removeprefix("student-")
students = list(dict.fromkeys(name(r) for r in report["rows"] if r["name"].startswith("student")))
plot_levers({"seeds": [seed], "rows": [dict(r, seed=seed) for r in report["rows"]], "students": students},
            sys.argv[2], name)
EOF
