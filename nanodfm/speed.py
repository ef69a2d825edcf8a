"""Timing generation: the sampler's overhead and the speed study against AR with a KV cache.

docs/method.md section 6. Choices:

- Warm-up calls first (allocations, kernel selection, compilation), then the mean of timed calls.
  CUDA runs asynchronously, so it is synchronised before every clock read.
- The sampler's overhead is the time `sampler.sample` spends outside the model's forward calls
  (the jump tests, the softmax, the categorical draws), measured by timing every forward inside one
  sampling run (`TimedModel`): the fraction of the total that is not the model.
- The speed study times, for each batch size B and length L, the AR model with its KV cache (one
  model call per token, L - 1 calls on B rows of one position each), the student at a few steps and
  the DFM model at many (S calls on B rows of L positions each). Long DFM runs may be timed over
  their first `max_timed_steps` steps and scaled: under the uniform source every step does the same
  work; the JSON says which cells were scaled.
- The student computes S x L token positions per sequence and AR L, so at batch 1, where a CPU or
  GPU is mostly idle, the student's S calls beat AR's L calls; once the batch fills the hardware,
  work is what counts and AR with its cache wins. The crossover is the batch size where they meet.
"""

import time

import torch

from nanodfm.autoregressive import generate
from nanodfm.model import ModelConfig, Transformer
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


class TimedModel:
    """Calls a model and adds the wall-clock seconds of each call (synchronised) to `seconds`."""

    def __init__(self, model, device):
        self.model, self.config, self.device = model, model.config, device
        self.seconds, self.calls = 0.0, 0

    def __call__(self, *args, **kwargs):
        synchronize(self.device)
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def sampler_overhead(model, batch_size, length, steps, source, student=True, warmup=1, repeats=3, device="cpu"):
    """{"total_s", "forward_s", "overhead"}: mean seconds of one `sample` call, of its forward
    calls, and the fraction of the total spent outside the model."""
    timed = TimedModel(model, device)
    run = lambda: sample(timed, batch_size, length, steps, source, "cumulative", step_size_input=student,
                         device=device)
    for _ in range(warmup):
        run()
    timed.seconds, timed.calls = 0.0, 0
    total = time_call(run, device, warmup=0, repeats=repeats)
    forward = timed.seconds / repeats
    return {"total_s": total, "forward_s": forward, "overhead": (total - forward) / total,
            "model_calls": timed.calls / repeats}


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
