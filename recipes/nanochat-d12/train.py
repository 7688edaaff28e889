"""NanoChat-D12: the best CORE score a depth-12 GPT reaches in nanochat's token horizon.

Editable.  A nanochat-style GPT (width = 64 * depth, 128-wide heads, rotary
embeddings, QK-norm, relu^2 MLP, untied embedding and head, logit softcap,
parameter-free RMSNorm) trained on ClimbMix tokens (a 32,768-token BPE) with
Muon on the block matrices (cautious weight decay, cosine to zero) and AdamW on
the embedding and head, for a fixed number of tokens: TOKENS_PER_PARAM times
the scaling parameters (block matrices + head), as karpathy/nanochat
scripts/base_train.py's ``--target-param-data-ratio 12`` sets it.  TIME_BUDGET
is only a safety stop.  It saves
``model.pt`` (TorchScript: int64 tokens [B, T] -> logits [B, T, V], causal);
the protected ``evaluate.py`` scores it on the CORE tasks (mean centered
accuracy) without importing this code.

Modes: none = real (one H100; ``torchrun --nproc_per_node=8`` for eight);
``--tiny`` = CPU seconds on generated tokens (overrides in TINY); ``--smoke``
= the real model for two steps on random tokens (preflight); ``--synthetic``
= the real model on random tokens under the real time budget (benchmark).
"""

from __future__ import annotations

import math
import os
import sys
import time

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
DEPTH = 12  # transformer blocks
ASPECT = 64  # model width = ASPECT * DEPTH (768 at depth 12)
HEAD_DIM = 128  # width of one attention head
VOCAB_SIZE = 32_768  # must cover the tokenizer (data.VOCAB_SIZE)
MLP_MULT = 4  # MLP hidden width = MLP_MULT * width
ROPE_BASE = 10_000.0  # rotary embedding base
LOGIT_SOFTCAP = 15.0  # logits = c * tanh(logits / c)
# ----- training -----
SEQ_LEN = 2048  # tokens per sequence
BATCH_TOKENS = 524_288  # tokens per optimizer step (all GPUs, all micro-batches)
DEVICE_BATCH = 32  # sequences per forward pass on one GPU (80 GB)
TOKENS_PER_PARAM = 12.0  # training horizon: tokens = this x (block matrices + head parameters)
MAX_STEPS = 100_000  # upper bound on optimizer steps
TIME_BUDGET = 3000.0  # safety stop, seconds from process start (the horizon ends training first)
WARMUP_STEPS = 40  # linear LR warmup
WARMDOWN_FRAC = 0.65  # last share of the steps with LR decaying linearly to FINAL_LR_FRAC
FINAL_LR_FRAC = 0.05
MATRIX_LR = 0.02  # Muon, block matrices
EMBED_LR = 0.3  # AdamW, token embedding (scaled by (width/768)^-0.5)
HEAD_LR = 0.008  # AdamW, output head (scaled by (width/768)^-0.5)
WEIGHT_DECAY = 0.28  # Muon cautious weight decay at step 0, cosine to zero
MUON_MOMENTUM = 0.97  # after warmup from 0.85 over MUON_MOMENTUM_WARMUP steps; to 0.90 over the warmdown
MUON_MOMENTUM_WARMUP = 400
MUON_MOMENTUM_END = 0.90
MUON_NS_STEPS = 5  # Newton-Schulz iterations
# ----- systems -----
COMPILE = True  # torch.compile for training (compile time counts against TIME_BUDGET)
EXPORT_BF16 = True  # save the model in bf16 on a GPU (half the file, faster evaluation)

TINY = dict(DEPTH=2, ASPECT=32, HEAD_DIM=16, VOCAB_SIZE=256, SEQ_LEN=64, BATCH_TOKENS=1024, DEVICE_BATCH=16,
            TOKENS_PER_PARAM=4.0, MAX_STEPS=90, TIME_BUDGET=120.0, WARMUP_STEPS=5, MATRIX_LR=0.05, EMBED_LR=0.1,
            HEAD_LR=0.02, WEIGHT_DECAY=0.0, MUON_MOMENTUM_WARMUP=20, COMPILE=False)  # --tiny
if MODE == "tiny":
    globals().update(TINY)
if MODE == "synthetic":  # timing only: the real model for 30 steps on random tokens
    MAX_STEPS = 30
if MODE == "smoke":  # two steps of the real model; one sequence per step on a CPU
    DEVICE_BATCH = DEVICE_BATCH if torch.cuda.is_available() else 1
    MAX_STEPS, BATCH_TOKENS, COMPILE = 2, SEQ_LEN * DEVICE_BATCH, COMPILE and torch.cuda.is_available()
WIDTH = ASPECT * DEPTH
N_HEAD = max(1, WIDTH // HEAD_DIM)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n_head, self.head_dim = N_HEAD, WIDTH // N_HEAD
        self.c_q = nn.Linear(WIDTH, WIDTH, bias=False)
        self.c_k = nn.Linear(WIDTH, WIDTH, bias=False)
        self.c_v = nn.Linear(WIDTH, WIDTH, bias=False)
        self.c_proj = nn.Linear(WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.c_q(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        q, k = rms_norm(rotary(q, cos, sin)), rms_norm(rotary(k, cos, sin))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(WIDTH, MLP_MULT * WIDTH, bias=False)
        self.c_proj = nn.Linear(MLP_MULT * WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(torch.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(), MLP()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB_SIZE, WIDTH)
        self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
        self.lm_head = nn.Linear(WIDTH, VOCAB_SIZE, bias=False)
        self.softcap = LOGIT_SOFTCAP
        hd = WIDTH // N_HEAD
        self.register_buffer("inv_freq", 1.0 / ROPE_BASE ** (torch.arange(0, hd, 2).float() / hd), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                bound = 3**0.5 * WIDTH**-0.5
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.size(1)
        freqs = torch.outer(torch.arange(t, device=idx.device, dtype=torch.float32), self.inv_freq)
        x = rms_norm(self.wte(idx))
        cos, sin = freqs.cos().to(x.dtype)[None, None], freqs.sin().to(x.dtype)[None, None]
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(rms_norm(x)).float()
        return self.softcap * torch.tanh(logits / self.softcap)


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
    """Nesterov-style momentum, Newton-Schulz, and cautious weight decay (only where update and weight agree)."""

    def __init__(self, params, lr: float, momentum: float, ns_steps: int, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = newton_schulz(p.grad.lerp(buf, group["momentum"]), group["ns_steps"])
                if group["weight_decay"] > 0:
                    agree = (update * p) > 0
                    p.sub_(p * agree, alpha=group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


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

    def batch(self, seqs: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        span = seqs * SEQ_LEN + 1
        block = self.take(span * self.world)[self.rank * span : (self.rank + 1) * span]
        t = torch.from_numpy(block.astype(np.int64)).to(device, non_blocking=True)
        return t[:-1].view(seqs, SEQ_LEN), t[1:].view(seqs, SEQ_LEN)


def bench_report(marks: list[float], loop_start: float, train_done: float, peak_mb: float) -> str:
    """One line for bench/gpu_recipes.py: startup, first step (compiles), steady step time, export."""
    steady = sorted(b - a for a, b in zip(marks[1:], marks[2:], strict=False))
    step_ms = 1000 * steady[len(steady) // 2] if steady else float("nan")
    first = marks[0] - loop_start if marks else float("nan")
    in_budget = horizon_steps()  # the token horizon, not the clock, sets the steps
    return (f"bench: mode={MODE} steps={len(marks)} startup_s={loop_start - T0:.2f} first_step_s={first:.2f} "
            f"step_ms={step_ms:.1f} export_s={time.perf_counter() - train_done:.2f} "
            f"total_s={time.perf_counter() - T0:.2f} peak_gpu_mb={peak_mb:.0f} steps_in_budget={in_budget}")


def scaling_params(model: GPT) -> int:
    """Block matrices + head: what nanochat's horizon counts (embedding excluded)."""
    return sum(p.numel() for p in model.blocks.parameters() if p.ndim == 2) + model.lm_head.weight.numel()


def horizon_steps(model: GPT | None = None) -> int:
    with torch.device("meta"):
        model = model or GPT()
    return max(1, int(TOKENS_PER_PARAM * scaling_params(model)) // BATCH_TOKENS)


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

    if MODE in ("smoke", "synthetic"):
        shards = [np.random.default_rng(SEED).integers(0, VOCAB_SIZE, size=BATCH_TOKENS * 4 + 1, dtype=np.uint16)]
    else:
        shards = data.train_shards(MODE == "tiny")
    stream = TokenStream(shards, rank, world)
    model = GPT().to(device)
    train_model = torch.compile(model) if COMPILE else model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=[device.index] if cuda else None)

    scale = (WIDTH / 768) ** -0.5
    muon = Muon([p for p in model.blocks.parameters()], lr=MATRIX_LR, momentum=0.85, ns_steps=MUON_NS_STEPS,
                weight_decay=WEIGHT_DECAY)
    adam = torch.optim.AdamW([dict(params=[model.wte.weight], lr=EMBED_LR * scale),
                              dict(params=[model.lm_head.weight], lr=HEAD_LR * scale)],
                             betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0, fused=cuda)
    opts = [muon, adam]
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]

    seqs = min(DEVICE_BATCH, max(1, BATCH_TOKENS // (world * SEQ_LEN)))
    accum = max(1, BATCH_TOKENS // (world * seqs * SEQ_LEN))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    n_steps = min(MAX_STEPS, horizon_steps(model))
    warmdown = round(WARMDOWN_FRAC * n_steps)
    if rank == 0:
        print(f"horizon: {n_steps} steps x {BATCH_TOKENS} tokens = {n_steps * BATCH_TOKENS:,} tokens "
              f"({TOKENS_PER_PARAM:g} per scaling parameter, {scaling_params(model):,})", flush=True)
    step, total = 0, torch.zeros(())
    marks: list[float] = []  # end of each step (smoke/synthetic timing)
    loop_start = time.perf_counter()
    while step < n_steps:
        if time.perf_counter() - T0 >= TIME_BUDGET:
            break
        if step < WARMUP_STEPS:
            lrm = (step + 1) / WARMUP_STEPS
        elif step <= n_steps - warmdown:
            lrm = 1.0
        else:
            left = (n_steps - step) / warmdown
            lrm = left + (1 - left) * FINAL_LR_FRAC
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lrm
        if step < MUON_MOMENTUM_WARMUP:
            mom = 0.85 + (MUON_MOMENTUM - 0.85) * step / MUON_MOMENTUM_WARMUP
        elif step >= n_steps - warmdown:
            done = (step - (n_steps - warmdown)) / max(1, warmdown)
            mom = MUON_MOMENTUM * (1 - done) + MUON_MOMENTUM_END * done
        else:
            mom = MUON_MOMENTUM
        for g in muon.param_groups:
            g["momentum"] = mom
            g["weight_decay"] = WEIGHT_DECAY * 0.5 * (1 + math.cos(math.pi * step / n_steps))
        total = torch.zeros((), device=device)
        for _ in range(accum):
            x, y = stream.batch(seqs, device)
            with autocast:
                logits = train_model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            (loss / accum).backward()
            total += loss.detach() / accum
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        step += 1
        if MODE in ("smoke", "synthetic"):
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
        if rank == 0 and (step % 100 == 0 or step == 1):
            print(f"step {step} train_loss {total.item():.4f} elapsed {time.perf_counter() - T0:.1f}s", flush=True)
    train_done = time.perf_counter()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    if rank == 0:
        model.eval()
        if cuda and EXPORT_BF16:
            model = model.bfloat16()
        torch.jit.save(torch.jit.script(model), "model.pt")
        print(f"train_loss: {total.item():.4f}")
        print(f"steps: {step}")
        print(f"tokens_seen: {step * BATCH_TOKENS}")
        if MODE in ("smoke", "synthetic"):
            print(bench_report(marks, loop_start, train_done, peak))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
