"""The network: a GPT-style transformer, bidirectional for flow matching, causal for the AR baseline.

docs/method.md section 2. The model is a pure function from tokens (and times) to logits; it knows
nothing of paths, losses or samplers. Design choices:

- Bidirectional attention by default: every position sees the whole (partly corrupted) sequence
  and predicts p(x1 | x_t), an x1-predictor ("denoiser"). `causal=True` runs the very same blocks
  with a causal mask (and a KV cache, autoregressive.py): the autoregressive baseline and judge.
- The token embedding has V + 1 rows, the last one for MASK; the head has V outputs, so MASK can
  never be predicted. Embedding and head are untied (they differ in size).
- Rotary position embedding on queries and keys; no learned position table.
- Attention through F.scaled_dot_product_attention (flash / memory-efficient kernels on CUDA).
- Time conditioning: a sinusoidal embedding of t through a small MLP gives a vector c that drives
  adaptive LayerNorm (shift, scale, gate) in every block and before the head. The modulations are
  zero-initialised ("adaLN-zero"), so each block starts as the identity map.
- The few-step student (`step_conditioned=True`) adds an embedding of the step size h to c through
  an MLP whose last layer is zero-initialised: before training it computes exactly what the DFM
  model it was made from computes, for any h.
- No biases in the attention and MLP linears; LayerNorm without affine parameters where adaLN
  provides them, with them in the causal model.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 65  # V data tokens; the embedding has one more row for MASK
    block_size: int = 256  # longest sequence
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    n_cond: int = 128  # width of the time (and step-size) conditioning vector
    dropout: float = 0.0
    causal: bool = False  # True: autoregressive baseline, no time conditioning
    step_conditioned: bool = False  # True: few-step student, also takes the step size h


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal features of t in [0, 1] (B,) -> (B, dim); t is scaled to [0, 1000]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def rotary_tables(block_size, head_dim, base=10000.0):
    """cos and sin tables (block_size, head_dim / 2) for rotary position embedding."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(block_size).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate pairs (first half, second half) of x (B, H, T, hd) by position-dependent angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head, self.causal, self.layer_idx = config.n_head, config.causal, layer_idx
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout

    def forward(self, x, cos, sin, cache=None):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # (B, H, T, hd)
        mask, is_causal = None, self.causal
        if cache is not None:
            k, v, mask = cache.update(self.layer_idx, k, v)
            is_causal = False
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm transformer block; adaLN-zero modulated when the model is conditioned on t."""

    def __init__(self, config, layer_idx):
        super().__init__()
        affine = config.causal  # conditioned norms get their scale and shift from adaLN
        self.norm1 = nn.LayerNorm(config.n_embd, elementwise_affine=affine, bias=False)
        self.attn = SelfAttention(config, layer_idx)
        self.norm2 = nn.LayerNorm(config.n_embd, elementwise_affine=affine, bias=False)
        self.mlp = MLP(config)
        self.modulation = None if config.causal else nn.Linear(config.n_cond, 6 * config.n_embd)

    def forward(self, x, c, cos, sin, cache=None):
        if self.modulation is None:
            x = x + self.attn(self.norm1(x), cos, sin, cache)
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c))[:, None].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin, cache)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


def conditioning_mlp(n_freq, n_cond):
    return nn.Sequential(nn.Linear(n_freq, n_cond), nn.SiLU(), nn.Linear(n_cond, n_cond))


class Transformer(nn.Module):
    N_FREQ = 256  # sinusoidal features of t and h

    def __init__(self, config):
        super().__init__()
        self.config = config
        D = config.n_embd
        self.wte = nn.Embedding(config.vocab_size + 1, D)  # + 1: the MASK id
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm_f = nn.LayerNorm(D, elementwise_affine=config.causal, bias=False)
        self.head = nn.Linear(D, config.vocab_size, bias=False)
        conditioned = not config.causal
        self.time_mlp = conditioning_mlp(self.N_FREQ, config.n_cond) if conditioned else None
        self.step_mlp = conditioning_mlp(self.N_FREQ, config.n_cond) if config.step_conditioned else None
        self.final_modulation = nn.Linear(config.n_cond, 2 * D) if conditioned else None
        cos, sin = rotary_tables(config.block_size, D // config.n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))
        zero = [b.modulation for b in self.blocks] + [self.final_modulation]
        if self.step_mlp is not None:
            zero.append(self.step_mlp[-1])
        for layer in zero:
            if layer is not None:
                nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def condition(self, t, h, batch_size, device):
        """The conditioning vector c (B, n_cond) from t (and h for the student)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=device).expand(batch_size)
        c = self.time_mlp(timestep_embedding(t, self.N_FREQ))
        if self.step_mlp is not None and h is not None:
            h = torch.as_tensor(h, dtype=torch.float32, device=device).expand(batch_size)
            c = c + self.step_mlp(timestep_embedding(h, self.N_FREQ))
        return c

    def trunk(self, idx, t=None, h=None, cache=None, positions=None):
        """What enters the output layer: features (B, T, D) of idx (B, T) token ids (MASK allowed) at
        times t (and step sizes h), floats or (B,); or (N, D) at positions: the N True entries of a
        (B, T) bool mask, in row-major order, or N indices into the B T positions (the engine's
        candidates; a mask would be read on the host). The engine applies `head` itself."""
        B, T = idx.shape
        if cache is None or not cache.static:  # the static cache's position is a tensor: not read here
            start = cache.pos if cache is not None else 0
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}")
        at = cache.positions(T) if cache is not None else slice(0, T)
        cos, sin = self.rope_cos[at], self.rope_sin[at]
        c = None
        if not self.config.causal:
            if t is None:
                raise ValueError("a flow-matching model needs the time t")
            c = self.condition(t, h, B, idx.device)
        x = self.drop(self.wte(idx))
        for block in self.blocks:
            x = block(x, c, cos, sin, cache)
        x = self.norm_f(x)
        if c is not None:
            shift, scale = self.final_modulation(F.silu(c))[:, None].chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        if cache is not None:
            cache.pos += T  # in place when it is a tensor
        if positions is None:
            return x
        return x[positions] if positions.dtype == torch.bool else x.flatten(0, 1)[positions]

    def forward(self, idx, t=None, h=None, cache=None, positions=None):
        """Logits (B, T, V), or (N, V) at positions: the output layer, the largest matmul with a
        large vocabulary, then runs only where logits are wanted. Arguments as `trunk`."""
        return self.head(self.trunk(idx, t, h, cache, positions))

    def num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def optimizer(self, learning_rate, weight_decay, betas, device_type):
        """AdamW; matrices (and embeddings) decay, biases and gains do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = device_type == "cuda"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)
