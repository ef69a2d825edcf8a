"""Speed benchmarks (docs/method.md section 6), on untrained models of a given size.

    python bench.py --mode=overhead --repeats=21 --out_json=results/speed/overhead.json
    python bench.py --mode=study --out_json=results/speed/study-cpu.json --out_png=assets/speed_cpu.png
    python bench.py --mode=study --device=cuda --dtype=bfloat16 --compile=True --out_json=study-gpu.json
    python bench.py --mode=estimate --out_json=results/speed/estimate-h100.json
    python bench.py --mode=train_cost --out_json=results/speed/train-cost-cpu.json

overhead: the share of `sampler.sample`'s time spent outside the model's forward calls, at batch 1,
for each vocabulary:length case, both sources, the student at student_steps: the median over
`repeats` rounds of sampling and its forward calls run alone, with quartiles.
study: seconds per sequence and tokens/s against batch size for the AR model with its KV cache, the
student and the DFM model, at each length, plus a batch-1 row at the large size; a JSON of every
cell, the crossover batch sizes, and a plot.
estimate: a paper estimate (no timing) of the GPU floor per sequence at the large size, for the
student at student_steps and AR with its cache, from the accelerator's published peaks.
train_cost: seconds per training iteration of a DFM model and of its distillation (the student
preset's recipe), interleaved so both see the same load: what distilling costs against training.
"""

import json
import os
import sys

import torch
from tqdm import tqdm

from nanodfm import speed
from nanodfm.evaluate import markdown_table
from nanodfm.config import UsageError, autocast_for, int_list, parse, pick_device

# ----------------------------------------------------------------------------- defaults
mode = "study"  # "overhead", "study", "estimate" or "train_cost"
# the model size (the CPU preset's width)
n_layer = 4
n_head = 4
n_embd = 128
# overhead
overhead_cases = "65:1024,50257:256"  # vocabulary:length pairs
sources = "mask,uniform"  # the sources to time the sampler with
# study
vocab_size = 65  # the study's vocabulary (the large size uses large_vocab_size)
lengths = "128,1024"  # tokens per sequence, one panel each
batch_sizes = "1,4,16,64"  # sequences generated at once
student_steps = "4,8"  # model calls of the student
dfm_steps = "256,1024"  # model calls of the DFM model
source = "uniform"  # the source the student and DFM model sample with
max_timed_steps = 16  # uniform source: time every k-th DFM step, at most this many, and scale by k (0: all)
large = True  # also time batch 1 at the large size below (the OpenWebText preset's)
large_n_layer = 12
large_n_head = 12
large_n_embd = 768
large_vocab_size = 50257
large_length = 1024
# estimate (at the large size): an H100 SXM's published dense bfloat16 peak and HBM3 bandwidth
peak_tflops = 989.0
bandwidth_tbs = 3.35
estimate_batch_sizes = "1,64"
# train_cost (the CPU presets' batch and context; vocab_size and the width above)
train_batch_size = 32
train_length = 128
train_rounds = 3  # rounds of train_iters iterations of each, interleaved
train_iters = 10
# timing
warmup = 1  # untimed calls before the timed ones
repeats = 2  # timed calls, their mean reported; overhead: rounds, the median share reported (use 21)
large_repeats = 1  # timed calls at the large size
# system
device = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
dtype = "auto"  # "auto" (bfloat16 autocast on CUDA if supported, else float32), "bfloat16", "float32"
compile = False  # torch.compile every model (all rows compiled, or none)
threads = 0  # torch threads on CPU; 0: torch's default
seed = 1337  # seeds the models' weights and the draws
out_json = ""  # write every number to this file
out_png = ""  # study: plot the study to this file (needs matplotlib)
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}


def system(cfg, dev):
    return {"device": str(dev), "device_name": speed.device_name(dev), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "compile": cfg["compile"]}


def overhead(cfg, dev, autocast, dtype):
    cases = []
    for case in cfg["overhead_cases"].split(","):
        try:
            V, L = (int(v) for v in case.split(":"))
        except ValueError:
            raise UsageError(f"--overhead_cases must be vocabulary:length pairs like 65:1024, got {case!r}") from None
        cases.append((V, L))
    sources = [s for s in cfg["sources"].split(",") if s]
    rows = []
    for V, L in tqdm(cases, desc="overhead", dynamic_ncols=True):
        torch.manual_seed(cfg["seed"])
        model = speed.random_model("student", V, L, cfg["n_layer"], cfg["n_head"], cfg["n_embd"]).to(dev).eval()
        if cfg["compile"]:
            model = speed.compiled(model)
        for src in sources:
            for steps in int_list("student_steps", cfg["student_steps"]):
                with autocast:
                    r = speed.sampler_overhead(model, 1, L, steps, src, True, cfg["warmup"], cfg["repeats"], dev,
                                               cfg["seed"])
                rows.append({"vocab_size": V, "length": L, "source": src, "steps": steps, "batch_size": 1, **r})
    print(f"{system(cfg, dev)}, {dtype}, {cfg['n_layer']} layers x {cfg['n_embd']} wide, batch 1, student\n")
    print(markdown_table(["V", "L", "source", "steps", "sample (s)", "forwards (s)", "outside the model (quartiles)"],
                               [[r["vocab_size"], r["length"], r["source"], r["steps"], r["total_s"], r["forward_s"],
                                 speed.share(r)] for r in rows]))
    return {"mode": "overhead", **system(cfg, dev), "dtype": dtype, "settings": cfg, "rows": rows}


def study(cfg, dev, autocast, dtype):
    size = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd")}
    lengths, batch_sizes = int_list("lengths", cfg["lengths"]), int_list("batch_sizes", cfg["batch_sizes"])
    steps = {"student": int_list("student_steps", cfg["student_steps"]), "dfm": int_list("dfm_steps", cfg["dfm_steps"])}
    rows = []
    for L in lengths:
        with autocast:
            rows += speed.study(size, cfg["vocab_size"], L, batch_sizes, steps, cfg["source"], cfg["max_timed_steps"],
                                cfg["warmup"], cfg["repeats"], cfg["compile"], cfg["seed"], dev, label="small")
    if cfg["large"]:
        large = {k: cfg[f"large_{k}"] for k in ("n_layer", "n_head", "n_embd")}
        with autocast:
            rows += speed.study(large, cfg["large_vocab_size"], cfg["large_length"], [1], steps, cfg["source"],
                                cfg["max_timed_steps"], min(cfg["warmup"], 1), cfg["large_repeats"], cfg["compile"],
                                cfg["seed"], dev, label="large")
    crossovers = speed.crossovers(rows)
    print(f"\n{system(cfg, dev)}, {dtype}, source {cfg['source']}\n")
    print(markdown_table(["size", "L", "model", "calls", "batch", "s / sequence", "tokens / s", "timed steps"],
                               [[r["size"], r["length"], r["name"], r["nfe"], r["batch_size"], r["seconds_per_sequence"],
                                 r["tokens_per_s"], r["timed_steps"]] for r in rows]))
    print("\ncrossover (smallest batch size at which AR with its cache is faster per sequence):")
    for c in crossovers:
        print(f"  {c['size']} L={c['length']} {c['name']}: "
              f"{c['crossover_batch_size'] or 'none up to batch ' + str(max(c['batch_sizes']))}")
    return {"mode": "study", **system(cfg, dev), "dtype": dtype, "settings": cfg, "rows": rows, "crossovers": crossovers}


def estimate(cfg, dev, autocast, dtype):
    rows = []
    for steps in int_list("student_steps", cfg["student_steps"]):
        for B in int_list("estimate_batch_sizes", cfg["estimate_batch_sizes"]):
            e = speed.floor_estimate(cfg["large_n_layer"], cfg["large_n_embd"], cfg["large_vocab_size"],
                                     cfg["large_length"], steps, B, cfg["peak_tflops"] * 1e12, cfg["bandwidth_tbs"] * 1e12)
            rows += [{"name": name, "steps": steps if name == "student" else cfg["large_length"] - 1, "batch_size": B, **v}
                     for name, v in e.items() if name == "student" or steps == int_list("student_steps", cfg["student_steps"])[0]]
    print(f"an estimate, not a measurement: {cfg['large_n_layer']} layers x {cfg['large_n_embd']} wide, "
          f"V={cfg['large_vocab_size']}, L={cfg['large_length']}, bfloat16, {cfg['peak_tflops']:g} TFLOP/s, "
          f"{cfg['bandwidth_tbs']:g} TB/s\n")
    print(markdown_table(["model", "calls", "batch", "TFLOP", "GB moved", "bound", "ms / sequence"],
                         [[r["name"], r["steps"], r["batch_size"], r["flops"] / 1e12, r["bytes"] / 1e9, r["bound"],
                           1e3 * r["seconds_per_sequence"]] for r in rows]))
    return {"mode": "estimate", "estimate": True, "settings": cfg, "rows": rows}


def train_cost(cfg, dev, autocast, dtype):
    size = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd")}
    with autocast:
        cost = speed.training_costs(size, cfg["vocab_size"], cfg["train_length"], cfg["train_batch_size"],
                                    cfg["source"], cfg["train_rounds"], cfg["train_iters"], cfg["seed"], dev)
    print(f"{system(cfg, dev)}, {dtype}, source {cfg['source']}: DFM {cost['dfm']:.4g} s / iteration, "
          f"student {cost['student']:.4g} s / iteration, {cost['ratio']:.3g} x")
    return {"mode": "train_cost", **system(cfg, dev), "dtype": dtype, "settings": cfg, **cost}


def main(argv):
    cfg = parse(DEFAULTS, argv, __doc__, __file__)
    if cfg["mode"] not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {cfg['mode']!r}")
    if cfg["dtype"] not in ("auto", "bfloat16", "float32"):
        raise UsageError(f"--dtype must be auto, bfloat16 or float32, got {cfg['dtype']!r}")
    for key in ("repeats", "large_repeats", "train_rounds", "train_iters", "train_batch_size", "train_length"):
        if cfg[key] <= 0:
            raise UsageError(f"--{key} must be a positive integer, got {cfg[key]}")
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    dev = torch.device(pick_device(cfg["device"]))
    autocast, dtype = autocast_for(dev.type, cfg["dtype"])
    result = MODES[cfg["mode"]](cfg, dev, autocast, dtype)
    if cfg["out_json"]:
        os.makedirs(os.path.dirname(os.path.abspath(cfg["out_json"])), exist_ok=True)
        with open(cfg["out_json"], "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {cfg['out_json']}")
    if cfg["out_png"] and cfg["mode"] == "study":
        print(f"wrote {cfg['out_png']}" if speed.plot_study(result, cfg["out_png"])
              else "matplotlib is not installed: no plot (pip install matplotlib)")


MODES = {"overhead": overhead, "study": study, "estimate": estimate, "train_cost": train_cost}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        sys.exit(f"error: {e}")
