#!/usr/bin/env bash
# The headline "8 student steps match 1024 DFM steps", measured over training seeds and against DFM's
# own perplexity-entropy frontier: for each seed a uniform-source DFM model and its few-step student
# (the recipe, config/shakespeare_char_cpu_student.py), one AR judge; then per seed the reference (DFM,
# cumulative, 1024 steps) at several temperatures and the student at 4, 8 and 16 steps, each student row
# compared with the reference at its own entropy. The seeds land in one JSON and one plot:
# results/tables.py --frontier.
#
#   bash config/reproduce_frontier.sh
#   INPUT=path/to/tinyshakespeare.txt OUT=out-frontier bash config/reproduce_frontier.sh   # no download
#   TRAIN_ARGS="--max_iters=20 --eval_interval=10" REFERENCE_STEPS=8 SAMPLES=4 SEEDS="1 2" \
#       OUT=out-smoke bash config/reproduce_frontier.sh                                   # every stage in minutes
#
# Two lanes run side by side, one thread each. A rerun into the same $OUT continues: a stage whose
# output is there is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out-repro-frontier}
SEEDS=${SEEDS:-1337 7 11}
REFERENCE_STEPS=${REFERENCE_STEPS:-1024}
STUDENT_STEPS=${STUDENT_STEPS:-4,8,16}
REFERENCE_TEMPERATURES=${REFERENCE_TEMPERATURES:-1.0,0.8,0.6,0.4}  # down below the students' entropy
SAMPLES=${SAMPLES:-256}
TRAIN_ARGS=${TRAIN_ARGS:-}
EVALUATE=${EVALUATE:-1}  # 0: train only
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

# 1. data: train.bin, val.bin, meta.json (downloads the text, or reads $INPUT)
python data/shakespeare_char/prepare.py ${INPUT:+--input="$INPUT"}

# 2. training; each run's wall clock goes to $OUT/times.jsonl
train() {  # train NAME ARGS...
  local name=$1; shift
  [ -f "$OUT/$name/done" ] && return 0
  local start=$SECONDS
  python train.py "$@" --out_dir="$OUT/$name" --overwrite=True $TRAIN_ARGS > "$OUT/$name.log" 2>&1 \
    || { echo "training $name failed: see $OUT/$name.log"; return 1; }
  echo "{\"run\": \"$name\", \"seconds\": $((SECONDS - start))}" >> "$OUT/times.jsonl"
  touch "$OUT/$name/done"
}
waitfor() { until [ -f "$OUT/$1/done" ]; do sleep 10; done; }
seed_runs() {  # seed_runs SEED: the DFM model, then its student
  train "dfm-s$1" config/shakespeare_char_cpu.py --source=uniform --seed="$1"
  train "student-s$1" config/shakespeare_char_cpu_student.py --init_from="$OUT/dfm-s$1/best.pt" --seed="$1"
}

# 3. per seed: the reference at each temperature and the students, judged by the AR model
quality() {  # quality SEED
  local s=$1
  [ -f "$OUT/frontier-s$s.json" ] && return 0
  waitfor "student-s$s"; waitfor ar
  local start=$SECONDS
  python eval.py --mode=quality --device=cpu --dfm="$OUT/dfm-s$s/best.pt" --student="$OUT/student-s$s/ckpt.pt" \
      --judge="$OUT/ar/best.pt" --steps_list="$REFERENCE_STEPS" --student_steps_list="$STUDENT_STEPS" \
      --dfm_methods=cumulative --reference_temperatures="$REFERENCE_TEMPERATURES" --num_samples="$SAMPLES" \
      --out_json="$OUT/frontier-s$s.json.part" > "$OUT/frontier-s$s.md" 2> "$OUT/frontier-s$s.log" \
    || { echo "evaluation of seed $s failed: see $OUT/frontier-s$s.log"; return 1; }
  mv "$OUT/frontier-s$s.json.part" "$OUT/frontier-s$s.json"
  echo "{\"run\": \"frontier-s$s\", \"seconds\": $((SECONDS - start))}" >> "$OUT/times.jsonl"
}

# the lanes: seeds alternate between them, B also trains the judge first; then each lane takes the next
# seed whose evaluation nobody has claimed (it waits for that seed's student), so B, done first, starts them
claim() { mkdir "$OUT/claims/$1" 2>/dev/null; }
rm -rf "$OUT/claims"; mkdir -p "$OUT/claims"
lane() {  # lane A|B
  local i=0 s
  [ "$1" = B ] && train ar config/shakespeare_char_cpu_ar.py
  for s in $SEEDS; do
    if { [ "$1" = A ] && [ $((i % 2)) = 0 ]; } || { [ "$1" = B ] && [ $((i % 2)) = 1 ]; }; then seed_runs "$s"; fi
    i=$((i + 1))
  done
  [ "$EVALUATE" = 1 ] || return 0
  for s in $SEEDS; do claim "$s" && { quality "$s" || return 1; }; done
  return 0
}
lane A > "$OUT/lane-a.log" 2>&1 & a=$!
lane B > "$OUT/lane-b.log" 2>&1 & b=$!
trap 'kill $a $b 2>/dev/null' EXIT
wait $a || { echo "lane a failed: see $OUT/lane-a.log"; exit 1; }
wait $b || { echo "lane b failed: see $OUT/lane-b.log"; exit 1; }
trap - EXIT
[ "$EVALUATE" = 1 ] || exit 0

# 4. every seed in one JSON and one plot
python results/tables.py --frontier="$(for s in $SEEDS; do printf '%s,' "$OUT/frontier-s$s.json"; done | sed 's/,$//')" \
    --frontier_json="$OUT/frontier-uniform.json" --frontier_png="$OUT/frontier_uniform.png" > "$OUT/frontier.md"
