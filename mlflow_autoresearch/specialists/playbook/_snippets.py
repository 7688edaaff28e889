'''Helper code that some program rewrites insert into a training script, as text.

Each snippet needs only ``torch`` (and ``F`` = ``torch.nn.functional``, which
the rewrite renames to the file's own alias).
'''

PLAIN_SGD = '''
class _PlainSGD:
    """The update torch.optim.SGD makes (momentum, L2 weight decay; no Nesterov, no dampening), without
    constructing a torch.optim optimizer, whose first use imports torch._dynamo."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
        self.bufs = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        for p, buf in zip(self.params, self.bufs):
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
            if group["momentum"]:
                buf.mul_(group["momentum"]).add_(d)
                d = buf
            p.add_(d, alpha=-group["lr"])
'''

PLAIN_ADAMW = '''
class _PlainAdamW:
    """The update torch.optim.AdamW makes (decoupled weight decay, bias correction), without constructing a
    torch.optim optimizer, whose first use imports torch._dynamo."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        (b1, b2), lr = group["betas"], group["lr"]
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            p.mul_(1 - lr * group["weight_decay"])
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(group["eps"]), value=-lr / c1)
'''

SHIFT_PIXELS = '''
def _shift_pixels(x: torch.Tensor) -> torch.Tensor:
    """Augmentation: shift a batch of flat 8x8 images by up to one pixel (the same shift for the batch, zero fill)."""
    img = F.pad(x.view(-1, 1, 8, 8), (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2,)).tolist()
    return img[:, :, dy : dy + 8, dx : dx + 8].reshape(x.shape)
'''

RANDOM_FLIP = '''
def _random_flip(x: torch.Tensor) -> torch.Tensor:
    """Augmentation: mirror each image of an NCHW batch left-right with probability 1/2."""
    flip = torch.rand(x.size(0), 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)
'''
