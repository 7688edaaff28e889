"""Protected evaluation: validation bits per byte of the compressed model artifact.

Runs after training, in a fresh folder, on ``$AUTORESEARCH_ARTIFACT_DIR/final_model.ptz``:
a TorchScript module (int64 tokens [B, T] -> logits [B, T, V]), compressed with
lzma, zlib or bz2.  The file that is scored is the file the evaluator counts
toward the 16,000,000-byte limit, and TorchScript runs it without importing
the trial's Python code.

Before scoring, a causality check: logits at positions before T/2 must not
change when the tokens after T/2 change (a model that peeks at the tokens it
predicts would otherwise score near zero).

Prints ``val_bpb``, ``val_loss`` (nats per token) and ``val_tokens``.
"""

from __future__ import annotations

import bz2
import io
import lzma
import math
import os
import sys
import zlib
from pathlib import Path

import data
import numpy as np
import torch
import torch.nn.functional as F

ARTIFACT = "final_model.ptz"
EVAL_SEQ_LEN = 1024  # tokens per scored sequence (each scored from its own start)
EVAL_BATCH = 32  # sequences per forward pass
TINY_SEQ_LEN = 128


def decompress(blob: bytes) -> bytes:
    if blob.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(blob)
    if blob.startswith(b"BZh"):
        return bz2.decompress(blob)
    if blob[:1] == b"\x78":
        return zlib.decompress(blob)
    if blob.startswith(b"PK"):
        return blob  # an uncompressed TorchScript archive
    raise ValueError("unknown compression (expected lzma/xz, zlib, bz2 or a plain TorchScript file)")


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


def main() -> int:
    tiny = "--tiny" in sys.argv
    seq_len = TINY_SEQ_LEN if tiny else EVAL_SEQ_LEN
    path = Path(os.environ.get("AUTORESEARCH_ARTIFACT_DIR", ".")) / ARTIFACT
    if not path.is_file():
        print(f"evaluate: no {ARTIFACT} in {path.parent}; training must write one", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(1)
    try:
        model = torch.jit.load(io.BytesIO(decompress(path.read_bytes())), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - any unreadable artifact is the trial's failure
        print(f"evaluate: cannot load {ARTIFACT}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    pieces = data.tokenizer_pieces(tiny)
    luts = data.byte_luts(pieces)
    val = data.val_tokens(tiny)
    n_seq = (len(val) - 1) // seq_len
    tokens = torch.from_numpy(val[: n_seq * seq_len + 1].astype(np.int64)).to(device)
    inputs = tokens[:-1].view(n_seq, seq_len)

    reason = causality_error(model, inputs, len(pieces))
    if reason:
        print(f"evaluate: {reason}", file=sys.stderr)
        return 1
    loss_sum = 0.0
    with torch.no_grad():
        for i in range(0, n_seq, EVAL_BATCH):
            x = inputs[i : i + EVAL_BATCH]
            y = tokens[1:].view(n_seq, seq_len)[i : i + EVAL_BATCH]
            logits = model(x)
            if logits.dim() != 3 or logits.shape[:2] != x.shape or logits.size(-1) < len(pieces):
                print(f"evaluate: logits of shape {tuple(logits.shape)}; expected ({x.size(0)}, {seq_len}, "
                      f">= {len(pieces)})", file=sys.stderr)
                return 1
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
            loss_sum += float(loss.double())
    prev = val[: n_seq * seq_len].astype(np.int64)
    target = val[1 : n_seq * seq_len + 1].astype(np.int64)
    n_bytes = data.count_bytes(prev, target, luts)
    n_tokens = n_seq * seq_len
    if not math.isfinite(loss_sum):
        print("evaluate: the validation loss is not finite", file=sys.stderr)
        return 1
    print(f"val_loss: {loss_sum / n_tokens:.6f}")
    print(f"val_bpb: {loss_sum / math.log(2) / n_bytes:.6f}")
    print(f"val_tokens: {n_tokens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
