"""Digits speedrun: reach the accuracy gate as fast as possible on the CPU.

Editable.  Trains a small MLP on the fixed training split and saves it as
TorchScript to ``model.pt``; the protected ``evaluate.py`` measures test
accuracy from that file.  The evaluator's clock measures the time.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import load_train

SEED = int(os.environ.get("AUTORESEARCH_SEED", "0"))
HIDDEN = 256  # units in each hidden layer
DEPTH = 2  # hidden layers
EPOCHS = 60  # passes over the training set
BATCH_SIZE = 32  # examples per optimizer step
LR = 0.02  # peak learning rate
MOMENTUM = 0.9  # SGD momentum
WEIGHT_DECAY = 5e-4  # L2 penalty
WARMUP_FRAC = 0.0  # share of steps with a linear warmup
LABEL_SMOOTHING = 0.0  # cross-entropy label smoothing
THREADS = 1  # torch intra-op threads


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 64
        for _ in range(DEPTH):
            layers += [nn.Linear(width, HIDDEN), nn.ReLU()]
            width = HIDDEN
        layers.append(nn.Linear(width, 10))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x / 16.0)


def lr_at(step: int, total: int) -> float:
    warmup = int(WARMUP_FRAC * total)
    if step < warmup:
        return LR * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return LR * 0.5 * (1 + math.cos(math.pi * progress))


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    x_train, y_train = load_train()
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(x) / BATCH_SIZE)
    total = EPOCHS * steps_per_epoch
    step = 0
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(x))
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total)
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1} loss {loss.item():.4f}")
    print(f"train_loss: {loss.item():.6f}")
    torch.jit.save(torch.jit.script(model.eval()), "model.pt")


if __name__ == "__main__":
    main()
