#!/usr/bin/env bash
# The headline, how near 8 student steps come to 1024 DFM steps, over training seeds and against DFM's
# own perplexity-entropy frontier: for each seed a uniform-source DFM model (the preset's 16,000
# iterations) and its few-step student (the recipe, config/shakespeare_char_cpu_student.py), one AR judge;
# then per seed the reference (DFM, cumulative, 1024 steps) at nine temperatures and the student at 4, 8
# and 16 steps, equal and coarse-to-fine, each also with its first step at temperature 3, and all of them
# again with spread jump tests, each student row compared with the reference at its own entropy. The seeds land in one JSON and one plot:
# results/tables.py --frontier.
#
#   bash config/reproduce_frontier.sh                         # the README's headline
#   INPUT=path/to/tinyshakespeare.txt OUT=out-frontier bash config/reproduce_frontier.sh   # no download
#   TRAIN_ARGS="--max_iters=20 --eval_interval=10" REFERENCE_STEPS=8 SAMPLES=4 SEEDS="1 2" \
#       OUT=out-smoke bash config/reproduce_frontier.sh                                   # every stage in minutes
#   LEVERS="probs:--teacher_average=probs" OUT=... bash config/reproduce_frontier.sh  # a lever beside the recipe
#   DATASET=pystdlib SEEDS=1337 OUT=out-pystdlib bash config/reproduce_frontier.sh  # your own text, prepared
#   JOB="reference 7 0.6" OUT=... bash config/reproduce_frontier.sh          # one stage only (or "dfm 7",
#                                                                            # "student 7 probs", "students 7")
# The earlier headline on 2,000-iteration teachers (headline-seeds-uniform.json):
#   DFM_ARGS=--max_iters=2000 SAMPLES=512 REFERENCE_TEMPERATURES=1.0,0.4,0.15 EVAL_ARGS= bash config/reproduce_frontier.sh
#
# Two lanes run side by side, one thread each (LANES=1: one process at a time); each takes the next
# stage nobody has claimed (the judge, the DFM models, the students, the reference rows, the students'
# evaluations) and waits for what it needs. A rerun into the same $OUT continues: a stage whose output
# is there is skipped. Measured with two lanes on a 2-core machine: the judge 7 minutes, a DFM run about
# 90 (14-19 at 2,000 iterations), a student 9-21, a reference row at 1024 steps 5-11 at 256 samples and
# 12-17 at 512 (a seed's students: 1-3 minutes); from these, an estimated 4 to 5 hours at 256 samples.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out-repro-frontier}
SEEDS=${SEEDS:-1337 7 11}
REFERENCE_STEPS=${REFERENCE_STEPS:-1024}
STUDENT_STEPS=${STUDENT_STEPS:-4,8,16}
# the reference's temperatures, 1.0 (the reference itself) first, spaced across the students' entropies
# so that each matched ratio rests on a short chord (the 16,000-iteration teachers: 4.37-4.42 bits at 1.0;
# their students 4.15-4.37 at 4 to 16 steps, coarse-to-fine at 4 the lowest; with a hot first step up to
# 4.39, hence 1.1)
REFERENCE_TEMPERATURES=${REFERENCE_TEMPERATURES:-1.0,0.9,0.8,0.7,0.6,0.5,0.4,0.3,1.1}
SAMPLES=${SAMPLES:-256}
TRAIN_ARGS=${TRAIN_ARGS:-}
DFM_ARGS=${DFM_ARGS:-}  # more train.py flags for the DFM models alone
# students beside the recipe's, NAME:FLAGS each (FLAGS: train.py flags on top of the recipe, comma-separated).
# The levers of levers-classical-uniform.json and levers-uniform.json (anchor_share, own_share, the
# calibrated average, chained RK points) left the package: results/README.md has their LEVERS, to run in a
# checkout of commit e631de9.
LEVERS=${LEVERS:-}
# more eval.py flags for every evaluation (set, even empty, it replaces the default: coarse-to-fine rows
# beside the equal ones, each again with its first step at 3, and all again with spread jump tests;
# long-teacher-first-step-uniform.json came from the first two). long-teacher-seeds-uniform.json came from
# REFERENCE_TEMPERATURES=1.0,0.9,0.8,0.7,0.6,0.5,0.4,0.3 EVAL_ARGS=--student_schedules=coarse-to-fine. The
# tables on the 2,000-iteration teachers (results/README.md) came from DFM_ARGS=--max_iters=2000 SAMPLES=512
# REFERENCE_TEMPERATURES=1.0,0.4,0.15 and: schedules-uniform.json SEEDS="1337 7 11 3"
# EVAL_ARGS=--student_schedules=coarse-to-fine (seeds 1337, 7 and 11 reusing headline-seeds-uniform.json's
# reference rows, its --previous files); first-step-uniform.json EVAL_ARGS="--student_schedules=coarse-to-fine
# --student_first_temperature=3" (first-step-seed3-uniform.json: the same with SEEDS=3, into the same $OUT).
# first-step-sample.jsonl and first-step-predictions.json come from scripts run on those models, at commit
# e631de9 (results/README.md).
EVAL_ARGS=${EVAL_ARGS---student_schedules=coarse-to-fine --student_first_temperature=3 --jumps=independent,spread}
EVALUATE=${EVALUATE:-1}  # 0: train only
LANES=${LANES:-2}  # 1: one process at a time
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

# 1. data: train.bin, val.bin, meta.json (downloads the text, or reads $INPUT)
#    (DATASET=NAME: a dataset already in data/NAME instead, e.g. your own text, docs/training.md)
if [ -z "${JOB:-}" ] && [ -z "${DATASET:-}" ]; then  # (a JOB finds it there)
  python data/shakespeare_char/prepare.py ${INPUT:+--input="$INPUT"}
fi
DATA_ARGS=${DATASET:+--dataset=$DATASET}

# 2. training; each run's wall clock goes to $OUT/times.jsonl
train() {  # train NAME ARGS...
  local name=$1; shift
  [ -f "$OUT/$name/done" ] && return 0
  local start=$SECONDS
  python train.py "$@" --out_dir="$OUT/$name" --overwrite=True $TRAIN_ARGS > "$OUT/$name.log" 2>&1 \
    || { echo "training $name failed: see $OUT/$name.log"; touch "$OUT/failed"; return 1; }
  echo "{\"run\": \"$name\", \"seconds\": $((SECONDS - start))}" >> "$OUT/times.jsonl"
  touch "$OUT/$name/done"
}
waitfor() { until [ -f "$OUT/$1" ] || [ -f "$OUT/$1/done" ]; do [ -f "$OUT/failed" ] && return 1; sleep 10; done; }
lever_args() {  # lever_args NAME: the train.py flags of a lever, from $LEVERS
  local entry
  for entry in $LEVERS; do [ "${entry%%:*}" = "$1" ] && { echo "${entry#*:}" | tr ',' ' '; return 0; }; done
  echo "unknown lever $1" >&2; return 1
}
student_dir() { [ "$2" = recipe ] && echo "student-s$1" || echo "student-$2-s$1"; }  # student_dir SEED NAME
judge() { train ar config/shakespeare_char_cpu_ar.py $DATA_ARGS; }
dfm() { train "dfm-s$1" config/shakespeare_char_cpu.py --source=uniform --seed="$1" $DATA_ARGS $DFM_ARGS; }
student() {  # student SEED NAME: the recipe (config/shakespeare_char_cpu_student.py), or it with a lever's flags
  local args=""
  [ "$2" = recipe ] || args=$(lever_args "$2") || return 1
  waitfor "dfm-s$1" || return 1
  train "$(student_dir "$1" "$2")" config/shakespeare_char_cpu_student.py --init_from="$OUT/dfm-s$1/best.pt" \
      --seed="$1" $args
}

# 3. evaluations, judged by the AR model, one job each: the reference (DFM, cumulative step,
#    $REFERENCE_STEPS steps) of a seed at one temperature (reference SEED T), and a seed's students with
#    that seed's curve (students SEED: it reuses the reference rows, samples only the students, and
#    compares each with the curve at its entropy). A reference row at 1024 steps is most of the time.
evaluate() {  # evaluate NAME ARGS...: eval.py quality into $OUT/NAME.json, skipped if there
  local name=$1; shift
  [ -f "$OUT/$name.json" ] && return 0
  local start=$SECONDS
  python eval.py --mode=quality --device=cpu --judge="$OUT/ar/best.pt" --steps_list="$REFERENCE_STEPS" \
      --dfm_methods=cumulative --num_samples="$SAMPLES" $EVAL_ARGS "$@" --out_json="$OUT/$name.json.part" \
      > "$OUT/$name.md" 2> "$OUT/$name.log" \
    || { echo "evaluation $name failed: see $OUT/$name.log"; touch "$OUT/failed"; return 1; }
  mv "$OUT/$name.json.part" "$OUT/$name.json"
  echo "{\"run\": \"$name\", \"seconds\": $((SECONDS - start))}" >> "$OUT/times.jsonl"
}
temperatures() { echo "$REFERENCE_TEMPERATURES" | tr ',' ' '; }
reference() {  # reference SEED T
  { waitfor "dfm-s$1" && waitfor ar; } || return 1
  evaluate "reference-s$1-$2" --dfm="$OUT/dfm-s$1/best.pt" --temperature="$2"
}
students() {  # students SEED: the recipe's student and every lever's, in one evaluation
  local T previous="" name checkpoints=""
  for name in recipe $(lever_names); do
    waitfor "$(student_dir "$1" "$name")" || return 1
    checkpoints="$checkpoints,$OUT/$(student_dir "$1" "$name")/ckpt.pt"
  done
  for T in $(temperatures); do
    waitfor "reference-s$1-$T.json" || return 1
    previous="$previous,$OUT/reference-s$1-$T.json"
  done
  evaluate "frontier-s$1" --dfm="$OUT/dfm-s$1/best.pt" --student="${checkpoints#,}" \
      --student_steps_list="$STUDENT_STEPS" --reference_temperatures="$REFERENCE_TEMPERATURES" --previous="${previous#,}"
}
lever_names() { local entry; for entry in $LEVERS; do echo "${entry%%:*}"; done; }
stages() {  # every stage, one a line, in the order the lanes take them
  local s T name
  echo judge
  for s in $SEEDS; do echo "dfm $s"; done
  for s in $SEEDS; do for name in recipe $(lever_names); do echo "student $s $name"; done; done
  [ "$EVALUATE" = 1 ] || return 0
  # temperature by temperature, every seed at 1.0 first (the raw comparison), the coolest rows last
  for T in $(temperatures); do for s in $SEEDS; do echo "reference $s $T"; done; done
  for s in $SEEDS; do echo "students $s"; done
}
if [ -n "${JOB:-}" ]; then  # JOB="reference 7 0.6" or JOB="students 7": that one stage only
  $JOB
  exit 0
fi

# the lanes: each takes the next stage nobody has claimed, waiting for what it needs
claim() { mkdir "$OUT/claims/$1" 2>/dev/null; }
rm -rf "$OUT/claims" "$OUT/failed"; mkdir -p "$OUT/claims"
lane() {
  local job n=0
  while read -r job; do
    n=$((n + 1))
    claim "$n" && { $job || return 1; }
  done < <(stages)
  return 0
}
pids=()
for i in $(seq "$LANES"); do lane > "$OUT/lane-$i.log" 2>&1 & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
for i in "${!pids[@]}"; do wait "${pids[$i]}" || { echo "lane $((i + 1)) failed: see $OUT/lane-$((i + 1)).log"; exit 1; }; done
trap - EXIT
[ "$EVALUATE" = 1 ] || exit 0

# 4. every seed in one JSON and one plot
frontiers=""
for s in $SEEDS; do frontiers="$frontiers,$OUT/frontier-s$s.json"; done
python results/tables.py --frontier="${frontiers#,}" --levers_json="$OUT/levers-uniform.json" --levers_png="$OUT/levers_uniform.png" \
    --frontier_json="$OUT/frontier-uniform.json" --frontier_png="$OUT/frontier_uniform.png" > "$OUT/frontier.md"
