"""A plain PyTorch script configured by argparse flags, printing its own log format.

Fits y = 3x - 1 with a one-unit linear model; the validation loss falls with
more epochs and a sensible learning rate.
"""

import argparse

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

torch.manual_seed(args.seed)
x = torch.linspace(-1, 1, 64).unsqueeze(1)
y = 3 * x - 1 + 0.05 * torch.randn_like(x)
x_val = torch.linspace(-0.95, 0.95, 16).unsqueeze(1)
y_val = 3 * x_val - 1
model = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(model.parameters(), lr=args.lr)
for epoch in range(1, args.epochs + 1):
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if epoch % 5 == 0:
        with torch.no_grad():
            val = torch.nn.functional.mse_loss(model(x_val), y_val)
        print(f"step {epoch}: train loss {loss.item():.4f}, val loss {val.item():.4f}")
