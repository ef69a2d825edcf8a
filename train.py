"""Train a model: the DFM denoiser, the autoregressive baseline, or the few-step student.

    python train.py config/shakespeare_char_cpu.py                 # one process, CPU or GPU
    python train.py config/shakespeare_char.py --max_iters=2000    # overrides after the file
    torchrun --standalone --nproc_per_node=8 train.py config/openwebtext.py

kind = "dfm" trains the flow-matching denoiser on the path of nanodfm/path.py; kind = "ar" the same
blocks causally with next-token cross-entropy; kind = "student" distils a DFM checkpoint
(init_from=PATH) into the step-aware few-step student of nanodfm/distill.py.
"""

import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanodfm import checkpoint, distill
from nanodfm.config import UsageError, autocast_for, parse, pick_device
from nanodfm.data import dataset_folder, get_batch, load_meta, same_vocabulary, split_path
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import SOURCES, dfm_loss, elbo_bound, sample_path, sample_times

# ----------------------------------------------------------------------------- defaults
# I/O
out_dir = "out"  # ckpt.pt (the latest state), best.pt (the best val loss) and log.jsonl
init_from = "scratch"  # "scratch", "resume" (from out_dir/ckpt.pt) or a DFM checkpoint to distil (kind = "student")
overwrite = False  # a new run (not resume) may replace the checkpoints already in out_dir
eval_interval = 250  # evaluate, write ckpt.pt (latest state) and, if val loss improved, best.pt
eval_iters = 20  # batches per split in each evaluation
log_interval = 10  # iterations between log lines
eval_only = False  # evaluate once and exit
# data
dataset = "shakespeare_char"  # data/<dataset>/{train,val}.bin and meta.json; resume and students: the checkpoint's
data_dir = ""  # read the dataset from this folder instead of data/<dataset>
batch_size = 64  # sequences per process and micro-step
block_size = 256  # tokens per sequence (the model's context)
gradient_accumulation_steps = 1  # micro-steps per optimiser step, per process
# model
kind = "dfm"  # "dfm", "ar" or "student"
n_layer = 6  # transformer blocks
n_head = 6  # attention heads
n_embd = 384  # width
n_cond = 128  # width of the time (and step-size) conditioning vector
dropout = 0.0  # dropout probability inside the blocks
# probability path and loss (nanodfm/path.py)
source = "mask"  # "mask" or "uniform"
kappa_power = 1.0  # kappa(t) = t ** kappa_power
loss_weighting = "elbo"  # "elbo" (generalised KL, a bound) or "ce" (plain cross-entropy)
# few-step distillation (nanodfm/distill.py), kind = "student"
max_step_exponent = 8  # step sizes h in {1, 1/2, ..., 2**-max_step_exponent}
teacher = "rk4"  # "rk4" or "rk2" shortcut teacher
teacher_average = "logits"  # RK average of the half steps' "logits" (the paper) or "probs" (the velocities)
step_size_weighting = "inverse_h"  # P(h): "inverse_h" (proportional to 1/h, the paper) or "uniform" over exponents
ema_decay = 0.9995  # the teacher is this exponential moving average of the student
# optimiser: AdamW, linear warmup then cosine decay to min_lr
learning_rate = 1e-3  # peak learning rate, reached after warmup_iters
min_lr = 1e-4  # learning rate at the end of the decay
warmup_iters = 100  # linear warmup from 0 over this many steps
max_iters = 5000  # optimiser steps in all
lr_decay_iters = 0  # the cosine decay ends here; 0: at max_iters
decay_lr = True  # False: a constant learning_rate
weight_decay = 0.1  # AdamW decay of matrices and embeddings (not of biases and gains)
beta1 = 0.9  # AdamW first-moment decay
beta2 = 0.99  # AdamW second-moment decay
grad_clip = 1.0  # clip the gradient norm to this; 0: off
# system
device = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
dtype = "auto"  # "auto" (bfloat16 on CUDA if supported, else float32), "bfloat16", "float32"
compile = False  # torch.compile the model (worth it on CUDA)
peak_flops = 0.0  # the accelerator's peak FLOP/s for MFU; 0: look up known GPUs by name
seed = 1337  # seeds the model, the batches and the noise
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "n_cond", "dropout")  # a resumed or distilled model keeps its own
PATH_KEYS = ("source", "kappa_power")  # and the probability path it was trained on
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12, "4090": 165e12}


def check(cfg):
    """Reject settings that cannot work, with the fix in the message."""
    choices = {"kind": checkpoint.KINDS, "source": SOURCES, "loss_weighting": ("elbo", "ce"),
               "teacher": ("rk4", "rk2"), "dtype": ("auto", "bfloat16", "float32"),
               "teacher_average": distill.TEACHER_AVERAGES, "step_size_weighting": distill.STEP_SIZE_WEIGHTINGS}
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise UsageError(f"{key}={cfg[key]!r} is not one of {', '.join(allowed)}")
    for key in ("batch_size", "block_size", "max_iters", "eval_interval", "eval_iters", "log_interval",
                "gradient_accumulation_steps"):
        if cfg[key] <= 0 and not (key == "max_iters" and cfg[key] == 0):
            raise UsageError(f"{key} must be positive, got {cfg[key]}")
    if cfg["kind"] == "student" and cfg["init_from"] == "scratch":
        raise UsageError("kind=student distils a DFM model: pass --init_from=PATH/ckpt.pt (or resume)")


def learning_rate_at(it, cfg):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters (0: at max_iters), then min_lr."""
    if not cfg["decay_lr"]:
        return cfg["learning_rate"]
    if it < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
    decay_iters = cfg["lr_decay_iters"] or cfg["max_iters"]
    if it > decay_iters:
        return cfg["min_lr"]
    ratio = (it - cfg["warmup_iters"]) / max(1, decay_iters - cfg["warmup_iters"])
    return cfg["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg["learning_rate"] - cfg["min_lr"])


def rng_state(generator):
    """Every RNG state as tensors and plain values, so the checkpoint loads with weights_only=True."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "data": generator.get_state(),
             "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, generator):
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def batch_loss(model, teacher_model, x1, cfg, vocab_size, generator):
    """The training loss of one batch of data x1 (B, L) for the configured kind."""
    if cfg["kind"] == "ar":
        logits = model(x1[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), x1[:, 1:].flatten())
    if cfg["kind"] == "student":
        if x1.device.type != "cpu":  # the half steps draw (N, V) float64 noise: draw it where the logits are
            seed = int(torch.randint(2**62, (), generator=generator))
            generator = torch.Generator(x1.device).manual_seed(seed)
        return distill.distill_loss(model, teacher_model, x1, vocab_size, cfg["source"], cfg["kappa_power"],
                                    cfg["max_step_exponent"], cfg["teacher"], generator,
                                    cfg["step_size_weighting"], cfg["teacher_average"])
    t = sample_times(x1.shape[0], generator=generator, device=x1.device)
    x_t = sample_path(x1, t, vocab_size, cfg["source"], cfg["kappa_power"], generator=generator)
    return dfm_loss(model(x_t, t), x1, x_t, t, vocab_size, cfg["source"], cfg["kappa_power"], cfg["loss_weighting"])


def open_log(path, resume_step):
    """log.jsonl for appending: a new run starts a new log; a resumed one keeps the rows up to its
    checkpoint's step (a killed run may have logged steps past it, which the resumed run repeats)."""
    rows = []
    if resume_step is not None and os.path.isfile(path):
        with open(path) as f:
            rows = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
    log = open(path, "w")
    log.writelines(rows)
    return log


def adopt_checkpoint(cfg, ckpt, path, meta, data_dir):
    """Take the probability path and the model's shape from the checkpoint a run starts from (resume,
    or a student's parent), after checking that it was trained on the same tokens and that no shape
    or path key set for this run (to a value other than the default) contradicts it."""
    if not same_vocabulary(ckpt["meta"], meta):
        raise UsageError(f"{path} was trained on another vocabulary than {data_dir} (its tokens differ, "
                         f"not only their number): use the dataset it was trained on")
    theirs = {**{k: ckpt["model_config"][k] for k in SHAPE_KEYS}, **{k: ckpt["config"][k] for k in PATH_KEYS}}
    differ = [f"{k}={cfg[k]!r} (checkpoint: {v!r})" for k, v in theirs.items() if cfg[k] != v and cfg[k] != DEFAULTS[k]]
    if differ:
        raise UsageError(f"the model comes from {path}, but {', '.join(differ)}: drop these keys or set them "
                         f"to the checkpoint's values")
    for key in SHAPE_KEYS:  # so the config recorded in the new checkpoints is the model's
        cfg[key] = ckpt["model_config"][key]
    for key in PATH_KEYS:  # the path is part of the model: keep the one it was trained on
        cfg[key] = ckpt["config"][key]


def main(argv):
    """Train as configured by argv; returns the trained model and, for a student, its EMA."""
    cfg = parse(DEFAULTS, argv, __doc__, __file__)
    check(cfg)
    # one code path for a single process and for torchrun: DDP only when RANK is set
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world_size = 0, 0, 1
    dev = pick_device(cfg["device"])
    if ddp:
        rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
        backend = "nccl" if dev.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if dev.startswith("cuda"):
            dev = f"cuda:{local_rank}"
            torch.cuda.set_device(dev)
    master = rank == 0
    device_type = "cuda" if dev.startswith("cuda") else dev.split(":")[0]
    autocast, dtype_name = autocast_for(device_type, cfg["dtype"])
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ckpt_path, best_path = os.path.join(cfg["out_dir"], "ckpt.pt"), os.path.join(cfg["out_dir"], "best.pt")
    ckpt = parent = None
    if cfg["init_from"] == "resume":
        ckpt = checkpoint.load(ckpt_path, kinds=(cfg["kind"],))
    elif cfg["init_from"] != "scratch":
        if cfg["kind"] != "student":
            raise UsageError("init_from=PATH starts a student from a DFM checkpoint; use kind=student")
        parent = checkpoint.load(cfg["init_from"], kinds=("dfm",))
    if (ckpt or parent) and not cfg["data_dir"]:  # resume and students read the data the model was trained on
        trained = (ckpt or parent)["config"]
        cfg["dataset"], cfg["data_dir"] = trained["dataset"], trained.get("data_dir", "")
    data_dir = dataset_folder(cfg)
    meta = load_meta(data_dir)
    vocab_size = meta["vocab_size"]
    train_bin, val_bin = split_path(data_dir, "train", vocab_size), split_path(data_dir, "val", vocab_size)
    if master:  # one run per out_dir, and a new run never silently replaces a finished one
        release_out_dir = checkpoint.lock_out_dir(cfg["out_dir"])
        if cfg["init_from"] != "resume" and not cfg["overwrite"] and os.path.exists(ckpt_path):
            raise UsageError(f"{cfg['out_dir']} already holds a checkpoint: continue it with --init_from=resume, "
                             f"or start over there with --overwrite=True (or pick another --out_dir)")

    torch.manual_seed(cfg["seed"])  # every rank builds the same model (DDP would broadcast it anyway)
    iter_num, best_val_loss, teacher_model = 0, float("inf"), None
    if ckpt is not None:
        adopt_checkpoint(cfg, ckpt, ckpt_path, meta, data_dir)
        model = checkpoint.build_model(ckpt)
        iter_num, best_val_loss = ckpt["step"], ckpt["best_val_loss"]
    elif parent is not None:
        adopt_checkpoint(cfg, parent, cfg["init_from"], meta, data_dir)
        model = distill.student_from_dfm(checkpoint.build_model(parent))
        parent = None
    else:
        model = Transformer(ModelConfig(vocab_size=vocab_size, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                                        n_head=cfg["n_head"], n_embd=cfg["n_embd"], n_cond=cfg["n_cond"],
                                        dropout=cfg["dropout"], causal=cfg["kind"] == "ar"))
    if model.config.vocab_size != vocab_size:
        raise UsageError(f"checkpoint vocabulary ({model.config.vocab_size}) differs from {data_dir}'s ({vocab_size})")
    if cfg["block_size"] > model.config.block_size:
        raise UsageError(f"block_size={cfg['block_size']} exceeds the model's {model.config.block_size}")
    model.to(dev)
    torch.manual_seed(cfg["seed"] + rank)  # dropout differs across ranks, as their data does
    np.random.seed(cfg["seed"] + rank)  # unused here, but seeded and saved: a fork that draws from them resumes exactly
    random.seed(cfg["seed"] + rank)
    generator = torch.Generator().manual_seed(cfg["seed"] + rank)  # batches, times, noise
    optimizer = model.optimizer(cfg["learning_rate"], cfg["weight_decay"], (cfg["beta1"], cfg["beta2"]), device_type)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if world_size == 1 and ckpt["world_size"] == 1:
            set_rng_state(ckpt["rng"], generator)
        else:  # another process layout: restore the step, draw fresh but reproducible data streams
            generator.manual_seed(cfg["seed"] + rank + 1000003 * iter_num)
    raw_model = model
    if cfg["compile"]:
        model = torch.compile(model)
    if ddp:  # wrapping broadcasts rank 0's weights into raw_model, in place
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)
    if cfg["kind"] == "student":  # the EMA of the student is the shortcut teacher, and what samples
        teacher_model = copy.deepcopy(raw_model).requires_grad_(False).eval()
        if ckpt is not None:
            teacher_model.load_state_dict(ckpt["ema"])
    ckpt = None  # free the memory

    eval_generator_seed = cfg["seed"] + 999  # evaluations see the same batches every time
    def evaluate():
        raw_model.eval()
        g = torch.Generator().manual_seed(eval_generator_seed)
        out = {}
        with torch.no_grad(), autocast:
            for split, path in (("train", train_bin), ("val", val_bin)):
                losses = [batch_loss(raw_model, teacher_model, get_batch(path, cfg["batch_size"], cfg["block_size"], g, dev),
                                     cfg, vocab_size, g).item() for _ in range(cfg["eval_iters"])]
                out[split] = sum(losses) / len(losses)
            if cfg["kind"] == "dfm" and cfg["source"] == "mask":
                x1 = get_batch(val_bin, cfg["batch_size"], cfg["block_size"], g, dev)
                out["val_elbo"] = elbo_bound(raw_model, x1, vocab_size, cfg["kappa_power"], num_times=4, generator=g)
        raw_model.train()
        return out

    tokens_per_iter = cfg["batch_size"] * cfg["block_size"] * cfg["gradient_accumulation_steps"] * world_size
    flops_per_iter = raw_model.flops_per_token(cfg["block_size"]) * tokens_per_iter
    peak = cfg["peak_flops"] or next((v for k, v in PEAK_BF16_FLOPS.items() if device_type == "cuda"
                                      and k in torch.cuda.get_device_name(dev)), 0.0)
    if master:
        print(f"{cfg['kind']} model, {raw_model.num_params() / 1e6:.2f}M non-embedding parameters, "
              f"{tokens_per_iter:,} tokens per iteration, device {dev}, {dtype_name}")
    log_file = open_log(os.path.join(cfg["out_dir"], "log.jsonl"), iter_num if cfg["init_from"] == "resume" else None) \
        if master else None
    resumed_at = saved_step = iter_num if cfg["init_from"] == "resume" else None  # saved_step: the checkpoint on disk
    bar = tqdm(total=cfg["max_iters"], initial=iter_num, disable=not master, dynamic_ncols=True, desc="train")
    t_last, tokens_since = time.time(), 0
    while True:
        lr = learning_rate_at(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        done = cfg["eval_only"] or iter_num >= cfg["max_iters"]
        # a resumed run does not redo the evaluation its checkpoint was written at
        if (iter_num % cfg["eval_interval"] == 0 or done) and (iter_num != resumed_at or cfg["eval_only"]) and master:
            losses = evaluate()
            line = f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
            if "val_elbo" in losses:
                line += f", val ELBO perplexity <= {math.exp(losses['val_elbo']):.3f}"
            bar.write(line)
            log_file.write(json.dumps({"step": iter_num, **losses}) + "\n")
            log_file.flush()
            improved = losses["val"] < best_val_loss
            best_val_loss = min(best_val_loss, losses["val"])
            # ckpt.pt is always the latest state, the one resume reads; best.pt the best val loss so far
            try:
                checkpoint.save(ckpt_path, {
                    "kind": cfg["kind"], "model_config": asdict(raw_model.config),
                    "model": checkpoint.model_state(raw_model), "optimizer": optimizer.state_dict(),
                    "ema": teacher_model.state_dict() if teacher_model is not None else None,
                    "config": cfg, "step": iter_num, "val_loss": losses["val"], "best_val_loss": best_val_loss,
                    "rng": rng_state(generator), "world_size": world_size, "meta": meta})
                saved_step = iter_num
                if improved:
                    checkpoint.copy(ckpt_path, best_path)
            except UsageError:
                bar.close()  # the bar ends its line, so the error is a line of its own
                raise
            t_last, tokens_since = time.time(), 0  # throughput counts training only
        if done:
            break
        for micro in range(cfg["gradient_accumulation_steps"]):
            x1 = get_batch(train_bin, cfg["batch_size"], cfg["block_size"], generator, dev)
            # DDP: all-reduce gradients only on the last micro-step
            sync = not ddp or micro == cfg["gradient_accumulation_steps"] - 1
            with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                loss = batch_loss(model, teacher_model, x1, cfg, vocab_size, generator)
            (loss / cfg["gradient_accumulation_steps"]).backward()
        # the norm of all gradients (clipped to grad_clip if > 0); inf leaves them as they are
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"] if cfg["grad_clip"] > 0 else math.inf)
        if not torch.isfinite(torch.stack([loss.detach().float(), grad_norm.float()])).all():
            # stop before the step: the weights, and the checkpoint on disk, stay finite
            good = f"{ckpt_path} (step {saved_step}) is intact" if saved_step is not None else "no checkpoint was written"
            bar.close()
            raise UsageError(f"training diverged at step {iter_num + 1}: loss {loss.item():.4g}, gradient norm "
                             f"{grad_norm.item():.4g}; {good}: lower --learning_rate (or raise --warmup_iters) "
                             f"and resume")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if teacher_model is not None:
            distill.ema_update(teacher_model, raw_model, cfg["ema_decay"])
        iter_num += 1
        tokens_since += tokens_per_iter
        bar.update(1)
        if iter_num % cfg["log_interval"] == 0 and master:
            if device_type == "cuda":
                torch.cuda.synchronize()
            elapsed, lossf = time.time() - t_last, loss.item()
            stats = {"loss": f"{lossf:.4f}", "tok/s": f"{tokens_since / elapsed:,.0f}"}
            if peak:
                stats["mfu"] = f"{100 * flops_per_iter * tokens_since / tokens_per_iter / elapsed / (peak * world_size):.1f}%"
            bar.set_postfix(stats)
            log_file.write(json.dumps({"step": iter_num, "loss": lossf, "lr": lr}) + "\n")
            log_file.flush()
            t_last, tokens_since = time.time(), 0
    bar.close()
    if master:
        log_file.close()
        release_out_dir()
    if ddp:
        dist.destroy_process_group()
    return raw_model, teacher_model


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        sys.exit(f"error: {e}")
