"""CIFAR-10 to 96%, the public airbench96 (31 epochs, widths 128/512/512; 96.01% in 35.8 s): profile ``airbench96``.

Editable in that profile (the default profile trains ``airbench96_faster.py``).  A small ResNet-like conv net (whitening first layer initialised from
the patch covariance, three conv groups with a residual), Nesterov SGD with
decoupled hyperparameters, label smoothing, alternating flips, translation and
cutout, a lookahead (EMA) of the weights, and test-time augmentation built into
the exported model.  Training saves ``model.pt`` (TorchScript: float images in
[0, 1], shape [N, 3, H, W] -> 10 logits); the protected ``evaluate.py`` measures
test accuracy from that file.  The score is this process's wall clock on the
evaluator's clock: imports, data loading, compilation and export all count.

Modes (command-line flag): none = real (one GPU, real CIFAR-10); ``--tiny`` =
the CPU-sized run on generated data (overrides in TINY); ``--smoke`` = the real
configuration for two steps on generated data (the preflight);
``--synthetic`` = the real configuration and step count on generated data of
the real shape (timing benchmark; accuracy is meaningless).
"""

from __future__ import annotations

import os
import sys
import time

import data
import torch
import torch.nn as nn
import torch.nn.functional as F

T0 = time.perf_counter()
SEED = int(os.environ.get("AUTORESEARCH_SEED", "0"))
MODE = next((m for m in ("tiny", "smoke", "synthetic") if f"--{m}" in sys.argv), "real")

# ----- optimisation -----
EPOCHS = 31.0  # passes over the training set (fractions allowed)
BATCH_SIZE = 1024  # images per step
LR = 9.0  # learning rate per 1024 examples, decoupled from momentum (see notes)
MOMENTUM = 0.85  # Nesterov momentum
WEIGHT_DECAY = 0.012  # per 1024 examples, decoupled from LR
BIAS_SCALER = 64.0  # LR multiplier for BatchNorm biases (not their weight decay)
WARMUP_FRAC = 0.1  # share of steps with a linear warmup from 0.2x; then linear decay to zero
LABEL_SMOOTHING = 0.2  # cross-entropy label smoothing
WHITEN_BIAS_EPOCHS = 3  # epochs the whitening layer's bias trains before it is frozen
LOOKAHEAD_EVERY = 5  # steps between lookahead (EMA) syncs
LOOKAHEAD_DECAY = 0.95  # per-step EMA decay at the end of training (ramps up cubically)
# ----- augmentation -----
FLIP = True  # alternating horizontal flip (every other epoch, all images together)
TRANSLATE = 4  # random translation in pixels (reflect padding)
CUTOUT = 12  # side of the zeroed square; 0 disables
# ----- network -----
WIDTHS = (128, 512, 512)  # channels of the three conv groups
WHITEN_KERNEL = 2  # patch size of the whitening layer
WHITEN_EPS = 5e-4  # added to the patch-covariance eigenvalues
SCALING = 1 / 9  # logit scale
TTA_LEVEL = 2  # 0 none, 1 mirror, 2 mirror + 1-pixel translations (in the exported model)
# ----- systems -----
COMPILE = False  # torch.compile the net (its compile time counts in the score)
CHANNELS_LAST = True  # memory format on the GPU
HALF = True  # fp16 weights and activations on the GPU (BatchNorm stays fp32)
WHITEN_IMAGES = 5000  # training images used to estimate the patch covariance
BN_MOMENTUM = 0.1  # weight of the newest batch in BatchNorm's running statistics (PyTorch convention)

TINY = dict(EPOCHS=8, BATCH_SIZE=128, LR=20.0, WIDTHS=(16, 32, 32), TRANSLATE=2, CUTOUT=4,
            WHITEN_BIAS_EPOCHS=1, WHITEN_IMAGES=512, TTA_LEVEL=1)  # --tiny: CPU seconds, generated 16x16 data
if MODE == "tiny":
    globals().update(TINY)
if MODE == "smoke":  # two steps of the real net on 4,096 random images; small batches on a CPU
    BATCH_SIZE = BATCH_SIZE if torch.cuda.is_available() else 64
    EPOCHS = 2 * BATCH_SIZE / 4096

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class Conv(nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int = 3, padding: str = "same", bias: bool = False) -> None:
        super().__init__(cin, cout, kernel_size=kernel, padding=padding, bias=bias)
        if self.bias is not None:
            self.bias.data.zero_()  # as the reference's reset_parameters
        w = self.weight.data
        nn.init.dirac_(w[: w.size(1)])  # start near identity where channel counts allow


class Norm(nn.BatchNorm2d):
    def __init__(self, n: int) -> None:
        super().__init__(n, eps=1e-12, momentum=BN_MOMENTUM)
        self.weight.requires_grad = False  # scale frozen at one: only the bias learns


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = Conv(cin, cout), Norm(cout)
        self.conv2, self.norm2 = Conv(cout, cout), Norm(cout)
        self.conv3, self.norm3 = Conv(cout, cout), Norm(cout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.pool(self.conv1(x))))
        skip = x
        x = F.gelu(self.norm2(self.conv2(x)))
        return F.gelu(self.norm3(self.conv3(x)) + skip)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        width = 2 * 3 * WHITEN_KERNEL**2
        self.whiten = Conv(3, width, WHITEN_KERNEL, padding="valid", bias=True)
        self.whiten.weight.requires_grad = False
        self.groups = nn.Sequential(ConvGroup(width, WIDTHS[0]), ConvGroup(WIDTHS[0], WIDTHS[1]),
                                    ConvGroup(WIDTHS[1], WIDTHS[2]))
        self.head = nn.Linear(WIDTHS[2], 10, bias=False)
        self.scale = SCALING

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * self.scale


class Exported(nn.Module):
    """What evaluate.py loads: normalisation and test-time augmentation around the net."""

    def __init__(self, net: Net, tta_level: int) -> None:
        super().__init__()
        self.net = net
        self.tta_level = tta_level
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def mirror(self, x: torch.Tensor) -> torch.Tensor:
        if self.tta_level < 1:
            return self.net(x)
        return 0.5 * self.net(x) + 0.5 * self.net(x.flip(-1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        logits = self.mirror(x)
        if self.tta_level < 2:
            return logits
        h, w = x.size(-2), x.size(-1)
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = 0.5 * self.mirror(padded[:, :, 0:h, 0:w]) + 0.5 * self.mirror(padded[:, :, 2 : h + 2, 2 : w + 2])
        return 0.5 * logits + 0.5 * shifted


def init_whitening(layer: Conv, images: torch.Tensor) -> None:
    """First-layer filters = eigenvectors of the patch covariance, scaled to whiten (and negated)."""
    k = layer.weight.shape[-1]
    patches = images.float().unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, 3 * k * k)
    cov = patches.T @ patches / len(patches)
    eigval, eigvec = torch.linalg.eigh(cov)
    filters = (eigvec.T / torch.sqrt(eigval + WHITEN_EPS)[:, None]).reshape(-1, 3, k, k).flip(0)
    layer.weight.data[:] = torch.cat([filters, -filters]).to(layer.weight.dtype)


def augment(images: torch.Tensor, epoch: int) -> torch.Tensor:
    """Alternating flip (all images on odd epochs; they were flipped at random once), translation, cutout."""
    n, _, h, w = images.shape
    if FLIP and epoch % 2 == 1:
        images = images.flip(-1)
    if TRANSLATE > 0:  # one masked copy per offset: cheaper than gathering with per-pixel indices
        r = TRANSLATE
        padded = F.pad(images, (r, r, r, r), mode="reflect")
        dy = torch.randint(0, 2 * r + 1, (n,), device=images.device)
        dx = torch.randint(0, 2 * r + 1, (n,), device=images.device)
        rows = torch.empty((n, 3, h, w + 2 * r), device=images.device, dtype=images.dtype)
        for s in range(2 * r + 1):
            rows[dy == s] = padded[dy == s, :, s : s + h, :]
        images = torch.empty_like(images)
        for s in range(2 * r + 1):
            images[dx == s] = rows[dx == s, :, :, s : s + w]
    if CUTOUT > 0:
        cy = torch.randint(0, h - CUTOUT + 1, (n, 1, 1, 1), device=images.device)
        cx = torch.randint(0, w - CUTOUT + 1, (n, 1, 1, 1), device=images.device)
        ys = torch.arange(h, device=images.device).view(1, 1, h, 1)
        xs = torch.arange(w, device=images.device).view(1, 1, 1, w)
        box = (ys >= cy) & (ys < cy + CUTOUT) & (xs >= cx) & (xs < cx + CUTOUT)
        images = images.masked_fill(box, 0)
    return images


def load_train(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if MODE in ("smoke", "synthetic"):
        n = 4096 if MODE == "smoke" else 50_000
        g = torch.Generator().manual_seed(SEED)
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
    else:
        xs, ys = data.load("train", tiny=MODE == "tiny")
        x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    return x.to(device), y.to(device)


def bench_report(marks: list[float], loop_start: float, train_done: float, peak_mb: float) -> str:
    """One line for bench/gpu_recipes.py: startup, first step, steady step time, the loop, export."""
    steady = sorted(b - a for a, b in zip(marks[1:], marks[2:], strict=False))
    step_ms = 1000 * steady[len(steady) // 2] if steady else float("nan")
    first = marks[0] - loop_start if marks else float("nan")
    return (f"bench: mode={MODE} steps={len(marks)} startup_s={loop_start - T0:.2f} first_step_s={first:.2f} "
            f"step_ms={step_ms:.1f} loop_s={train_done - loop_start:.2f} export_s={time.perf_counter() - train_done:.2f} "
            f"total_s={time.perf_counter() - T0:.2f} peak_gpu_mb={peak_mb:.0f}")


def main() -> None:
    torch.manual_seed(SEED)
    cuda = torch.cuda.is_available() and MODE != "tiny"
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda and HALF else torch.float32
    if not cuda:
        torch.set_num_threads(1)  # tiny convs gain little from threads; one thread is steadier
    torch.backends.cudnn.benchmark = True
    x_u8, labels = load_train(device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    images = ((x_u8.float() / 255 - mean) / std).to(dtype)
    if CHANNELS_LAST and cuda:
        images = images.contiguous(memory_format=torch.channels_last)

    net = Net().to(device)
    init_whitening(net.whiten, images[:WHITEN_IMAGES])
    if FLIP:  # random flip of every image once; augment() then flips all of them every other epoch
        images = torch.where(torch.rand(len(images), device=device).view(-1, 1, 1, 1) < 0.5, images.flip(-1), images)
    net = net.to(dtype)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.float()
    if CHANNELS_LAST and cuda:
        net = net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if COMPILE else net

    kilostep = 1024 * (1 + 1 / (1 - MOMENTUM))
    lr = LR / kilostep
    wd = WEIGHT_DECAY * BATCH_SIZE / kilostep
    biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad and n != "whiten.bias"]
    whiten_bias = [net.whiten.bias]
    opt = torch.optim.SGD([
        dict(params=biases, lr=lr * BIAS_SCALER, weight_decay=wd / (lr * BIAS_SCALER)),
        dict(params=others + whiten_bias, lr=lr, weight_decay=wd / lr),
    ], momentum=MOMENTUM, nesterov=True)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]

    n = len(images)
    steps_per_epoch = n // BATCH_SIZE
    total = max(1, int(EPOCHS * steps_per_epoch))
    warmup = max(1, int(WARMUP_FRAC * total))
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    step, epoch, loss = 0, 0, torch.zeros(())
    marks: list[float] = []  # end of each step (smoke/synthetic timing)
    loop_start = time.perf_counter()
    while step < total:
        if epoch == WHITEN_BIAS_EPOCHS:
            net.whiten.bias.requires_grad = False
        batches = augment(images, epoch)
        order = torch.randperm(n, device=device)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            frac = 0.2 + 0.8 * step / warmup if step < warmup else (total - step) / (total - warmup + 1)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * frac
            out = model(batches[idx])
            loss = F.cross_entropy(out.float(), labels[idx], label_smoothing=LABEL_SMOOTHING, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if MODE in ("smoke", "synthetic"):
                if cuda:
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())
            if step % LOOKAHEAD_EVERY == 0 or step == total:
                decay = 1.0 if step == total else LOOKAHEAD_DECAY**LOOKAHEAD_EVERY * (step / total) ** 3
                with torch.no_grad():
                    for k, v in net.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k].lerp_(v, 1 - decay)
                            v.copy_(ema[k])
        epoch += 1
    train_loss = loss.item() / BATCH_SIZE
    train_done = time.perf_counter()

    exported = Exported(net.float().to(memory_format=torch.contiguous_format).eval(), TTA_LEVEL).to(device)
    torch.jit.save(torch.jit.script(exported), "model.pt")
    print(f"train_loss: {train_loss:.4f}")
    print(f"steps: {total}")
    if MODE in ("smoke", "synthetic"):
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
        print(bench_report(marks, loop_start, train_done, peak))


if __name__ == "__main__":
    main()
