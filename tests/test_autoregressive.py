"""AR generation: the KV cache changes the cost, never the result; bad input is one line."""

import copy
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from nanodfm import checkpoint
from nanodfm.autoregressive import KVCache, generate
from nanodfm.config import UsageError
from nanodfm.engine import compile
from nanodfm.model import ModelConfig, Transformer

REPO_ROOT = Path(__file__).resolve().parent.parent
CHARS = "\nabcdefghij"  # a tiny char vocabulary, newline first as in Shakespeare's
CHAR_META = {"tokenizer": "char", "vocab_size": len(CHARS), "itos": dict(enumerate(CHARS)),
             "stoi": {c: i for i, c in enumerate(CHARS)}}


def tiny_model(kind="ar", vocab_size=len(CHARS), block_size=24, dtype=torch.float64, seed=0):
    """A small untrained model; weights drawn wide so that its distributions are far from uniform."""
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16, n_cond=16,
                         causal=kind == "ar", step_conditioned=kind == "student")
    model = Transformer(config).to(dtype).eval()
    if kind == "ar":
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
    return model


def save_checkpoint(path, model, kind, dataset="shakespeare_char", source="mask", meta=CHAR_META):
    """A checkpoint as train.py writes it, holding what sample.py and eval.py read."""
    config = {"dataset": dataset, "source": source, "kappa_power": 1.0, "teacher": "rk4"}
    weights = {k: v.float() for k, v in model.state_dict().items()}  # as training saves them
    checkpoint.save(str(path), {"kind": kind, "model_config": asdict(model.config), "model": weights, "ema": None,
                                "config": config, "meta": meta, "best_val_loss": 2.5})
    return str(path)


@pytest.mark.parametrize("static", [False, True])
def test_cached_forward_gives_the_uncached_logits(static):
    model = tiny_model()
    x = torch.randint(len(CHARS), (3, 20))
    full = model(x)  # (B, T, V): every position from the whole prefix
    cache = KVCache(model.config, 3, x.device, torch.float64, static=static)
    steps = [model(x[:, :8], cache=cache)]  # prefill
    steps += [model(x[:, i:i + 1], cache=cache) for i in range(8, 20)]  # then one token per call
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-10)
    assert int(cache.pos) == 20


@pytest.mark.parametrize("top_k", [1, None])
def test_cache_and_full_prefix_generate_the_same_tokens(top_k):
    # float64 keeps the attention orders within 1e-12 of each other, far below any gap between two
    # tokens' cumulative probabilities at the drawn uniform, so equal seeds must give equal tokens
    model = tiny_model()
    prompt = torch.randint(len(CHARS), (4, 3))
    ways = [{"static_cache": False}, {"static_cache": True}, {"use_cache": False}]
    runs = [generate(model, prompt, 21, top_k=top_k, generator=torch.Generator().manual_seed(7), **way)
            for way in ways]
    assert runs[0].shape == (4, 24)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert torch.equal(runs[0][:, :3], prompt)
    if top_k is None:  # sampling draws differ from the argmax path: the test exercises both
        assert not torch.equal(runs[0], generate(model, prompt, 21, top_k=1))


@pytest.mark.parametrize("prompt_len", [1, 3])
def test_compiled_decoding_compiles_once_with_static_shapes(prompt_len):
    """torch.compile traces the one-token step once, whatever the position: no recompiles, no
    symbolic sizes. The backend only counts graphs (dynamo's guards are what is tested), so no
    inductor is needed; a longer prompt is prefilled eagerly."""
    model = tiny_model(block_size=32)
    prompt = torch.randint(len(CHARS), (2, prompt_len))
    for n in (8, 24):
        torch._dynamo.reset()
        graphs = []

        def counting_backend(gm, example_inputs):
            graphs.append(example_inputs)
            return gm.forward

        compiled = compile(copy.deepcopy(model), backend=counting_backend)
        x = generate(compiled, prompt, n, top_k=1)
        assert torch.equal(x, generate(model, prompt, n, top_k=1, use_cache=False))
        assert len(graphs) == 1, f"{len(graphs)} graphs for {n} tokens"
        assert all(isinstance(a, torch.Tensor) for a in graphs[0])  # no SymInt: nothing traced as dynamic
    torch._dynamo.reset()


def test_top_1_is_greedy_and_top_k_stays_in_the_top_k():
    model = tiny_model()
    prompt = torch.randint(len(CHARS), (8, 2))
    greedy = prompt
    for _ in range(10):  # the argmax of the whole prefix at each step
        greedy = torch.cat([greedy, model(greedy)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate(model, prompt, 10, top_k=1, generator=torch.Generator().manual_seed(0)), greedy)
    x = generate(model, prompt, 1, top_k=3, generator=torch.Generator().manual_seed(0))
    top3 = model(prompt)[:, -1].topk(3).indices  # (B, 3)
    assert (top3 == x[:, -1:]).any(dim=1).all()


def test_bad_lengths_are_usage_errors():
    model = tiny_model()
    with pytest.raises(UsageError, match="block_size 24"):
        generate(model, torch.zeros(1, 20, dtype=torch.long), 5)
    with pytest.raises(UsageError, match="at least one prompt token"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 5)


def run_sample(*args):
    return subprocess.run([sys.executable, "sample.py", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60)


def test_sample_py_continues_a_prompt_with_an_ar_checkpoint(tmp_path):
    ckpt = save_checkpoint(tmp_path / "ar.pt", tiny_model(), "ar")
    result = run_sample(f"--ckpt={ckpt}", "--start=abc", "--length=12", "--num_samples=2", "--top_k=4", "--device=cpu")
    assert result.returncode == 0, result.stderr
    samples = result.stdout.split("----------")[1:]
    assert len(samples) == 2
    assert all(s.split("\n", 1)[1].startswith("abc") for s in samples)


def test_sample_py_prompt_longer_than_the_context_is_one_line(tmp_path):
    ckpt = save_checkpoint(tmp_path / "ar.pt", tiny_model(), "ar")
    result = run_sample(f"--ckpt={ckpt}", "--start=" + "abc" * 10, "--device=cpu")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "shorten" in lines[0], result.stderr
