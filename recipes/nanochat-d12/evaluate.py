"""Protected evaluation: a CORE-style score of the model that training saved.

Runs after training, in a fresh folder, on ``$AUTORESEARCH_ARTIFACT_DIR/model.pt``:
a TorchScript module mapping int64 tokens [B, T] to logits [B, T, V].
TorchScript runs the saved graph without importing the trial's Python code.

For every task (data.core_tasks) and example, each candidate sequence is
scored as nanochat's core_eval does: multiple choice and schema pick the
candidate with the lowest mean loss over its scored span; language modelling
is right when the greedy prediction reproduces the whole span.  A task's
centered accuracy is (accuracy - chance) / (1 - chance); ``core`` is their
mean.  A causality check runs first (logits before the midpoint must not move
when later tokens change).  Prints ``core``, ``core/<task>`` and ``val_loss``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import data
import numpy as np
import torch
import torch.nn.functional as F

BATCH_SEQS = 32  # candidate sequences per forward pass
VAL_SEQ_LEN = 2048  # for the auxiliary val_loss (first VAL_SEQS sequences of val.bin)
VAL_SEQS = 64
TINY_VAL_SEQ_LEN = 64


def causality_error(model: torch.jit.ScriptModule, x: torch.Tensor, vocab: int) -> str | None:
    half = x.size(1) // 2
    with torch.no_grad():
        a = model(x).float()
        y = x.clone()
        y[:, half:] = (y[:, half:] + 1 + torch.arange(y.size(1) - half, device=y.device)) % vocab
        b = model(y).float()
    diff = (a[:, :half] - b[:, :half]).abs().max().item()
    if not math.isfinite(diff) or diff > 1e-2 + 1e-2 * a[:, :half].abs().max().item():
        return f"the model is not causal: logits before position {half} moved by {diff:.3g} when later tokens changed"
    return None


def score_batch(model, seqs: list[np.ndarray], spans: list[tuple[int, int]], device: torch.device
                ) -> tuple[list[float], list[bool]]:
    """Mean loss over each span, and whether greedy decoding reproduces it."""
    width = max(len(s) for s in seqs)
    x = torch.full((len(seqs), width), data.BOS, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.from_numpy(s.astype(np.int64))
    x = x.to(device)
    with torch.no_grad():
        logits = model(x).float()
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
    preds = logits[:, :-1].argmax(-1)
    means, exact = [], []
    for i, (a, b) in enumerate(spans):
        means.append(losses[i, a - 1 : b - 1].mean().item())
        exact.append(bool((preds[i, a - 1 : b - 1] == x[i, a:b]).all()))
    return means, exact


def task_accuracy(model, task: data.Task, device: torch.device) -> float:
    """Share of the task's examples answered right; examples are batched up to BATCH_SEQS sequences."""
    correct = 0
    batch: list[int] = []

    def flush() -> int:
        seqs = [s for ei in batch for s in task.examples[ei][0]]
        spans = [sp for ei in batch for sp in task.examples[ei][1]]
        means, exact = score_batch(model, seqs, spans, device)
        got, k = 0, 0
        for ei in batch:
            n_cand, gold = len(task.examples[ei][0]), task.examples[ei][2]
            if task.kind == "language_modeling":
                got += int(exact[k])
            else:
                got += int(int(np.argmin(means[k : k + n_cand])) == gold)
            k += n_cand
        batch.clear()
        return got

    pending = 0
    for ei, (cands, _spans, _gold) in enumerate(task.examples):
        if batch and pending + len(cands) > BATCH_SEQS:
            correct += flush()
            pending = 0
        batch.append(ei)
        pending += len(cands)
    if batch:
        correct += flush()
    return correct / max(1, len(task.examples))


def main() -> int:
    tiny = "--tiny" in sys.argv
    path = Path(os.environ.get("AUTORESEARCH_ARTIFACT_DIR", ".")) / "model.pt"
    if not path.is_file():
        print(f"evaluate: no model.pt in {path.parent}; training must save one", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    model = torch.jit.load(str(path), map_location=device).eval()
    vocab = data.vocab_size(tiny)
    seq_len = TINY_VAL_SEQ_LEN if tiny else VAL_SEQ_LEN
    val = data.val_tokens(tiny)
    n = min(VAL_SEQS, (len(val) - 1) // seq_len)
    tokens = torch.from_numpy(np.asarray(val[: n * seq_len + 1]).astype(np.int64)).to(device)
    x, y = tokens[:-1].view(n, seq_len), tokens[1:].view(n, seq_len)
    reason = causality_error(model, x[:2], vocab)
    if reason:
        print(f"evaluate: {reason}", file=sys.stderr)
        return 1
    with torch.no_grad():
        val_loss = sum(F.cross_entropy(model(x[i : i + 8]).float().transpose(1, 2), y[i : i + 8],
                                       reduction="sum").item() for i in range(0, n, 8)) / y.numel()

    centered = {}
    for task in data.core_tasks(tiny):
        acc = task_accuracy(model, task, device)
        centered[task.name] = (acc - task.chance) / (1 - task.chance)
        print(f"accuracy/{task.name}: {acc:.6f}")
        print(f"core/{task.name}: {centered[task.name]:.6f}")
    print(f"val_loss: {val_loss:.6f}")
    print(f"core: {sum(centered.values()) / len(centered):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
