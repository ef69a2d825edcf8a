"""Timing generation: the sampler's overhead and the speed study against AR with a KV cache.

docs/method.md section 6. Choices:

- Warm-up calls first (allocations, kernel selection, compilation), then the mean of timed calls.
  CUDA runs asynchronously, so it is synchronised before every clock read.
- The sampler's overhead is the time `sampler.sample` spends outside the model's forward calls
  (the jump tests, the softmax, the categorical draws): its total minus the time of the same forward
  calls (recorded during sampling, `RecordedModel`) run again alone, each returning its logits, as a
  fraction of the total; the two alternate, with the same random numbers, and the median share over
  the rounds is reported with its quartiles. Timing the calls from outside rather than inside the
  run keeps the measure fair where `sample` applies the output layer itself (fused with its pass).
- The speed study times, for each batch size B and length L, the AR model with its KV cache (one
  model call per token, L - 1 calls on B rows of one position each), the student at a few steps and
  the DFM model at many (up to S calls on B rows of L positions; the output layer and the draws only
  where a position may move). Long DFM runs may be timed over every k-th step and scaled by k:
  under the uniform source a step's work depends on t alone; the JSON says which cells were scaled.
- The student computes S x L token positions per sequence and AR L, so at batch 1, where a CPU or
  GPU is mostly idle, the student's S calls beat AR's L calls; once the batch fills the hardware,
  work is what counts and AR with its cache wins. The crossover is the batch size where they meet.
"""

import copy
import time

import torch
from tqdm import tqdm

from nanodfm import distill
from nanodfm.autoregressive import generate
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import dfm_loss, sample_path, sample_times
from nanodfm.sampler import sample


def random_model(kind, vocab_size, block_size, n_layer, n_head, n_embd):
    """An untrained model of a given size and kind ("dfm", "student", "ar"), for timing."""
    return Transformer(ModelConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                                   n_embd=n_embd, causal=kind == "ar", step_conditioned=kind == "student"))


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, warmup=1, repeats=3):
    """Mean wall-clock seconds of fn() over `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def speed_benchmark(models, batch_sizes, length, dfm_steps=256, student_steps=8, source="mask", n=1.0,
                    warmup=1, repeats=3, device="cpu"):
    """Seconds per batch and tokens/s to generate B sequences of `length` tokens.

    models: {"ar": causal model, "dfm": DFM model, "student": student}, any of them. The AR model
    starts from one token and writes length - 1, with and without its KV cache. Returns
    {"rows": [...], "ratios": {...}}; a ratio is how many times faster the first is than the second.
    """
    runs = []  # (name, model calls per batch, function of the batch size)
    if "ar" in models:
        for cache in (True, False):
            def ar(B, cache=cache):
                prompt = torch.zeros(B, 1, dtype=torch.long, device=device)
                generate(models["ar"], prompt, length - 1, use_cache=cache)
            runs.append(("ar_cache" if cache else "ar_nocache", length - 1, ar))
    for name, steps in (("dfm", dfm_steps), ("student", student_steps)):
        if name in models:
            def flow(B, name=name, steps=steps):
                sample(models[name], B, length, steps, source, "cumulative", n, step_size_input=name == "student",
                       device=device)
            runs.append((f"{name}@{steps}", steps, flow))
    rows = []
    for name, nfe, fn in runs:
        for B in batch_sizes:
            seconds = time_call(lambda: fn(B), device, warmup, repeats)
            rows.append({"name": name, "batch_size": B, "length": length, "nfe": nfe, "seconds": seconds,
                         "tokens_per_s": B * length / seconds})
    ratios = {}
    by = {(r["name"], r["batch_size"]): r["seconds"] for r in rows}
    for (name, B), seconds in by.items():
        if name != "ar_cache" and ("ar_cache", B) in by:
            ratios[f"{name} vs ar_cache, B={B}"] = by[("ar_cache", B)] / seconds
    return {"rows": rows, "ratios": ratios}


class RecordedModel:
    """Passes calls through to a model and keeps their inputs, so that the same forward calls can be
    timed alone afterwards (`sampler_overhead`). Keeps the model's `head`, so that `sample` still
    fuses the output layer with its softmax pass."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, []
        self.head = getattr(model, "head", None)
        self.fused_head = getattr(model, "fused_head", False)

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.model(*args, **kwargs)


def sampler_overhead(model, batch_size, length, steps, source, student=True, warmup=1, repeats=3, device="cpu",
                     seed=0):
    """{"total_s", "forward_s", "overhead", "overhead_iqr"}: median seconds of one `sample` call, of
    the model's forward calls it makes (run again alone, on the same inputs, returning the logits),
    and the fraction of the total that is not the model, 1 - forward / total: the median over
    `repeats` rounds and its interquartile range. A round runs both, one after the other, so a change
    in the machine's load falls on both; every run draws the same random numbers, so both do the
    same work."""
    recorded = RecordedModel(model)
    run = lambda: sample(recorded, batch_size, length, steps, source, "cumulative", step_size_input=student,
                         device=device, generator=torch.Generator(device).manual_seed(seed))
    for _ in range(warmup):
        run()
    recorded.calls.clear()
    run()
    calls, recorded.calls = recorded.calls, []

    @torch.no_grad()
    def forwards():
        for args, kwargs in calls:
            logits = model(*args, **{k: v for k, v in kwargs.items() if k != "features"})
            del logits  # its release is part of the call's cost
    forwards()
    totals, forward = [], []
    for _ in range(repeats):
        totals.append(time_call(run, device, warmup=0, repeats=1))
        recorded.calls.clear()
        forward.append(time_call(forwards, device, warmup=0, repeats=1))
    median = lambda v: sorted(v)[len(v) // 2]
    shares = sorted(1 - f / t for t, f in zip(totals, forward))
    return {"total_s": median(totals), "forward_s": median(forward), "overhead": median(shares),
            "overhead_iqr": [shares[len(shares) // 4], shares[(3 * len(shares)) // 4]], "model_calls": len(calls)}


def share(row):
    """The overhead of a `sampler_overhead` row as text: "4.2% (3.1 to 5.0)", the median and quartiles."""
    text = f"{100 * row['overhead']:.1f}%"
    if "overhead_iqr" in row:
        text += " ({:.1f} to {:.1f})".format(*(100 * q for q in row["overhead_iqr"]))
    return text


def device_name(device):
    """The accelerator's name, or the CPU's model name where the system tells it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return device.type


def compiled(model):
    """torch.compile(model), keeping `config` where the samplers look for it."""
    fn = torch.compile(model)
    fn.config = model.config
    return fn


def time_sampling(model, batch_size, length, steps, source, student, max_timed_steps, device):
    """(seconds for all `steps` steps, steps timed): a sampling run timed whole, or, under the uniform
    source with more than max_timed_steps steps, every k-th step of it, each at its own t, times k
    (a step's work there depends on t alone: the candidates that may move)."""
    stride = 1 if source != "uniform" or not max_timed_steps else -(-steps // max_timed_steps)
    synchronize(device)
    start = time.perf_counter()
    sample(model, batch_size, length, steps, source, "cumulative", step_size_input=student, device=device,
           stride=stride)
    synchronize(device)
    return (time.perf_counter() - start) * stride, len(range(stride - 1, steps, stride))


def study(size, vocab_size, length, batch_sizes, steps, source="uniform", max_timed_steps=64, warmup=1, repeats=3,
          compile=False, seed=0, device="cpu", label="small"):
    """Rows of the speed study at one model size and length: for each batch size, the AR model with
    its KV cache (length - 1 calls), the student at each of steps["student"] and the DFM model at
    each of steps["dfm"]. size: {"n_layer", "n_head", "n_embd"}."""
    models = {}
    for kind in ("ar", "student", "dfm"):
        torch.manual_seed(seed)
        model = random_model(kind, vocab_size, length, **size).to(device).eval()
        models[kind] = compiled(model) if compile else model
    runs = [("ar_cache", "ar", length - 1)] + [(kind, kind, S) for kind in ("student", "dfm") for S in steps[kind]]
    rows = []
    for name, kind, nfe in tqdm(runs, desc=f"speed {label} L={length}", leave=False, dynamic_ncols=True):
        for B in batch_sizes:
            if kind == "ar":
                prompt = torch.zeros(B, 1, dtype=torch.long, device=device)
                seconds = time_call(lambda: generate(models["ar"], prompt, length - 1), device, warmup, repeats)
                timed = nfe
            else:
                run = lambda: time_sampling(models[kind], B, length, nfe, source, kind == "student", max_timed_steps,
                                            device)
                for _ in range(warmup):
                    run()
                results = [run() for _ in range(repeats)]
                seconds, timed = sum(r[0] for r in results) / repeats, results[0][1]
            rows.append({"size": label, **size, "vocab_size": vocab_size, "length": length, "name": name,
                         "nfe": nfe, "batch_size": B, "seconds": seconds, "seconds_per_sequence": seconds / B,
                         "tokens_per_s": B * length / seconds, "timed_steps": timed, "repeats": repeats})
    return rows


def crossovers(rows):
    """For each (size, length, student or DFM run): the smallest batch size at which AR with its
    cache takes less time per sequence than it, or None if none of the batch sizes timed."""
    out = []
    groups = dict.fromkeys((r["size"], r["length"], r["name"], r["nfe"]) for r in rows if r["name"] != "ar_cache")
    for size, L, name, nfe in groups:
        ar = {r["batch_size"]: r["seconds_per_sequence"] for r in rows
              if (r["size"], r["length"], r["name"]) == (size, L, "ar_cache")}
        mine = {r["batch_size"]: r["seconds_per_sequence"] for r in rows
                if (r["size"], r["length"], r["name"], r["nfe"]) == (size, L, name, nfe)}
        common = sorted(set(ar) & set(mine))
        faster = [B for B in common if ar[B] < mine[B]]
        out.append({"size": size, "length": L, "name": f"{name}@{nfe}", "batch_sizes": common,
                    "speedup_vs_ar": [ar[B] / mine[B] for B in common],
                    "crossover_batch_size": faster[0] if faster else None})
    return out


def plot_study(result, path):
    """Seconds per sequence against batch size, one panel per length of the small size; AR with its
    cache solid black, the student and DFM model coloured. False (no plot) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in result["rows"] if r["size"] == "small"]
    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.5 * len(lengths), 4.2), squeeze=False)
    for ax, L in zip(axes[0], lengths):
        for name, nfe in dict.fromkeys((r["name"], r["nfe"]) for r in rows if r["length"] == L):
            mine = sorted((r for r in rows if (r["length"], r["name"], r["nfe"]) == (L, name, nfe)),
                          key=lambda r: r["batch_size"])
            label = "AR, KV cache" if name == "ar_cache" else f"{name}, {nfe} steps"
            style = {"color": "black", "linewidth": 2.5} if name == "ar_cache" else {}
            ax.plot([r["batch_size"] for r in mine], [r["seconds_per_sequence"] for r in mine], marker="o",
                    label=label, linestyle="--" if name == "dfm" else "-", **style)
        for c in result["crossovers"]:
            if c["size"] == "small" and c["length"] == L and c["crossover_batch_size"] and c["name"].startswith("student"):
                ax.axvline(c["crossover_batch_size"], color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (sequences generated at once)")
        ax.set_ylabel("seconds per sequence")
        ax.set_title(f"L = {L} tokens")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    threads = f"{result['threads']} thread" + ("s" if result["threads"] != 1 else "")
    fig.suptitle(f"{result['device_name']} ({result['device']}, {result['dtype']}, {threads}"
                 f"{', compiled' if result['compile'] else ''}): dotted lines mark where AR overtakes the student",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def floor_estimate(n_layer, n_embd, vocab_size, length, steps, batch_size, peak_flops, bandwidth, bytes_per_value=2):
    """A paper estimate of the fastest one sequence can be generated on an accelerator with the given
    peak (FLOP/s) and memory bandwidth (bytes/s): the larger of compute time and memory time, per
    sequence, for the student at `steps` steps and for AR with its KV cache. Counts the matmuls with
    weights (2 FLOPs per weight per token: 12 d^2 per layer and the d x V head), attention (4 L d per
    token per layer for the student; for AR 4 i d at position i), weights read once per model call,
    the logits written and read once, and AR's cached keys and values read at every position.
    Ignores everything else (norms, the sampler's own passes, kernel launches): a floor, not a forecast."""
    d, L, B, V, b = n_embd, length, batch_size, vocab_size, bytes_per_value
    weights = 12 * n_layer * d * d + d * V
    student_flops = B * steps * L * (2 * weights + 4 * n_layer * L * d)
    student_bytes = steps * (weights * b + B * L * V * (b + 4))  # logits written (b), read as float32 (4)
    positions = L * (L - 1) / 2  # AR attends to i cached positions at step i
    ar_flops = B * ((L - 1) * 2 * weights + 4 * n_layer * d * positions)
    ar_bytes = (L - 1) * weights * b + B * (2 * n_layer * d * b * positions + (L - 1) * V * (b + 4))
    out = {}
    for name, flops, moved in (("student", student_flops, student_bytes), ("ar_cache", ar_flops, ar_bytes)):
        compute, memory = flops / peak_flops, moved / bandwidth
        out[name] = {"flops": flops, "bytes": moved, "compute_s": compute, "memory_s": memory,
                     "bound": "compute" if compute >= memory else "memory",
                     "seconds_per_sequence": max(compute, memory) / B}
    return out


def training_costs(size, vocab_size, length, batch_size, source="uniform", rounds=3, iters=10, seed=0, device="cpu",
                   max_exponent=6, teacher="rk4", weighting="uniform", average="logits"):
    """Seconds per training iteration of a DFM model and of its distillation (the student preset's
    recipe by default), on random tokens, interleaved round by round so that both see the same
    machine load: {"dfm": s, "student": s, "ratio": student / dfm}."""
    torch.manual_seed(seed)
    dfm = random_model("dfm", vocab_size, length, **size).to(device).train()
    student = distill.student_from_dfm(dfm).train()
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    optimizers = {"dfm": dfm.optimizer(1e-3, 0.1, (0.9, 0.99), torch.device(device).type),
                  "student": student.optimizer(5e-4, 0.1, (0.9, 0.99), torch.device(device).type)}
    g = torch.Generator().manual_seed(seed)

    def iteration(kind):
        x1 = torch.randint(vocab_size, (batch_size, length), generator=g).to(device)
        if kind == "dfm":
            t = sample_times(batch_size, g).to(device)
            x_t = sample_path(x1, t, vocab_size, source, generator=g)
            loss = dfm_loss(dfm(x_t, t), x1, x_t, t, vocab_size, source)
        else:
            loss = distill.distill_loss(student, ema, x1, vocab_size, source, 1.0, max_exponent, teacher, g, weighting,
                                        average)
        loss.backward()
        model = dfm if kind == "dfm" else student
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizers[kind].step()
        optimizers[kind].zero_grad(set_to_none=True)
        if kind == "student":
            distill.ema_update(ema, student, 0.99)

    total = {"dfm": 0.0, "student": 0.0}
    for _ in tqdm(range(rounds), desc="training cost", leave=False):
        for kind in total:
            iteration(kind)  # warm
            synchronize(device)
            start = time.perf_counter()
            for _ in range(iters):
                iteration(kind)
            synchronize(device)
            total[kind] += time.perf_counter() - start
    per = {k: v / (rounds * iters) for k, v in total.items()}
    return {**per, "ratio": per["student"] / per["dfm"]}
