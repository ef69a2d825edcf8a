"""Train a model: the DFM denoiser, the autoregressive baseline, or the few-step student.

    python train.py config/shakespeare_char_cpu.py                 # one process, CPU or GPU
    python train.py config/shakespeare_char.py --max_iters=2000    # overrides after the file
    torchrun --standalone --nproc_per_node=8 train.py config/openwebtext.py

kind = "dfm" trains the flow-matching denoiser on the path of nanodfm/path.py; kind = "ar" the same
blocks causally with next-token cross-entropy; kind = "student" distils a DFM checkpoint
(init_from=PATH) into the step-aware few-step student of nanodfm/distill.py. kind = "dfm" with
init_from=PATH fine-tunes a DFM model, e.g. on another text of the same tokens (--dataset).
"""

import contextlib
import copy
import filecmp
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanodfm import checkpoint, distill
from nanodfm.config import (NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, PROBABILITY, SEED, UsageError, autocast_for, check,
                            device_memory_gb, device_peak_flops, one_of, parse, pick_device, run)
from nanodfm.data import dataset_folder, get_batch, load_meta, same_vocabulary, split_path
from nanodfm.model import ModelConfig, Transformer
from nanodfm.path import LOSS_WEIGHTINGS, SOURCES, ProbPath, batch_loss, elbo_bound

# ----------------------------------------------------------------------------- defaults
# I/O
out_dir = "out"  # ckpt.pt (the latest state), best.pt (the best val loss) and log.jsonl
init_from = "scratch"  # "scratch", "resume" (from out_dir/ckpt.pt), or a DFM checkpoint to distil or fine-tune
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
teacher = "rk4"  # the Runge-Kutta shortcut teacher: a row of distill.TEACHERS ("rk4" or "rk2")
teacher_average = "logits"  # average the RK points' "logits" (the paper) or "probs" (the velocities)
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
peak_flops = 0.0  # the accelerator's peak FLOP/s for MFU; 0: look the GPU up by its exact name (config.PEAK_BF16_FLOPS)
seed = 1337  # seeds the model, the batches and the noise
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}
POSITIVE_KEYS = ("batch_size", "block_size", "eval_interval", "eval_iters", "log_interval",
                 "gradient_accumulation_steps", "n_layer", "n_head", "n_embd", "n_cond")
RULES = {"kind": one_of(*checkpoint.KINDS), "source": one_of(*SOURCES), "loss_weighting": one_of(*LOSS_WEIGHTINGS),
         "teacher": one_of(*distill.TEACHERS), "teacher_average": one_of(*distill.TEACHER_AVERAGES),
         "step_size_weighting": one_of(*distill.STEP_SIZE_WEIGHTINGS), "dtype": one_of("auto", "bfloat16", "float32"),
         **dict.fromkeys(POSITIVE_KEYS, POSITIVE), "dropout": PROBABILITY, "ema_decay": PROBABILITY,
         "beta1": PROBABILITY, "beta2": PROBABILITY, "kappa_power": POSITIVE_FLOAT, "learning_rate": POSITIVE_FLOAT,
         **dict.fromkeys(("max_iters", "warmup_iters", "lr_decay_iters", "max_step_exponent", "min_lr", "weight_decay",
                          "grad_clip", "peak_flops"), NON_NEGATIVE), "seed": SEED}
# keys that only some kinds take: set for another kind they would change nothing, and are refused
ONLY_FOR = {**dict.fromkeys(("teacher", "teacher_average", "step_size_weighting", "max_step_exponent", "ema_decay"),
                            ("student",)),
            **dict.fromkeys(("source", "kappa_power", "loss_weighting"), ("dfm", "student"))}


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


def loss_of(model, teacher_model, x1, cfg, path, generator, loss=None):
    """The training loss of a batch of data x1 (B, L) for the configured kind; loss: the DFM loss
    function to use (a compiled path.loss when the model is compiled)."""
    if cfg["kind"] == "ar":
        logits = model(x1[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), x1[:, 1:].flatten())
    if cfg["kind"] == "student":
        if x1.device.type != "cpu":  # the half steps draw their noise where the logits are
            seed = int(torch.randint(2**62, (), generator=generator))
            generator = torch.Generator(x1.device).manual_seed(seed)
        return distill.distill_loss(model, teacher_model, x1, path, distill.Recipe.of(cfg), generator)
    return batch_loss(model, x1, path, cfg["loss_weighting"], generator, loss)


def evaluate(model, teacher_model, cfg, path, files, dev, autocast):
    """Mean loss of eval_iters batches per split (the same batches every time) and, for a
    mask-source DFM model, the ELBO on one val batch."""
    model.eval()
    g = torch.Generator().manual_seed(cfg["seed"] + 999)
    out = {}
    with torch.no_grad(), autocast:
        for split, file in files.items():
            batches = (get_batch(file, cfg["batch_size"], cfg["block_size"], g, dev) for _ in range(cfg["eval_iters"]))
            out[split] = sum(loss_of(model, teacher_model, b, cfg, path, g).item() for b in batches) / cfg["eval_iters"]
        if cfg["kind"] == "dfm" and cfg["source"] == "mask":
            x1 = get_batch(files["val"], cfg["batch_size"], cfg["block_size"], g, dev)
            out["val_elbo"] = elbo_bound(model, x1, path, num_times=4, generator=g)
    model.train()
    return out


def memory_estimate(num_params, vocab_size, cfg, dtype_name):
    """A rough peak memory of one micro-step, in GB: weights, gradients and AdamW's two moments in
    float32 (16 bytes a parameter); activations at about 34 bytes a token and layer per 2-byte
    value of width (Korthikanti et al. 2022, with fused attention, no recomputation); and the
    logits, about three float32 copies of batch x block x vocabulary in the loss (one with a
    compiled loss). A student's teacher adds its forward passes' logits, freed one by one."""
    value = 2 if dtype_name == "bfloat16" else 4
    tokens = cfg["batch_size"] * cfg["block_size"]
    states = 16 * num_params
    activations = 17 * value * cfg["n_layer"] * cfg["n_embd"] * tokens
    logits = (1 if cfg["compile"] else 3) * 4 * tokens * vocab_size
    return {"states": states / 1e9, "activations": activations / 1e9, "logits": logits / 1e9,
            "total": (states + activations + logits) / 1e9}


def refuse_what_cannot_fit(cfg, vocab_size, dev, dtype_name):
    """A new model whose memory_estimate exceeds the device's memory is refused before anything is
    allocated. Its parameters, counted from the config: 12 D^2 a block (attention and MLP), the
    embedding and head, and the time conditioning (adaLN: 6 D a block from an n_cond vector)."""
    have = device_memory_gb(dev)
    if have is None:
        return
    D, C, conditioned = cfg["n_embd"], cfg["n_cond"], cfg["kind"] != "ar"
    params = cfg["n_layer"] * (12 * D * D + conditioned * 6 * D * (C + 1)) + (2 * vocab_size + 1) * D
    need = memory_estimate(params + conditioned * (Transformer.N_FREQ * C + C * C + 2 * D * C), vocab_size, cfg,
                           dtype_name)
    if need["total"] > have:
        raise UsageError(f"this run needs about {need['total']:.3g} GB (states {need['states']:.3g}, activations "
                         f"{need['activations']:.3g}, logits {need['logits']:.3g}) and {dev} has {have:.3g} GB: "
                         f"make the model, batch_size or block_size smaller")


def eval_line(step, losses):
    """The evaluation's line; an ELBO too large to exponentiate reads as inf."""
    line = f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
    if "val_elbo" in losses:
        nats = losses["val_elbo"]
        line += f", val ELBO perplexity <= {math.exp(nats) if not nats > 700 else math.inf:.3f}"
    return line


def write_log(log_file, row):
    try:
        log_file.write(json.dumps(row) + "\n")
        log_file.flush()
    except OSError as e:
        raise UsageError(f"cannot write {log_file.name}: {e.strerror}; the checkpoint there is intact: free some "
                         f"space and resume with --init_from=resume") from None


def open_log(path, resume_step):
    """log.jsonl for appending: a new run starts a new log; a resumed one keeps the rows up to its
    checkpoint's step (a killed run may have logged steps past it, which the resumed run repeats,
    and may have left a torn last line, which is dropped)."""
    rows = []
    if resume_step is not None and os.path.isfile(path):
        with open(path) as f:
            for line in f:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if json.loads(line)["step"] <= resume_step:
                        rows.append(line)
    try:
        log = open(path, "w")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    log.writelines(rows)
    return log


def model_flops_per_token(model, seq_len, backward=True):
    """Matmul FLOPs per token of a forward pass (and, with backward, of its backward too, twice
    the forward): 2 per weight for the weights that act on every token, attention's scores and
    weighted sums (2 matmuls of 2 T D FLOPs per layer), and the conditioning (time and step-size
    MLPs, the adaLN modulations), which runs once per sequence, spread over its seq_len tokens."""
    c = model.config
    per_sequence = sum(p.numel() for name, p in model.named_parameters()
                       if name.startswith(("time_mlp.", "step_mlp.", "final_modulation.")) or ".modulation." in name)
    per_token = model.num_params() - per_sequence  # the embedding is a lookup, not a matmul
    forward = 2 * per_token + 2 * per_sequence / seq_len + 4 * c.n_layer * c.n_embd * seq_len
    return 3 * forward if backward else forward


def flops_per_token(model, cfg):
    """Training FLOPs per token of one iteration (for MFU): the model's forward and backward and, for
    a student, its teacher's forward passes (one per RK point, `Recipe.teacher_forwards`)."""
    flops = model_flops_per_token(model, cfg["block_size"])
    if cfg["kind"] == "student":
        flops += distill.Recipe.of(cfg).teacher_forwards() * model_flops_per_token(model, cfg["block_size"], False)
    return flops


def student_from_dfm(dfm_model):
    """The few-step student of a DFM model: the same network with the step-size input
    (model.py, `step_conditioned`), whose zero-initialised last layer makes it compute exactly what
    its parent computes until it trains."""
    config = ModelConfig(**{**vars(dfm_model.config), "step_conditioned": True})
    student = Transformer(config).to(next(dfm_model.parameters()).device)
    missing, unexpected = student.load_state_dict(dfm_model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("step_mlp.") for k in missing), (missing, unexpected)
    return student


def model_to_train(cfg, explicit, start, start_path, meta, data_dir):
    """The model a run trains: new, of cfg's shape (start None); the resumed one; or the DFM parent to
    fine-tune or to distil (main makes its student). From a checkpoint, cfg takes its shape and path
    keys (and its block_size, unless one is given), once checked that it was trained on the same tokens
    and that no key set for this run (`explicit`: by a config file or on the command line) contradicts it."""
    if start is None:
        return Transformer(ModelConfig(vocab_size=meta["vocab_size"], block_size=cfg["block_size"],
                                       n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
                                       n_cond=cfg["n_cond"], dropout=cfg["dropout"], causal=cfg["kind"] == "ar"))
    if not same_vocabulary(start["meta"], meta):
        raise UsageError(f"{start_path} was trained on another vocabulary than {data_dir} (its tokens differ, "
                         f"not only their number): use the dataset it was trained on")
    theirs = {**{k: start["model_config"][k] for k in checkpoint.SHAPE_KEYS},
              **{k: start["config"][k] for k in checkpoint.PATH_KEYS}}
    differ = [f"{k}={cfg[k]!r} (checkpoint: {v!r})" for k, v in theirs.items() if cfg[k] != v and k in explicit]
    if differ:
        raise UsageError(f"the model comes from {start_path}, but {', '.join(differ)}: drop these keys or set them "
                         f"to the checkpoint's values")
    cfg.update(theirs)  # the config recorded in the new checkpoints is the model's
    model = checkpoint.build_model(start)
    if "block_size" not in explicit:
        cfg["block_size"] = model.config.block_size
    if cfg["block_size"] > model.config.block_size:
        raise UsageError(f"block_size={cfg['block_size']} exceeds the model's {model.config.block_size}: "
                         f"drop --block_size to take the model's")
    return model


TORCHRUN_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_environment(env):
    """(rank, local_rank, world_size) from the variables torchrun sets, checked as a set: RANK alone
    (or a value that is not a rank) is a one-line UsageError, not a traceback inside NCCL or gloo."""
    missing = [k for k in TORCHRUN_KEYS if not env.get(k)]
    if missing:
        raise UsageError(f"RANK is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: start "
                         f"several processes with torchrun (it sets {', '.join(TORCHRUN_KEYS)}), or unset RANK")
    numbers = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")
    rank, local_rank, world_size = (int(env[k]) if env[k].isdigit() else -1 for k in numbers[:3])
    if not all(env[k].isdigit() for k in numbers) or not (0 <= rank < world_size and 0 <= local_rank < world_size):
        raise UsageError(f"torchrun's variables do not fit together ({', '.join(f'{k}={env[k]!r}' for k in numbers)}): "
                         f"each must be a whole number, with RANK and LOCAL_RANK below WORLD_SIZE; start with torchrun")
    return rank, local_rank, world_size


def main(argv):
    """Train as configured by argv; returns the trained model and, for a student, its EMA."""
    explicit = set()
    cfg = parse(DEFAULTS, argv, __doc__, __file__, explicit)
    check(cfg, RULES, heads=[("n_head", "n_embd")])
    ignored = sorted(k for k in explicit if cfg["kind"] not in ONLY_FOR.get(k, (cfg["kind"],)))
    if ignored:
        raise UsageError(f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to "
                         f"kind={cfg['kind']} (only to kind={' or '.join(ONLY_FOR[ignored[0]])}): drop it")
    if cfg["kind"] == "student" and cfg["init_from"] == "scratch":
        raise UsageError("kind=student distils a DFM model: pass --init_from=PATH/ckpt.pt (or resume)")

    # DDP when torchrun set RANK: one process per device; rank 0 (master) evaluates, saves and logs
    dev = pick_device(cfg["device"])
    ddp = os.environ.get("RANK", "-1") != "-1"
    rank, local_rank, world_size = torchrun_environment(os.environ) if ddp else (0, 0, 1)
    if ddp:
        dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
        dev = f"cuda:{local_rank}" if dev.startswith("cuda") else dev
    if dev.startswith("cuda"):
        torch.cuda.set_device(dev)  # so that syncs and pinned memory use this device, not cuda:0
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    master, device_type = rank == 0, torch.device(dev).type
    autocast, dtype_name = autocast_for(device_type, cfg["dtype"])

    # init_from: "scratch", "resume" (out_dir/ckpt.pt), or a DFM checkpoint to distil or fine-tune
    ckpt_path, best_path = os.path.join(cfg["out_dir"], "ckpt.pt"), os.path.join(cfg["out_dir"], "best.pt")
    resuming = cfg["init_from"] == "resume"
    start, start_path = None, ckpt_path if resuming else cfg["init_from"]
    if resuming:  # exact only with the optimiser, RNG and step (and a student's EMA): never half-restored
        start = checkpoint.load(ckpt_path, kinds=(cfg["kind"],))
        needed = ("optimizer", "rng", "step", "val_loss", "best_val_loss", "world_size", "ema")
        missing = [k for k in needed if start.get(k) is None and (k != "ema" or cfg["kind"] == "student")]
        if not missing and not (isinstance(start["rng"], dict) and {"torch", "data"} <= start["rng"].keys()):
            missing = ["rng"]
        if missing:
            raise UsageError(f"{ckpt_path} cannot resume a run: it lacks {', '.join(missing)}. Sample or evaluate it "
                             f"as it is, or start a new run in another --out_dir")
    elif cfg["init_from"] != "scratch":
        if cfg["kind"] == "ar":
            raise UsageError("init_from=PATH starts from a DFM checkpoint: use kind=student to distil it, kind=dfm to "
                             "fine-tune it")
        start = checkpoint.load(start_path, kinds=("dfm",))

    # data: a resumed run and a student read the data the model was trained on; a DFM fine-tune, what it is given
    fine_tune = start is not None and cfg["kind"] == "dfm" and not resuming
    if start is not None and not cfg["data_dir"] and not (fine_tune and "dataset" in explicit):
        if "dataset" in explicit and cfg["dataset"] != start["config"]["dataset"]:
            raise UsageError(f"{start_path} was trained on dataset {start['config']['dataset']!r}, not "
                             f"{cfg['dataset']!r}: drop --dataset (a model continues on its own data), or start a "
                             f"new run")
        cfg["dataset"], cfg["data_dir"] = start["config"]["dataset"], start["config"].get("data_dir", "")
    data_dir = dataset_folder(cfg)
    meta = load_meta(data_dir)
    files = {split: split_path(data_dir, split, meta["vocab_size"]) for split in ("train", "val")}
    if start is None:  # before anything is written
        refuse_what_cannot_fit(cfg, meta["vocab_size"], dev, dtype_name)
    if master:  # one run per out_dir, and a new run never silently replaces a finished one
        release_out_dir = checkpoint.lock_out_dir(cfg["out_dir"])
        if not resuming and not cfg["overwrite"] and os.path.exists(ckpt_path):
            raise UsageError(f"{cfg['out_dir']} already holds a checkpoint: continue it with --init_from=resume, "
                             f"or start over there with --overwrite=True (or pick another --out_dir)")
        if resuming and start["val_loss"] <= start["best_val_loss"] and not (
                os.path.isfile(best_path) and filecmp.cmp(ckpt_path, best_path, shallow=False)):
            checkpoint.copy(ckpt_path, best_path)  # a kill between writing ckpt.pt and copying it left best.pt behind
            print(f"{best_path} was behind {ckpt_path}'s best evaluation (step {start['step']}): repaired")

    # the model (the same on every rank) and its optimiser
    torch.manual_seed(cfg["seed"])
    model = model_to_train(cfg, explicit, start, start_path, meta, data_dir)
    if cfg["kind"] == "student" and not resuming:  # FS-DFM: the DFM model becomes its few-step student
        model = student_from_dfm(model)
    model = model.to(dev)
    path = ProbPath(meta["vocab_size"], cfg["source"], cfg["kappa_power"])
    optimizer = model.optimizer(cfg["learning_rate"], cfg["weight_decay"], (cfg["beta1"], cfg["beta2"]), device_type)
    # FS-DFM: the student's EMA is the shortcut teacher (and the model that samples)
    teacher_model = copy.deepcopy(model).requires_grad_(False).eval() if cfg["kind"] == "student" else None
    torch.manual_seed(cfg["seed"] + rank)  # dropout; ranks differ in it, as in their data
    generator = torch.Generator().manual_seed(cfg["seed"] + rank)  # the batches, times and noise
    iter_num, best_val_loss = (start["step"], start["best_val_loss"]) if resuming else (0, float("inf"))
    if resuming:
        optimizer.load_state_dict(start["optimizer"])
        if teacher_model is not None:
            teacher_model.load_state_dict(start["ema"])
        if world_size == 1 and start["world_size"] == 1:
            torch.set_rng_state(start["rng"]["torch"])
            generator.set_state(start["rng"]["data"])
            if device_type == "cuda" and len(start["rng"].get("cuda", [])) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(start["rng"]["cuda"])
        else:  # several processes (only rank 0's state is saved): fresh but reproducible data streams
            generator.manual_seed(cfg["seed"] + rank + 1000003 * iter_num)
    start = None  # free the memory
    raw_model, teacher, loss_fn = model, teacher_model, None
    if cfg["compile"]:  # the model, its loss (whose passes over the logits then fuse) and the teacher
        model, loss_fn = torch.compile(model), torch.compile(path.loss)
        teacher = teacher_model and torch.compile(teacher_model)
    if ddp:  # wrapping broadcasts rank 0's weights into raw_model, in place
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)

    tokens_per_iter = cfg["batch_size"] * cfg["block_size"] * cfg["gradient_accumulation_steps"] * world_size
    flops, peak = flops_per_token(raw_model, cfg), device_peak_flops(dev, cfg["peak_flops"]) * world_size
    if master:
        memory = memory_estimate(sum(p.numel() for p in raw_model.parameters()), meta["vocab_size"], cfg, dtype_name)
        print(f"{cfg['kind']} model, {raw_model.num_params() / 1e6:.2f}M non-embedding parameters, {tokens_per_iter:,} "
              f"tokens per iteration, device {dev}, {dtype_name}; memory about {memory['total']:.2g} GB (states "
              f"{memory['states']:.2g}, activations {memory['activations']:.2g}, logits {memory['logits']:.2g})")
        log_file = open_log(os.path.join(cfg["out_dir"], "log.jsonl"), iter_num if resuming else None)
    resumed_at = iter_num if resuming and not cfg["eval_only"] else None  # its checkpoint's evaluation is not redone
    intact = f"{ckpt_path} (step {iter_num}) is intact" if resuming else "no checkpoint was written"
    saving = None  # (step, the file's inode before): a Ctrl-C after the new file landed names its step
    bar = tqdm(total=cfg["max_iters"], initial=iter_num, disable=not master, dynamic_ncols=True, desc="train")
    t_last, tokens_since = time.time(), 0
    try:  # the bar ends its line first, so an error is a line of its own
        while True:
            lr = learning_rate_at(iter_num, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            done = cfg["eval_only"] or iter_num >= cfg["max_iters"]
            if master and (iter_num % cfg["eval_interval"] == 0 or done) and iter_num != resumed_at:
                losses = evaluate(raw_model, teacher_model, cfg, path, files, dev, autocast)
                bar.write(eval_line(iter_num, losses))
                if not all(math.isfinite(v) for v in losses.values()):  # never saved over a finite checkpoint
                    raise UsageError(f"training diverged by step {iter_num}: the evaluation is not finite; {intact}: "
                                     f"lower --learning_rate (or raise --warmup_iters) and resume")
                write_log(log_file, {"step": iter_num, **losses})
                improved = losses["val"] <= best_val_loss  # a tie too: best.pt is ckpt.pt whenever its eval is the best
                best_val_loss = min(best_val_loss, losses["val"])
                rng = {"torch": torch.get_rng_state(), "data": generator.get_state(),
                       "cuda": torch.cuda.get_rng_state_all() if device_type == "cuda" else []}
                saving = (iter_num, os.stat(ckpt_path).st_ino if os.path.exists(ckpt_path) else None)
                checkpoint.save(ckpt_path, {
                    "kind": cfg["kind"], "model_config": asdict(raw_model.config), "model": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(), "config": cfg, "step": iter_num, "val_loss": losses["val"],
                    "ema": teacher_model.state_dict() if teacher_model is not None else None, "rng": rng,
                    "best_val_loss": best_val_loss, "world_size": world_size, "meta": meta})
                intact = f"{ckpt_path} (step {iter_num}) is intact"
                if improved:
                    checkpoint.copy(ckpt_path, best_path)
                t_last, tokens_since = time.time(), 0  # throughput counts training only
            if done:
                break
            for micro in range(cfg["gradient_accumulation_steps"]):
                batch = get_batch(files["train"], cfg["batch_size"], cfg["block_size"], generator, dev)
                # DDP: all-reduce gradients only on the last micro-step
                sync = not ddp or micro == cfg["gradient_accumulation_steps"] - 1
                with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                    loss = loss_of(model, teacher, batch, cfg, path, generator, loss_fn)
                (loss / cfg["gradient_accumulation_steps"]).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"] or math.inf)  # 0: no clip
            if not torch.isfinite(torch.stack([loss.detach().float(), grad_norm.float()])).all():
                # stop before the step: the weights, and the checkpoint on disk, stay finite
                raise UsageError(f"training diverged at step {iter_num + 1}: loss {loss.item():.4g}, gradient norm "
                                 f"{grad_norm.item():.4g}; {intact}: lower --learning_rate (or raise --warmup_iters) "
                                 f"and resume")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if teacher_model is not None:
                distill.ema_update(teacher_model, raw_model, cfg["ema_decay"])
            iter_num += 1
            tokens_since += tokens_per_iter
            bar.update(1)
            if iter_num % cfg["log_interval"] == 0 and master:
                row = {"step": iter_num, "loss": loss.item(), "lr": lr}  # .item() waits for the device to finish
                row["tokens_per_s"] = tokens_since / (time.time() - t_last)
                stats = {"loss": f"{row['loss']:.4f}", "tok/s": f"{row['tokens_per_s']:,.0f}"}
                if peak:  # model FLOPs utilisation: the FLOP/s of the model's matmuls over the devices' peak
                    row["mfu"] = flops * row["tokens_per_s"] / peak
                    stats["mfu"] = f"{100 * row['mfu']:.1f}%"
                if device_type == "cuda":
                    row["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
                bar.set_postfix(stats)
                write_log(log_file, row)
                t_last, tokens_since = time.time(), 0
    except KeyboardInterrupt:  # nothing is lost: the checkpoint on disk is whole, and resume is exact
        if saving and os.path.exists(ckpt_path) and os.stat(ckpt_path).st_ino != saving[1]:
            intact = f"{ckpt_path} (step {saving[0]}) is intact"
        kept = [a for a in argv if not a.startswith(("--init_from=", "--overwrite="))]
        command = shlex.join(["python", "train.py", *kept, "--init_from=resume"])
        raise SystemExit(f"interrupted at step {iter_num}: {intact}; continue with {command}") from None
    finally:
        bar.close()
    if master:
        log_file.close()
        release_out_dir()
    if ddp:
        dist.destroy_process_group()
    return raw_model, teacher_model


if __name__ == "__main__":
    run(lambda: main(sys.argv[1:]), "before training started: nothing was written")
