"""Evaluation: the metrics mean what they say, and every eval.py mode runs end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nanodfm.evaluate import ar_samples, flow_samples, generative_perplexity, unigram_entropy
from nanodfm.model import ModelConfig, Transformer
from test_autoregressive import save_checkpoint, tiny_model

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_VAL = REPO_ROOT / "data" / "shakespeare_char" / "val.bin"


def run_eval(*args):
    return subprocess.run([sys.executable, "eval.py", "--device=cpu", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


def test_entropy_of_constant_and_all_distinct_sequences():
    constant = torch.full((2, 50), 7)
    distinct = torch.stack([torch.randperm(40), torch.randperm(100)[:40]])
    assert unigram_entropy(constant).tolist() == [0.0, 0.0]
    torch.testing.assert_close(unigram_entropy(distinct), torch.full((2,), math.log2(40), dtype=torch.float64))
    half = torch.tensor([[0, 1] * 10])  # two tokens, equally often: one bit
    torch.testing.assert_close(unigram_entropy(half), torch.ones(1, dtype=torch.float64))


def test_a_uniform_judge_has_perplexity_vocab_size():
    V = 13
    uniform_judge = lambda ids: torch.zeros(*ids.shape, V)  # (B, T, V)
    ppl = generative_perplexity(uniform_judge, torch.randint(V, (5, 30)), batch_size=2)
    torch.testing.assert_close(ppl, torch.full((5,), float(V)))


def test_a_trained_judge_prefers_its_text_to_the_same_tokens_shuffled():
    # a periodic corpus: a trained causal judge predicts every token after the first few, so its
    # perplexity on real windows is near 1, while shuffling the same tokens makes them unpredictable
    torch.manual_seed(0)
    V, period, L = 16, 12, 32
    corpus = torch.randperm(V)[:period].repeat(200)
    judge = Transformer(ModelConfig(vocab_size=V, block_size=L, n_layer=1, n_head=2, n_embd=32, causal=True))
    optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-2)
    for _ in range(150):
        starts = torch.randint(len(corpus) - L, (16,))
        x = torch.stack([corpus[s:s + L] for s in starts])
        loss = F.cross_entropy(judge(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    judge.eval()
    text = torch.stack([corpus[s:s + L] for s in range(0, 240, 20)])  # (12, L)
    shuffled = torch.stack([row[torch.randperm(L)] for row in text])
    ppl_text = generative_perplexity(judge, text).mean().item()
    ppl_shuffled = generative_perplexity(judge, shuffled).mean().item()
    assert ppl_text < 1.5 < 4 < ppl_shuffled, (ppl_text, ppl_shuffled)


def test_sample_helpers_return_full_length_batches():
    ar, dfm = tiny_model("ar", dtype=torch.float32), tiny_model("dfm", dtype=torch.float32)
    x = ar_samples(ar, 5, 10, start_id=0, batch_size=2, seed=1)
    assert x.shape == (5, 10) and (x[:, 0] == 0).all()
    y = flow_samples(dfm, 5, 10, steps=3, method="cumulative", source="mask", batch_size=2, seed=1)
    assert y.shape == (5, 10) and (y < dfm.config.vocab_size).all()  # no MASK left
    assert torch.equal(y, flow_samples(dfm, 5, 10, 3, "cumulative", "mask", batch_size=2, seed=1))  # seeded


def test_speed_mode_runs_and_reports_positive_times(tmp_path):
    out = tmp_path / "speed.json"
    result = run_eval("--mode=speed", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--vocab_size=11",
                      "--speed_batch_sizes=1,4", "--dfm_steps=8", "--student_steps=2", "--repeats=1",
                      f"--out_json={out}")
    assert result.returncode == 0, result.stderr
    assert "device cpu, float32, compile=False" in result.stdout
    report = json.loads(out.read_text())
    assert {"device", "dtype", "compile", "length", "settings", "rows", "ratios"} <= report.keys()
    names = {(r["name"], r["batch_size"]) for r in report["rows"]}
    assert names == {(n, b) for n in ("ar_cache", "ar_nocache", "dfm@8", "student@2") for b in (1, 4)}
    for row in report["rows"]:
        assert row["seconds"] > 0 and row["tokens_per_s"] > 0 and row["length"] == 16
    assert {"student@2 vs ar_cache, B=1", "dfm@8 vs ar_cache, B=4"} <= report["ratios"].keys()


@pytest.mark.skipif(not SHAKESPEARE_VAL.is_file(), reason="run data/shakespeare_char/prepare.py first")
def test_quality_and_elbo_modes_on_shakespeare_char(tmp_path):
    vocab = {"vocab_size": 65, "block_size": 16}
    paths = {kind: save_checkpoint(tmp_path / f"{kind}.pt", tiny_model(kind, dtype=torch.float32, **vocab), kind)
             for kind in ("ar", "dfm", "student")}
    out = tmp_path / "quality.json"
    result = run_eval("--mode=quality", f"--dfm={paths['dfm']}", f"--student={paths['student']}",
                      f"--judge={paths['ar']}", "--steps_list=1,2", "--num_samples=3", f"--out_json={out}")
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows[:2]] == ["held-out text", "AR samples"]
    assert [(r["name"], r["steps"]) for r in rows[2:]] == [(n, s) for n in ("dfm euler", "dfm cumulative",
                                                                         "student rk4 cumulative") for s in (1, 2)]
    assert all(r["gen_ppl"] > 1 and 0 < r["entropy"] <= 4 for r in rows)  # 16 tokens: at most 4 bits
    assert "| held-out text |" in result.stdout
    result = run_eval("--mode=elbo", f"--dfm={paths['dfm']}", "--num_batches=2", "--batch_size=4")
    assert result.returncode == 0, result.stderr
    assert "perplexity <=" in result.stdout
    result = run_eval("--mode=quality", f"--dfm={paths['dfm']}", f"--judge={paths['dfm']}")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
