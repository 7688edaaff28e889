"""Protected evaluation: validation bits per byte of the compressed model artifact.

Runs after training, in a fresh folder, on ``$AUTORESEARCH_ARTIFACT_DIR/final_model.ptz``:
a TorchScript module (int64 tokens [B, T] -> logits [B, T, V]), compressed with
lzma, zlib or bz2.  The file that is scored is the file the evaluator counts
toward the 16,000,000-byte limit, and TorchScript runs it without importing
the trial's Python code.

Protocol (chosen by the recipe, not the trial; flags set in recipe.yaml):

* ``--tokenizer sp8192|sp1024``: which published export and SentencePiece
  model the bytes are counted with (the trial's vocabulary must cover it).
* ``--seq-len L --stride S``: sliding windows as the challenge's
  ``eval_val_sliding`` scores them.  The validation tokens are cut to a
  whole number of L-token blocks (plus the final target), window k starts at
  k*S, the first window scores all its L targets and every later one only
  its last S, so each target is scored exactly once with at least L - S
  tokens of context.  ``--stride`` equal to ``--seq-len`` is the plain
  non-overlapping evaluation of the Naive Baseline (``eval_val``).

Under ``torchrun`` every process scores its own share of the windows and the
sums are reduced, as the reference does on 8 GPUs.

Before scoring, a causality check: logits at positions before T/2 must not
change when the tokens after T/2 change (a model that peeks at the tokens it
predicts would otherwise score near zero).

Prints ``val_bpb``, ``val_loss`` (nats per token), ``val_tokens`` (scored
targets), ``val_bytes`` and ``eval_seconds`` (this step's own clock).
"""

from __future__ import annotations

import argparse
import bz2
import io
import lzma
import math
import os
import sys
import time
import zlib
from pathlib import Path

import data
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

ARTIFACT = "final_model.ptz"


def unshuffle(raw: bytes) -> bytes:
    """Undo the byte shuffle of the record's export: b"BSHF", a stride, then the bytes grouped by position mod stride."""
    stride = raw[4]
    a = np.frombuffer(raw, dtype=np.uint8, offset=5)
    out = np.empty_like(a)
    at = 0
    for i in range(stride):
        n = len(out[i::stride])
        out[i::stride] = a[at : at + n]
        at += n
    return out.tobytes()


def decompress(blob: bytes) -> bytes:
    """A TorchScript archive from lzma/xz, zlib or bz2 (or none), byte-shuffled or not."""
    if blob.startswith(b"\xfd7zXZ\x00"):
        raw = lzma.decompress(blob)
    elif blob.startswith(b"BZh"):
        raw = bz2.decompress(blob)
    elif blob[:1] == b"\x78":
        raw = zlib.decompress(blob)
    elif blob.startswith((b"PK", b"BSHF")):
        raw = blob
    else:
        raise ValueError("unknown compression (expected lzma/xz, zlib, bz2 or a plain TorchScript file)")
    if raw.startswith(b"BSHF") and len(raw) > 5 and raw[4] >= 1:
        raw = unshuffle(raw)
    if not raw.startswith(b"PK"):
        raise ValueError("the decompressed artifact is not a TorchScript archive")
    return raw


def causality_error(model: torch.jit.ScriptModule, tokens: torch.Tensor, vocab: int) -> str | None:
    """A reason when logits before the midpoint depend on tokens after it."""
    x = tokens[:2].clone()
    half = x.size(1) // 2
    with torch.no_grad():
        a = model(x).float()
        y = x.clone()
        y[:, half:] = (y[:, half:] + 1 + torch.arange(y.size(1) - half, device=y.device)) % vocab
        b = model(y).float()
    diff = (a[:, :half] - b[:, :half]).abs().max().item()
    scale = a[:, :half].abs().max().item()
    if not math.isfinite(diff) or diff > 1e-3 + 1e-3 * scale:
        return f"the model is not causal: logits before position {half} moved by {diff:.3g} when later tokens changed"
    return None


def usable_tokens(val: np.ndarray, seq_len: int) -> np.ndarray:
    """The validation tokens cut to whole ``seq_len`` blocks plus the last target (the reference's cut)."""
    usable = (len(val) - 1) // seq_len * seq_len
    if usable <= 0:
        raise ValueError(f"the validation split ({len(val)} tokens) is shorter than one {seq_len}-token window")
    return val[: usable + 1]


def windows(total: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored offset) of every window over ``total`` targets."""
    context = seq_len - stride
    out = []
    for start in range(0, total, stride):
        if start + context >= total:
            break
        out.append((start, min(start + seq_len, total), 0 if start == 0 else context))
    return out


def score(model, tokens: torch.Tensor, luts: tuple[torch.Tensor, torch.Tensor, torch.Tensor], seq_len: int,
          stride: int, batch: int, rank: int = 0, world: int = 1) -> tuple[float, int, int]:
    """(sum of nats, scored targets, their UTF-8 bytes) over this process's share of the windows.

    ``tokens`` is the cut validation split (:func:`usable_tokens`).  Raises
    ValueError when the model's output has the wrong shape.
    """
    base, space, boundary = luts
    total = tokens.numel() - 1
    mine = windows(total, seq_len, stride)
    mine = mine[len(mine) * rank // world : len(mine) * (rank + 1) // world]
    loss_sum = torch.zeros((), dtype=torch.float64, device=tokens.device)
    n_bytes = torch.zeros((), dtype=torch.int64, device=tokens.device)
    n_tokens = 0
    vocab = base.numel()
    with torch.no_grad():
        for i in range(0, len(mine), batch):
            group = mine[i : i + batch]
            x = torch.zeros(len(group), seq_len, dtype=torch.int64, device=tokens.device)
            y = torch.zeros_like(x)
            scored = torch.zeros(x.shape, dtype=torch.bool, device=tokens.device)
            for j, (s, e, first) in enumerate(group):
                x[j, : e - s] = tokens[s:e]
                y[j, : e - s] = tokens[s + 1 : e + 1]
                scored[j, first : e - s] = True
                n_tokens += e - s - first
            logits = model(x)
            if logits.dim() != 3 or logits.shape[:2] != x.shape or logits.size(-1) < vocab:
                raise ValueError(f"logits of shape {tuple(logits.shape)}; expected ({x.size(0)}, {seq_len}, "
                                 f">= {vocab}) for this tokenizer")
            nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                  reduction="none").view_as(y)
            loss_sum += nll.double()[scored].sum()
            n_bytes += (base[y].long() + (space[y] & ~boundary[x]).long())[scored].sum()
    return float(loss_sum), n_tokens, int(n_bytes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score final_model.ptz on the FineWeb validation split.")
    ap.add_argument("--tiny", action="store_true", help="the generated data of the tiny profile")
    ap.add_argument("--tokenizer", choices=sorted(data.VARIANTS), default="sp8192")
    ap.add_argument("--seq-len", type=int, default=2048, help="tokens per window")
    ap.add_argument("--stride", type=int, default=64, help="targets scored per window after the first")
    ap.add_argument("--batch", type=int, default=32, help="windows per forward pass")
    args = ap.parse_args(argv)
    if not 0 < args.stride <= args.seq_len:
        print(f"evaluate: --stride must be in 1..--seq-len ({args.seq_len}), got {args.stride}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if distributed else (0, 1)
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(1)
    path = Path(os.environ.get("AUTORESEARCH_ARTIFACT_DIR", ".")) / ARTIFACT
    if not path.is_file():
        print(f"evaluate: no {ARTIFACT} in {path.parent}; training must write one", file=sys.stderr)
        return 1
    try:
        model = torch.jit.load(io.BytesIO(decompress(path.read_bytes())), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - any unreadable artifact is the trial's failure
        print(f"evaluate: cannot load {ARTIFACT}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    pieces = data.tokenizer_pieces(args.tokenizer, args.tiny)
    luts = tuple(torch.from_numpy(a).to(device) for a in data.byte_luts(pieces))
    val = usable_tokens(data.val_tokens(args.tokenizer, args.tiny), args.seq_len)
    tokens = torch.from_numpy(val.astype(np.int64)).to(device)

    reason = causality_error(model, tokens[: 2 * args.seq_len].view(2, args.seq_len) if len(val) > 2 * args.seq_len
                             else tokens[: args.seq_len].view(1, args.seq_len).repeat(2, 1), len(pieces))
    if reason:
        print(f"evaluate: {reason}", file=sys.stderr)
        return 1
    try:
        loss_sum, n_tokens, n_bytes = score(model, tokens, luts, args.seq_len, args.stride, args.batch, rank, world)
    except ValueError as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 1
    if distributed:
        sums = torch.tensor([loss_sum, n_tokens, n_bytes], dtype=torch.float64, device=device)
        dist.all_reduce(sums)
        loss_sum, n_tokens, n_bytes = float(sums[0]), int(sums[1]), int(sums[2])
        dist.destroy_process_group()
    if not math.isfinite(loss_sum):
        print("evaluate: the validation loss is not finite", file=sys.stderr)
        return 1
    if rank == 0:
        print(f"val_loss: {loss_sum / n_tokens:.6f}")
        print(f"val_bpb: {loss_sum / math.log(2) / n_bytes:.6f}")
        print(f"val_tokens: {n_tokens}")
        print(f"val_bytes: {n_bytes}")
        print(f"eval_seconds: {time.perf_counter() - t0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
