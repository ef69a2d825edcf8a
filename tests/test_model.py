"""The transformer: fused attention equals the plain math; blocks start as the identity."""

import math

import pytest
import torch

from nanodfm.model import ModelConfig, SelfAttention, Transformer, apply_rotary, rotary_tables


def manual_attention(attn, x, causal):
    """softmax(Q K^T / sqrt(d)) V written out, with the module's own weights and rotary tables."""
    B, T, D = x.shape
    H = attn.n_head
    q, k, v = (attn.qkv.weight.view(3, D, D) @ x.transpose(1, 2).unsqueeze(1)).transpose(-1, -2).unbind(1)
    split = lambda z: z.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hd)
    cos, sin = rotary_tables(T, D // H)
    q, k, v = apply_rotary(split(q), cos, sin), apply_rotary(split(k), cos, sin), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    return attn.proj(y.transpose(1, 2).reshape(B, T, D))


@pytest.mark.parametrize("causal", [False, True])
def test_fused_attention_equals_manual_attention(causal):
    torch.manual_seed(0)
    config = ModelConfig(n_embd=48, n_head=4, block_size=16, causal=causal)
    attn = SelfAttention(config, 0)
    x = torch.randn(3, 16, 48)
    cos, sin = rotary_tables(16, 12)
    torch.testing.assert_close(attn(x, cos, sin), manual_attention(attn, x, causal), atol=1e-5, rtol=1e-4)


def test_causal_attention_ignores_the_future_and_bidirectional_does_not():
    torch.manual_seed(1)
    for causal in (True, False):
        attn = SelfAttention(ModelConfig(n_embd=32, n_head=2, causal=causal), 0)
        cos, sin = rotary_tables(10, 16)
        x = torch.randn(1, 10, 32)
        y = x.clone()
        y[:, 7:] += 1.0
        same_prefix = torch.allclose(attn(x, cos, sin)[:, :7], attn(y, cos, sin)[:, :7], atol=1e-6)
        assert same_prefix == causal


def test_fresh_block_is_the_identity():
    torch.manual_seed(2)
    model = Transformer(ModelConfig(n_embd=32, n_head=2, n_cond=16, n_layer=3))
    x, c = torch.randn(2, 8, 32), torch.randn(2, 16)
    cos, sin = rotary_tables(8, 16)
    for block in model.blocks:
        assert torch.equal(block(x, c, cos, sin), x)


def test_rotary_attention_depends_on_relative_position_only():
    torch.manual_seed(3)
    cos, sin = rotary_tables(32, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    score = lambda i, j: (apply_rotary(q, cos[i:i + 1], sin[i:i + 1]) * apply_rotary(k, cos[j:j + 1], sin[j:j + 1])).sum()
    torch.testing.assert_close(score(3, 1), score(20, 18))


def test_model_outputs_data_tokens_only_and_depends_on_time():
    torch.manual_seed(4)
    model = Transformer(ModelConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=16, n_cond=8))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    idx = torch.full((2, 8), 5)  # all MASK: the embedding has a row for it
    logits = model(idx, torch.tensor([0.1, 0.9]))
    assert logits.shape == (2, 8, 5)  # V outputs: MASK can never be predicted
    assert not torch.allclose(logits[0], logits[1])
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 9, dtype=torch.long), 0.5)


def test_peak_flops_are_looked_up_by_exact_name():
    from nanodfm.config import PEAK_BF16_FLOPS, device_peak_flops
    assert PEAK_BF16_FLOPS["NVIDIA H100 PCIe"] < PEAK_BF16_FLOPS["NVIDIA H100 80GB HBM3"]
    assert "NVIDIA L40S" in PEAK_BF16_FLOPS and PEAK_BF16_FLOPS["NVIDIA L40S"] != PEAK_BF16_FLOPS["NVIDIA L4"]
    assert device_peak_flops("cpu") == 0.0 and device_peak_flops("cpu", 1e12) == 1e12
