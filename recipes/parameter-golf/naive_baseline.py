"""Parameter Golf, the challenge's Naive Baseline (1.2244 bpb on 8xH100): profile ``naive-baseline``.

Editable in that profile.  A small GPT (tied embeddings, GQA attention with rotary embeddings
and QK-norm, relu^2 MLP, U-Net skips across the layer stack, logit softcap)
trained under a wall-clock cap with Muon on the matrices and Adam on the rest.
After training the weights are quantised (per-row int8), the model is exported
as TorchScript and compressed into ``final_model.ptz``.  The protected
``evaluate.py`` decompresses and loads that file (never this code) and
measures bits per byte on the fixed validation split.  The evaluator counts
the artifact: the bytes of this file plus the bytes of ``final_model.ptz``.

The exported module must map int64 tokens [B, T] to logits [B, T, V] and be
causal (evaluate.py checks that changing later tokens leaves earlier logits
unchanged).

Modes: none = real (one H100; ``torchrun --nproc_per_node=8`` for eight);
``--tiny`` = CPU seconds on generated text (overrides in TINY); ``--smoke`` =
the real model for two steps on random tokens (preflight); ``--synthetic`` =
the real model on random tokens under the real time budget (benchmark).
"""

from __future__ import annotations

import io
import lzma
import os
import sys
import time
import zlib

import data
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

T0 = time.perf_counter()
SEED = int(os.environ.get("AUTORESEARCH_SEED", "0"))
MODE = next((m for m in ("tiny", "smoke", "synthetic") if f"--{m}" in sys.argv), "real")

# ----- model -----
TOKENIZER = "sp1024"  # must match evaluate.py --tokenizer in recipe.yaml
VOCAB_SIZE = 1024  # must match the tokenizer (sp1024)
NUM_LAYERS = 9  # transformer blocks; the first half feed U-Net skips to the second half
MODEL_DIM = 512  # residual width
NUM_HEADS = 8  # query heads
NUM_KV_HEADS = 4  # key/value heads (grouped-query attention)
MLP_MULT = 2  # MLP hidden width = MLP_MULT * MODEL_DIM
ROPE_BASE = 10000.0  # rotary embedding base
LOGIT_SOFTCAP = 30.0  # logits = c * tanh(logits / c)
QK_GAIN_INIT = 1.5  # initial per-head query gain (queries are RMS-normalised)
EMBED_INIT_STD = 0.005  # std of the tied embedding at init
# ----- training -----
SEQ_LEN = 1024  # tokens per training sequence
BATCH_TOKENS = 524_288  # tokens per optimizer step (all GPUs, all micro-batches)
DEVICE_BATCH = 64  # sequences per forward pass on one GPU
MAX_STEPS = 20_000  # upper bound on optimizer steps
TIME_BUDGET = 560.0  # seconds from process start at which training stops (evaluator kills at 720)
WARMUP_STEPS = 10  # linear LR warmup
WARMDOWN_FRAC = 0.25  # last share of the budget (time or steps) with LR decaying linearly to zero
MATRIX_LR = 0.04  # Muon, 2-D weights inside the blocks
EMBED_LR = 0.05  # Adam, tied embedding
SCALAR_LR = 0.04  # Adam, gains and mixing vectors
MUON_MOMENTUM = 0.95  # after warmup from MUON_MOMENTUM_START over MUON_MOMENTUM_WARMUP steps
MUON_MOMENTUM_START = 0.85
MUON_MOMENTUM_WARMUP = 500
MUON_NS_STEPS = 5  # Newton-Schulz iterations
BETA1, BETA2 = 0.9, 0.95  # Adam betas
GRAD_CLIP = 0.0  # global grad-norm clip; 0 disables
# ----- export -----
INT8_CLIP_Q = 0.9999984  # per-row quantile clipped before int8 rounding
COMPRESSOR = "lzma"  # lzma | zlib (evaluate.py reads both, and bz2)
# ----- systems -----
COMPILE = True  # torch.compile the model for training (compile time counts against TIME_BUDGET)

TINY = dict(NUM_LAYERS=2, MODEL_DIM=64, NUM_HEADS=4, NUM_KV_HEADS=2, SEQ_LEN=64,
            BATCH_TOKENS=1024, DEVICE_BATCH=16, MAX_STEPS=80, TIME_BUDGET=60.0, WARMUP_STEPS=5,
            MATRIX_LR=0.05, EMBED_LR=0.05, MUON_MOMENTUM_WARMUP=20, COMPILE=False)  # --tiny
if MODE == "tiny":
    globals().update(TINY)
if MODE == "synthetic":  # timing only: the real model for 30 steps on random tokens
    MAX_STEPS = 30
if MODE == "smoke":  # two steps of the real model; one sequence per step on a CPU
    DEVICE_BATCH = DEVICE_BATCH if torch.cuda.is_available() else 1
    MAX_STEPS, BATCH_TOKENS, COMPILE = 2, SEQ_LEN * DEVICE_BATCH, COMPILE and torch.cuda.is_available()


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Module):
    """A bias-free linear layer whose fp32 weight is cast to the activation dtype."""

    def __init__(self, fan_in: int, fan_out: int, zero: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in))
        if zero:
            nn.init.zeros_(self.weight)
        else:
            nn.init.normal_(self.weight, std=fan_in**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class Int8Linear(nn.Module):
    """Export form of CastedLinear: int8 weight with one fp16 scale per row."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, (self.q.float() * self.scale.float()[:, None]).to(x.dtype))


class Embedding(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab, dim) * EMBED_INIT_STD)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.weight)

    def matrix(self) -> torch.Tensor:
        return self.weight


class Int8Embedding(nn.Module):
    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.matrix())

    def matrix(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()[:, None]


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head_dim = MODEL_DIM // NUM_HEADS
        self.n_head, self.n_kv = NUM_HEADS, NUM_KV_HEADS
        self.c_q = CastedLinear(MODEL_DIM, MODEL_DIM)
        self.c_k = CastedLinear(MODEL_DIM, self.n_kv * self.head_dim)
        self.c_v = CastedLinear(MODEL_DIM, self.n_kv * self.head_dim)
        self.proj = CastedLinear(MODEL_DIM, MODEL_DIM, zero=True)
        self.q_gain = nn.Parameter(torch.full((NUM_HEADS,), QK_GAIN_INIT))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.c_q(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = rotary(rms_norm(q), cos, sin) * self.q_gain.to(x.dtype)[None, :, None, None]
        k = rotary(rms_norm(k), cos, sin)
        rep = self.n_head // self.n_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = CastedLinear(MODEL_DIM, MLP_MULT * MODEL_DIM)
        self.proj = CastedLinear(MLP_MULT * MODEL_DIM, MODEL_DIM, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(), MLP()
        self.attn_scale = nn.Parameter(torch.ones(MODEL_DIM))
        self.mlp_scale = nn.Parameter(torch.ones(MODEL_DIM))
        self.resid_mix = nn.Parameter(torch.tensor([1.0, 0.0]))  # weights of (x, x0) entering the block

    def forward(self, x: torch.Tensor, x0: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x), cos, sin)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = Embedding(VOCAB_SIZE, MODEL_DIM)
        self.blocks = nn.ModuleList([Block() for _ in range(NUM_LAYERS)])
        self.n_skip = NUM_LAYERS // 2
        self.skip_weights = nn.Parameter(torch.ones(max(1, self.n_skip)))
        self.softcap = LOGIT_SOFTCAP
        head_dim = MODEL_DIM // NUM_HEADS
        self.register_buffer("inv_freq", 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim),
                             persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.size(1)
        freqs = torch.outer(torch.arange(t, device=idx.device, dtype=torch.float32), self.inv_freq)
        x = rms_norm(self.tok_emb(idx))
        cos, sin = freqs.cos().to(x.dtype)[None, None], freqs.sin().to(x.dtype)[None, None]
        x0 = x
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            if i >= len(self.blocks) - self.n_skip and len(skips) > 0:
                x = x + self.skip_weights[len(self.blocks) - 1 - i].to(x.dtype) * skips.pop()
            x = block(x, x0, cos, sin)
            if i < self.n_skip:
                skips.append(x)
        logits = F.linear(rms_norm(x), self.tok_emb.matrix().to(x.dtype)).float()
        return self.softcap * torch.tanh(logits / self.softcap)


# ----- optimiser ----------------------------------------------------------

def newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximately orthogonalise a matrix (the Muon update direction)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float, ns_steps: int) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p.grad))
                buf.mul_(group["momentum"]).add_(p.grad)
                update = newton_schulz(p.grad.add(buf, alpha=group["momentum"]), group["ns_steps"])
                p.add_(update, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


# ----- data -----------------------------------------------------------------

class TokenStream:
    """Walks the training shards in order; each rank reads its own slice of every batch."""

    def __init__(self, shards: list[np.ndarray], rank: int, world: int) -> None:
        self.shards, self.rank, self.world = shards, rank, world
        self.shard, self.pos = 0, 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            cur = self.shards[self.shard]
            chunk = cur[self.pos : self.pos + n]
            out.append(chunk)
            n -= len(chunk)
            self.pos += len(chunk)
            if self.pos >= len(cur):
                self.shard, self.pos = (self.shard + 1) % len(self.shards), 0
        return np.concatenate(out)

    def batch(self, seqs: int, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        span = seqs * seq_len + 1
        block = self.take(span * self.world)[self.rank * span : (self.rank + 1) * span]
        t = torch.from_numpy(block.astype(np.int64)).to(device, non_blocking=True)
        return t[:-1].view(seqs, seq_len), t[1:].view(seqs, seq_len)


def random_shards(n: int) -> list[np.ndarray]:
    return [np.random.default_rng(SEED).integers(0, VOCAB_SIZE, size=n, dtype=np.uint16)]


# ----- export -----------------------------------------------------------------

def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = w.detach().float().cpu()
    clip = torch.quantile(w.abs(), INT8_CLIP_Q, dim=1) if w.size(1) > 1 else w.abs().amax(1)
    scale = (clip / 127.0).clamp_min(1e-8)
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale.half()


def export(model: GPT) -> bytes:
    """Quantise in place (CPU, fp32), script, serialise and compress."""
    model = model.cpu().float().eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, CastedLinear):
                setattr(module, name, Int8Linear(*quantize_rows(child.weight)))
            elif isinstance(child, Embedding):
                setattr(module, name, Int8Embedding(*quantize_rows(child.weight)))
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    raw = buf.getvalue()
    return lzma.compress(raw, preset=9) if COMPRESSOR == "lzma" else zlib.compress(raw, 9)


# ----- main ---------------------------------------------------------------------

def bench_report(marks: list[float], loop_start: float, train_done: float, peak_mb: float) -> str:
    """One line for bench/gpu_recipes.py: startup, first step (compiles), steady step time, export."""
    steady = sorted(b - a for a, b in zip(marks[1:], marks[2:], strict=False))
    step_ms = 1000 * steady[len(steady) // 2] if steady else float("nan")
    first = marks[0] - loop_start if marks else float("nan")
    in_budget = int((TIME_BUDGET - (marks[0] - T0)) / (step_ms / 1000)) + 1 if steady else 0
    return (f"bench: mode={MODE} steps={len(marks)} startup_s={loop_start - T0:.2f} first_step_s={first:.2f} "
            f"step_ms={step_ms:.1f} export_s={time.perf_counter() - train_done:.2f} "
            f"total_s={time.perf_counter() - T0:.2f} peak_gpu_mb={peak_mb:.0f} steps_in_budget={in_budget}")


def main() -> None:
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if distributed else (0, 1)
    cuda = torch.cuda.is_available() and MODE != "tiny"
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(1)  # tiny models gain little from threads; one thread is steadier
    torch.manual_seed(SEED)

    shards = random_shards(BATCH_TOKENS * 4 + 1) if MODE in ("smoke", "synthetic") else data.train_shards(TOKENIZER, MODE == "tiny")
    stream = TokenStream(shards, rank, world)
    model = GPT().to(device)
    train_model = torch.compile(model) if COMPILE else model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=[device.index] if cuda else None)

    matrices = [p for n, p in model.blocks.named_parameters() if p.ndim == 2]
    scalars = [p for n, p in model.named_parameters() if p.ndim < 2]
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM_START, ns_steps=MUON_NS_STEPS)
    adam = torch.optim.Adam([dict(params=[model.tok_emb.weight], lr=EMBED_LR),
                             dict(params=scalars, lr=SCALAR_LR)], betas=(BETA1, BETA2), eps=1e-8, fused=cuda)
    opts = [muon, adam]
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]

    accum = max(1, BATCH_TOKENS // (world * DEVICE_BATCH * SEQ_LEN))
    seqs = min(DEVICE_BATCH, max(1, BATCH_TOKENS // (world * SEQ_LEN)))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    step, loss_val = 0, float("nan")
    marks: list[float] = []  # end of each step (smoke/synthetic timing)
    loop_start = time.perf_counter()
    while step < MAX_STEPS:
        elapsed = time.perf_counter() - T0
        progress = max(step / MAX_STEPS, elapsed / TIME_BUDGET)
        if progress >= 1.0:
            break
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        down = min(1.0, (1.0 - progress) / WARMDOWN_FRAC) if WARMDOWN_FRAC > 0 else 1.0
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * warm * down
        mom = min(1.0, step / MUON_MOMENTUM_WARMUP)
        for g in muon.param_groups:
            g["momentum"] = (1 - mom) * MUON_MOMENTUM_START + mom * MUON_MOMENTUM
        total = torch.zeros((), device=device)
        for _ in range(accum):
            x, y = stream.batch(seqs, SEQ_LEN, device)
            with autocast:
                logits = train_model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            (loss / accum).backward()
            total += loss.detach() / accum
        if GRAD_CLIP > 0:
            nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        step += 1
        if MODE in ("smoke", "synthetic"):
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
        if step % 100 == 0 or step == 1:
            loss_val = total.item()
            if rank == 0:
                print(f"step {step} train_loss {loss_val:.4f} elapsed {time.perf_counter() - T0:.1f}s", flush=True)
    loss_val = total.item()
    train_done = time.perf_counter()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    if rank == 0:
        blob = export(model)
        with open("final_model.ptz", "wb") as f:
            f.write(blob)
        code = len(open(__file__, "rb").read())
        print(f"train_loss: {loss_val:.4f}")
        print(f"steps: {step}")
        print(f"model_bytes: {len(blob)}")
        print(f"artifact_bytes_estimate: {len(blob) + code}")
        if MODE in ("smoke", "synthetic"):
            print(bench_report(marks, loop_start, train_done, peak))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
