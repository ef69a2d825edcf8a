"""Speed benchmarks (docs/method.md section 6), on untrained models of a given size: speed does not depend on the
weights. How each mode measures, and what it found: docs/speed.md.

    python bench.py --mode=study --out_json=results/speed/study-cpu.json --out_png=assets/speed_cpu.png
    python bench.py --mode=study --device=cuda --dtype=bfloat16 --compile=True --out_json=study-gpu.json

study: seconds per sequence and tokens/s against batch size for AR with its KV cache, the student and the DFM
  model at each length, plus batch 1 at the large size; the crossover batch sizes; a plot.
syncs: host-device syncs per step of the engine (the student, batch 1), for each vocabulary:length case and source.
env: the machine and the versions alone (config/gpu_check.sh starts with it); every mode's JSON holds them.
"""

import collections
import json
import os
import sys
import time

import torch
from torch.overrides import TorchFunctionMode
from tqdm import tqdm

from nanodfm import engine
from nanodfm.autoregressive import generate
from nanodfm.config import (NON_NEGATIVE, POSITIVE, POSITIVE_INTS, SEED, Rule, UsageError, autocast_for, check,
                            device_peak_flops, int_list, one_of, output, output_file, refuse_foreign_outputs, parse,
                            pick_device, run)
from nanodfm.engine import compile as compile_model
from nanodfm.evaluate import markdown_table, pyplot, save_figure
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import SOURCES, ProbPath

# ----------------------------------------------------------------------------- defaults
mode = "study"  # "study", "syncs" or "env"
# the model size (the CPU preset's width)
n_layer = 4
n_head = 4
n_embd = 128
# syncs
overhead_cases = "65:1024,50257:256"  # vocabulary:length pairs
sources = "mask,uniform"  # the sources to count the syncs with
# study
vocab_size = 65  # the study's vocabulary (the large size uses large_vocab_size)
lengths = "128,1024"  # tokens per sequence, one panel each
batch_sizes = "1,4,16,64"  # sequences generated at once
student_steps = "4,8"  # model calls of the student
dfm_steps = "256,1024"  # model calls of the DFM model ("": no DFM rows)
source = "uniform"  # the source the student and DFM model sample with
max_timed_steps = 16  # uniform source: time every k-th DFM step, at most this many, and scale by k (0: all)
large = True  # also time batch 1 at the large size below (the OpenWebText preset's)
large_n_layer = 12
large_n_head = 12
large_n_embd = 768
large_vocab_size = 50257
large_length = 1024
# timing
warmup = 1  # untimed calls first (allocations, kernel selection, compilation)
repeats = 2  # timed calls, their mean reported
large_repeats = 1  # timed calls at the large size
# system
device = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
dtype = "auto"  # "auto" (bfloat16 autocast on CUDA if supported, else float32), "bfloat16", "float32"
compile = False  # torch.compile every model (all rows compiled, or none: a row that ran uncompiled is an error)
compile_backend = "inductor"  # torch.compile's backend ("eager" traces without compiling: for tests)
threads = 0  # torch threads on CPU; 0: torch's default
seed = 1337  # seeds the models' weights and the draws
out_json = ""  # write every number to this file
out_png = ""  # study: plot the study to this file (needs matplotlib)
overwrite = False  # True: an output may replace a file that is not a report of its kind (a checkpoint, data)
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}


# ----------------------------------------------------------------------------- timing

def random_model(kind, vocab_size, length, size, seed=0, device="cpu", backend=None):
    """An untrained model of a kind ("dfm", "student", "ar") and size ({"n_layer", "n_head", "n_embd"}), seeded,
    compiled with `backend` if one is given."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=vocab_size, block_size=length, causal=kind == "ar",
                                    step_conditioned=kind == "student", **size)).to(device).eval()
    return compile_model(model, backend=backend) if backend else model


class SyncCounter(TorchFunctionMode):
    """Counts the calls that make a CUDA host wait for the GPU (`with SyncCounter() as syncs:` ..., then syncs.count
    and syncs.calls by operation): reading a value, nonzero, indexing with a boolean mask (it runs nonzero), a copy
    between devices, a tensor made from Python values on a device. A CPU makes the same calls (copies aside)
    without waiting, so the count there is the count on a GPU."""

    READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy",
             "masked_select", "unique", "bincount"}
    INDEXING = {"__getitem__", "__setitem__", "index_put_", "index_put"}

    def __init__(self):
        super().__init__()
        self.count, self.calls = 0, collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if self.syncs(name, args, kwargs):
            self.count += 1
            self.calls[name] += 1
        return func(*args, **kwargs)

    def syncs(self, name, args, kwargs):
        if name in self.READS:
            return True
        if name in self.INDEXING and len(args) > 1:
            index = args[1] if isinstance(args[1], (tuple, list)) else (args[1],)
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
        if name in ("as_tensor", "tensor"):
            return bool(args) and not isinstance(args[0], torch.Tensor) and kwargs.get("device") is not None
        if name == "to" and isinstance(args[0], torch.Tensor):
            targets = [a for a in (*args[1:], kwargs.get("device")) if isinstance(a, (str, torch.device))]
            return any(torch.device(a).type != args[0].device.type for a in targets)
        return False


def syncs_per_step(model, path, batch_size, length, steps, device="cpu"):
    """Host-device syncs per step of `engine.sample` (SyncCounter), and what made them."""
    with SyncCounter() as counter:
        engine.sample(model, path, batch_size, length, steps, device=device,
                      generator=torch.Generator(device).manual_seed(0))
    return {"syncs_per_step": counter.count / steps, "calls": dict(counter.calls)}


@torch.no_grad()
def time_sampling(model, path, batch_size, length, steps, max_timed_steps, device):
    """(seconds for all `steps` steps, steps timed): AR generation with its KV cache (steps = length - 1), or an
    `engine.sample` run timed whole, or, under the uniform source with more than max_timed_steps steps, every k-th
    step of it (`engine.model_step`), each at its own t, times k (a step's work there depends on t alone: the
    candidates that may move). CUDA runs asynchronously, so it is synchronised before each clock read."""
    strided = path.source == "uniform" and max_timed_steps and not model.config.causal
    stride = -(-steps // max_timed_steps) if strided else 1
    timed = range(stride - 1, steps, stride)
    prompt = torch.zeros(batch_size, 1, dtype=torch.long, device=device)  # AR's first token
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    if model.config.causal:
        generate(model, prompt, length - 1)
    elif stride == 1:
        engine.sample(model, path, batch_size, length, steps, device=device)
    else:
        x = path.source_tokens((batch_size, length), device=device)
        h = torch.full((batch_size,), 1.0 / steps, dtype=torch.float64, device=device)
        workspace = engine.Workspace(x.numel() * path.vocab_size)
        for s in timed:
            t = torch.full((batch_size,), s * (1.0 / steps), device=device)
            x = engine.model_step(model, x, t, h, path, "cumulative", 1.0, None, None, workspace)
    if cuda:
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * stride, len(timed)


class CompileCounter:
    """A torch.compile backend that compiles with `backend` and counts the calls of what it compiled, so that a
    benchmark can tell whether a timed call ran compiled."""

    def __init__(self, backend="inductor"):
        self.backend, self.calls = torch._dynamo.lookup_backend(backend), 0

    def __call__(self, graph, example_inputs):
        compiled = self.backend(graph, example_inputs)

        def run(*args):
            self.calls += 1
            return compiled(*args)
        run._boxed_call = getattr(compiled, "_boxed_call", False)  # inductor's graphs take their inputs as one list
        return run


def study_rows(size, path, length, batch_sizes, cfg, device, label="small", repeats=2):
    """Rows of the speed study at one model size and length: for each batch size, the AR model with its KV cache
    (length - 1 calls), the student at each of cfg's student_steps and the DFM model at each of its dfm_steps.
    With compile, each row records the calls its timed runs made to compiled code; a row that made none is an error."""
    counter = CompileCounter(cfg["compile_backend"])
    if cfg["compile"]:
        torch._dynamo.reset()  # the models of other sizes and lengths are timed already
    models = {kind: random_model(kind, path.vocab_size, length, size, cfg["seed"], device, cfg["compile"] and counter)
              for kind in ("ar", "student", "dfm")}
    runs = [("ar_cache", "ar", length - 1)] + [(kind, kind, S) for kind in ("student", "dfm") if cfg[f"{kind}_steps"]
                                                for S in int_list(f"{kind}_steps", cfg[f"{kind}_steps"])]
    rows = []
    for name, kind, nfe in tqdm(runs, desc=f"speed {label} L={length}", leave=False, dynamic_ncols=True):
        for B in batch_sizes:
            run = lambda: time_sampling(models[kind], path, B, length, nfe, cfg["max_timed_steps"], device)
            for _ in range(min(cfg["warmup"], 1) if label == "large" else cfg["warmup"]):
                run()
            counter.calls = 0
            results = [run() for _ in range(repeats)]  # (seconds, steps timed)
            total = sum(s for s, _ in results) / repeats
            if cfg["compile"] and not counter.calls:
                raise UsageError(f"--compile=True, but {name} ({label}, L={length}, batch {B}) ran uncompiled: "
                                 f"raise engine.RECOMPILE_LIMIT, or time fewer shapes in one run")
            rows.append({"size": label, **size, "vocab_size": path.vocab_size, "length": length, "name": name,
                         "nfe": nfe, "batch_size": B, "seconds": total, "seconds_per_sequence": total / B,
                         "tokens_per_s": B * length / total, "timed_steps": results[0][1], "repeats": repeats,
                         "compiled_calls": counter.calls})
    return rows


def crossovers(rows):
    """For each (size, length, student or DFM run): the smallest batch size at which AR with its cache takes less
    time per sequence than it, or None if none of the batch sizes timed."""
    per_sequence = lambda *key: {r["batch_size"]: r["seconds_per_sequence"] for r in rows
                                 if (r["size"], r["length"], r["name"], r["nfe"])[:len(key)] == key}
    out = []
    for size, L, name, nfe in dict.fromkeys((r["size"], r["length"], r["name"], r["nfe"]) for r in rows
                                            if r["name"] != "ar_cache"):
        ar, mine = per_sequence(size, L, "ar_cache"), per_sequence(size, L, name, nfe)
        common = sorted(set(ar) & set(mine))
        faster = [B for B in common if ar[B] < mine[B]]
        out.append({"size": size, "length": L, "name": f"{name}@{nfe}", "batch_sizes": common,
                    "speedup_vs_ar": [ar[B] / mine[B] for B in common],
                    "crossover_batch_size": faster[0] if faster else None})
    return out


def plot_study(result, path):
    """Seconds per sequence against batch size, one panel per length of the small size; AR with its cache solid
    black, the student and DFM model coloured, dotted lines where AR overtakes the student."""
    plt = pyplot()
    rows = sorted((r for r in result["rows"] if r["size"] == "small"), key=lambda r: r["batch_size"])
    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.5 * len(lengths), 4.2), squeeze=False)
    for ax, L in zip(axes[0], lengths):
        for name, nfe in dict.fromkeys((r["name"], r["nfe"]) for r in rows if r["length"] == L):
            mine = [r for r in rows if (r["length"], r["name"], r["nfe"]) == (L, name, nfe)]
            label = "AR, KV cache" if name == "ar_cache" else f"{name}, {nfe} steps"
            style = {"color": "black", "linewidth": 2.5} if name == "ar_cache" else {}
            ax.plot([r["batch_size"] for r in mine], [r["seconds_per_sequence"] for r in mine], marker="o",
                    label=label, linestyle="--" if name == "dfm" else "-", **style)
        for c in result["crossovers"]:
            if (c["size"], c["length"], c["name"][:7]) == ("small", L, "student") and c["crossover_batch_size"]:
                ax.axvline(c["crossover_batch_size"], color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set(yscale="log", xlabel="batch size (sequences generated at once)", ylabel="seconds per sequence",
               title=f"L = {L} tokens")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    threads = f"{result['threads']} thread" + ("s" if result["threads"] != 1 else "")
    fig.suptitle(f"{result['device_name']} ({result['device']}, {result['dtype']}, {threads}"
                 f"{', compiled' if result['compile'] else ''}): dotted lines mark where AR overtakes the student",
                 fontsize=9)
    save_figure(plt, fig, path)


# ----------------------------------------------------------------------------- modes: each prints its table and
# returns what its JSON holds beside the machine and the settings

SIZE = ("n_layer", "n_head", "n_embd")


def syncs(cfg, dev, autocast):
    """Host-device syncs per step for each vocabulary:length pair of --overhead_cases, source and student step
    count: an untrained student of cfg's size, seeded alike for each pair."""
    rows = []
    for case in tqdm(cfg["overhead_cases"].split(","), desc="syncs", dynamic_ncols=True):
        V, L = (int(v) for v in case.split(":"))
        model = random_model("student", V, L, {k: cfg[k] for k in SIZE}, cfg["seed"], dev)
        for src in cfg["sources"].split(","):
            for steps in int_list("student_steps", cfg["student_steps"]):
                with autocast:
                    rows.append({"vocab_size": V, "length": L, "source": src, "steps": steps,
                                 **syncs_per_step(model, ProbPath(V, src), 1, L, steps, dev)})
    print(markdown_table(["V", "L", "source", "steps", "host-device syncs per step", "by operation"],
                         [[r["vocab_size"], r["length"], r["source"], r["steps"], r["syncs_per_step"], r["calls"]]
                          for r in rows]))
    return {"rows": rows}


def study(cfg, dev, autocast):
    rows = []
    with autocast:
        for L in int_list("lengths", cfg["lengths"]):
            rows += study_rows({k: cfg[k] for k in SIZE}, ProbPath(cfg["vocab_size"], cfg["source"]), L,
                               int_list("batch_sizes", cfg["batch_sizes"]), cfg, dev, repeats=cfg["repeats"])
        if cfg["large"]:
            rows += study_rows({k: cfg[f"large_{k}"] for k in SIZE}, ProbPath(cfg["large_vocab_size"], cfg["source"]),
                               cfg["large_length"], [1], cfg, dev, "large", cfg["large_repeats"])
    crossings = crossovers(rows)
    print(markdown_table(["size", "L", "model", "calls", "batch", "s / sequence", "tokens / s", "timed steps"],
                         [[r["size"], r["length"], r["name"], r["nfe"], r["batch_size"], r["seconds_per_sequence"],
                           r["tokens_per_s"], r["timed_steps"]] for r in rows]))
    print("\ncrossover (smallest batch size at which AR with its cache is faster per sequence):")
    for c in crossings:
        print(f"  {c['size']} L={c['length']} {c['name']}: "
              f"{c['crossover_batch_size'] or 'none up to batch ' + str(max(c['batch_sizes']))}")
    return {"rows": rows, "crossovers": crossings}


MODES = {mode.__name__: mode for mode in (study, syncs)} | {"env": lambda cfg, dev, autocast: {}}


def _cases(text):
    try:
        return all(int(v) >= 2 and int(n) >= 1 for v, n in (case.split(":") for case in text.split(",")))
    except ValueError:
        return False


RULES = {"mode": one_of(*MODES),
         **dict.fromkeys(("n_layer", "n_head", "n_embd", "large_n_layer", "large_n_head", "large_n_embd",
                          "large_length", "repeats", "large_repeats"), POSITIVE),
         "overhead_cases": Rule("vocabulary:length pairs like 65:1024 (a vocabulary of 2 or more)", _cases),
         "sources": Rule(f"a comma-separated subset of {','.join(SOURCES)}",
                         lambda v: all(s in SOURCES for s in v.split(","))),
         **dict.fromkeys(("vocab_size", "large_vocab_size"), Rule("an integer of at least 2", lambda v: v >= 2)),
         "source": one_of(*SOURCES),
         **dict.fromkeys(("lengths", "batch_sizes", "student_steps"), POSITIVE_INTS),
         "dfm_steps": Rule("comma-separated positive integers, or empty", lambda v: v == "" or POSITIVE_INTS.ok(v)),
         "compile_backend": Rule("a torch.compile backend", bool),
         **dict.fromkeys(("max_timed_steps", "warmup", "threads"), NON_NEGATIVE),
         "dtype": one_of("auto", "bfloat16", "float32"), "seed": SEED,
         "out_json": output("json", create=True), "out_png": output("png")}


def main(argv):
    cfg = parse(DEFAULTS, argv, __doc__, __file__)
    check(cfg, RULES, heads=[("n_head", "n_embd"), ("large_n_head", "large_n_embd")])
    refuse_foreign_outputs(cfg, {"out_json": "json", "out_png": "png"})
    if cfg["out_png"] and pyplot() is None:  # said now, not after the whole benchmark
        raise UsageError("--out_png needs matplotlib: pip install matplotlib, or drop --out_png")
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    dev = torch.device(pick_device(cfg["device"]))
    autocast, dtype = autocast_for(dev.type, cfg["dtype"])
    torch.backends.cuda.matmul.allow_tf32 = True  # what float32 matmuls run as outside autocast, on a GPU
    # the machine: the device, its name (a CPU's model name where the system tells it), its peak, the versions
    result = {"mode": cfg["mode"], "device": str(dev), "device_name": dev.type, "torch": torch.__version__,
              "python": sys.version.split()[0], "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
              "peak_flops": device_peak_flops(dev)}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        result.update({"device_name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gb": props.total_memory / 1e9, "bf16": torch.cuda.is_bf16_supported(),
                       "device_count": torch.cuda.device_count()})
    elif os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            result["device_name"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                                         dev.type)
    result.update({"dtype": dtype, "compile": cfg["compile"], "settings": cfg})
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}) + "\n")
    result.update(MODES[cfg["mode"]](cfg, dev, autocast))
    if cfg["out_json"]:
        os.makedirs(os.path.dirname(os.path.abspath(cfg["out_json"])), exist_ok=True)
        with output_file(cfg["out_json"]) as f:
            json.dump(result, f, indent=2)
        print(f"wrote {cfg['out_json']}")
    if cfg["out_png"] and cfg["mode"] == "study":
        plot_study(result, cfg["out_png"])
        print(f"wrote {cfg['out_png']}")


if __name__ == "__main__":
    run(lambda: main(sys.argv[1:]), "nothing was written (--out_json and --out_png come at the end)")
