#!/usr/bin/env bash
# Check a GPU in minutes: every figure a first CUDA run should show, as JSON under $OUT.
#
#   bash config/gpu_check.sh                                   # OUT=gpu-check, on cuda
#   DRY_RUN=1 OUT=/tmp/gpu-check bash config/gpu_check.sh      # tiny sizes on a CPU: every stage's code
#
# Stages (each writes $OUT/<stage>.json or a run folder; $OUT/gpu_check.json gathers them):
#  1. env: the device, its peak, the versions;
#  2. random token data (char and GPT-2 ids): throughput does not depend on the text;
#  3. the char preset (12.6M), compiled, and a student distilled from it: tokens/s and MFU;
#  4. the OpenWebText size (170M, GPT-2 vocabulary): tokens/s, MFU and peak memory;
#  5. torchrun with one process, gradient accumulation, and a resume of that run;
#  6. the speed study at the 170M size, batch 1 and 64: AR with its cache against the student at 4
#     and 8 steps, eager and compiled (every compiled row checked to run compiled code);
#  7. host-device syncs per sampler step;
#  8. sample.py with a prompt, on the student.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
if [ -n "${DRY_RUN:-}" ]; then  # the same stages at sizes a CPU runs in a minute, compile traced only
  DEV=cpu; ITERS=4; BIG_ITERS=4; COMPILE=False; BACKEND=eager; LOG=2
  CHAR="--n_layer=1 --n_head=2 --n_embd=32 --n_cond=16 --block_size=32 --batch_size=4"
  STUDENT="--block_size=32 --batch_size=4 --max_step_exponent=3"
  BIG="--n_layer=1 --n_head=2 --n_embd=32 --n_cond=16 --block_size=64 --batch_size=2 --gradient_accumulation_steps=1"
  STUDY="--n_layer=1 --n_head=2 --n_embd=32 --vocab_size=300 --lengths=32 --batch_sizes=1,4"
  SYNCS="--n_layer=1 --n_head=2 --n_embd=32 --overhead_cases=300:32"
else
  DEV=cuda; ITERS=60; BIG_ITERS=200; COMPILE=True; BACKEND=inductor; LOG=10
  CHAR=""
  STUDENT=""
  BIG="--batch_size=8 --gradient_accumulation_steps=1"
  STUDY="--n_layer=12 --n_head=12 --n_embd=768 --vocab_size=50257 --lengths=1024 --batch_sizes=1,64"
  SYNCS="--overhead_cases=65:256,50257:1024"
fi
COMMON="--device=$DEV --eval_iters=2 --log_interval=$LOG --overwrite=True"

# 1. the machine
python bench.py --mode=env --device="$DEV" --out_json="$OUT/env.json"

# 2. random token files in the prepare scripts' format
python - "$OUT" <<'PY'
import os, sys
import numpy as np
sys.path.insert(0, os.getcwd())
from nanodfm.data import write_meta
out = sys.argv[1]
rng = np.random.default_rng(0)
chars = [chr(c) for c in range(32, 97)]  # 65 printable characters
for name, vocab, meta in (("char-data", 65, {"tokenizer": "char", "itos": dict(enumerate(chars)),
                                             "stoi": {c: i for i, c in enumerate(chars)}}),
                          ("gpt2-data", 50257, {"tokenizer": "gpt2"})):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", 2_000_000), ("val", 200_000)):
        rng.integers(0, vocab, n, dtype=np.uint16).tofile(os.path.join(folder, f"{split}.bin"))
    write_meta(folder, {"vocab_size": vocab, **meta})
PY

# 3. the char preset and its student, compiled
python train.py config/shakespeare_char.py $CHAR $COMMON --data_dir="$OUT/char-data" --out_dir="$OUT/char" \
    --max_iters=$ITERS --eval_interval=$ITERS --compile=$COMPILE
python train.py config/shakespeare_char_student.py $STUDENT $COMMON --init_from="$OUT/char/ckpt.pt" --out_dir="$OUT/char-student" \
    --max_iters=$ITERS --eval_interval=$ITERS --compile=$COMPILE

# 4. the OpenWebText size
python train.py config/openwebtext.py $BIG $COMMON --data_dir="$OUT/gpt2-data" --out_dir="$OUT/owt" \
    --max_iters=$BIG_ITERS --eval_interval=$BIG_ITERS --compile=$COMPILE

# 5. torchrun: one process, two micro-steps per step, then a resume of the same run
TORCHRUN="torchrun --standalone --nproc_per_node=1 train.py config/shakespeare_char.py $CHAR $COMMON"
$TORCHRUN --data_dir="$OUT/char-data" --out_dir="$OUT/ddp" --max_iters=4 --eval_interval=2 --gradient_accumulation_steps=2
$TORCHRUN --data_dir="$OUT/char-data" --out_dir="$OUT/ddp" --max_iters=8 --eval_interval=2 --gradient_accumulation_steps=2 \
    --init_from=resume --overwrite=False

# 6. the speed study, eager and compiled
for C in False True; do
  python bench.py --mode=study $STUDY --device="$DEV" --student_steps=4,8 --dfm_steps="" --large=False --repeats=2 \
      --compile=$C --compile_backend=$BACKEND --out_json="$OUT/study-compile-$C.json"
done

# 7. syncs per sampler step
python bench.py --mode=syncs $SYNCS --device="$DEV" --out_json="$OUT/syncs.json"

# 8. sample.py with a prompt
python sample.py --ckpt="$OUT/char-student/ckpt.pt" --device="$DEV" --steps=8 --start="ROMEO:" --num_samples=2 \
    > "$OUT/sample.txt"

# gather
python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
def last_log(run):
    rows = [json.loads(line) for line in open(os.path.join(out, run, "log.jsonl"))]
    timed = [r for r in rows if "tokens_per_s" in r]
    return {"steps": rows[-1]["step"], **({k: timed[-1][k] for k in ("tokens_per_s", "mfu", "max_memory_gb") if k in timed[-1]}
                                          if timed else {})}
report = {"env": load("env.json"),
          "train": {run: last_log(run) for run in ("char", "char-student", "owt", "ddp")},
          "study": {c: load(f"study-compile-{c}.json")["rows"] for c in ("False", "True")},
          "syncs": load("syncs.json")["rows"],
          "sample": open(os.path.join(out, "sample.txt")).read()}
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(report, f, indent=2)
print(f"wrote {os.path.join(out, 'gpu_check.json')}")
PY
