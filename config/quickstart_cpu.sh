#!/usr/bin/env bash
# The whole story on a CPU, in one command: prepare Tiny Shakespeare as characters, train the DFM
# model (config/shakespeare_char_cpu.py), distil the few-step student from it
# (config/shakespeare_char_cpu_student.py), then sample both at 8 steps, side by side: the student with large
# steps first, the first one hot and spread jump tests, its nearest to the DFM model at equal entropy
# (results/README.md).
#
#   bash config/quickstart_cpu.sh                                          # downloads the text (1.1 MB)
#   INPUT=path/to/tinyshakespeare.txt bash config/quickstart_cpu.sh        # offline, from a local copy
#   TRAIN_ARGS="--max_iters=20 --eval_interval=10" bash config/quickstart_cpu.sh   # a smoke run
#
# Everything lands in $OUT (default out-quickstart); a rerun starts the training over.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out-quickstart}
TRAIN_ARGS=${TRAIN_ARGS:-}
STEPS=${STEPS:-8}  # 4, 8 or 16: the steps of the coarse-to-fine schedules
mkdir -p "$OUT"

python data/shakespeare_char/prepare.py ${INPUT:+--input="$INPUT"}
# a short teacher (2,000 of the preset's 16,000 iterations): a first look, not the headline's teacher
python train.py config/shakespeare_char_cpu.py --max_iters=2000 --out_dir="$OUT/dfm" --overwrite=True $TRAIN_ARGS
python train.py config/shakespeare_char_cpu_student.py --init_from="$OUT/dfm/best.pt" --out_dir="$OUT/student" \
    --overwrite=True $TRAIN_ARGS

# the same seed for both: the DFM model was not trained for few steps (sample.py warns), the student was
python sample.py --ckpt="$OUT/dfm/best.pt" --steps="$STEPS" --num_samples=1 --color=never 2>/dev/null \
    | tail -n +2 > "$OUT/dfm-$STEPS.txt"
python sample.py --ckpt="$OUT/student/ckpt.pt" --steps="$STEPS" --schedule=coarse-to-fine --first_temperature=3 \
    --spread=True --num_samples=1 --color=never \
    | tail -n +2 > "$OUT/student-$STEPS.txt"
python - "$OUT/dfm-$STEPS.txt" "$OUT/student-$STEPS.txt" "$STEPS" <<'PY'
import itertools, sys, textwrap
columns = []
for path in sys.argv[1:3]:
    text = open(path, encoding="utf-8").read().rstrip("\n")
    columns.append([piece for line in text.split("\n") for piece in textwrap.wrap(line, 56) or [""]])
steps = sys.argv[3]
print(f"\n{'DFM model, ' + steps + ' steps':<60}FS-DFM student, {steps} steps (coarse-to-fine, first at T=3, spread)")
print(f"{'-' * 56:<60}{'-' * 56}")
for left, right in itertools.zip_longest(*columns, fillvalue=""):
    print(f"{left:<60}{right}")
PY
