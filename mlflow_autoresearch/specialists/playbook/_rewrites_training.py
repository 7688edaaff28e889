"""Program rewrites of the training loop: optimizer swaps, gradient clipping, precision, memory format, compile."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from mlflow_autoresearch.specialists.playbook import _snippets
from mlflow_autoresearch.specialists.playbook._catalogue import Candidate, rewrite
from mlflow_autoresearch.specialists.playbook._matchers import (
    cand,
    imports_torch,
    insert_after_model,
    insert_helper,
    kwargs_text,
    model_names,
    optimizers,
    resolve,
    step_site,
    training_step,
    wrap_lines,
)
from mlflow_autoresearch.specialists.playbook._source import Rewriter, Source, dotted, format_number, show

ADAM_LR_PER_SGD_LR = 0.15  # AdamW wants a learning rate roughly 5-10x below momentum SGD's
ADAM_LR_RANGE = (3e-4, 3e-3)
ADAMW_DECOUPLED_WD = 0.01
CLIP_NORM = 1.0


# ----- optimization -------------------------------------------------------------------------
@rewrite("sgd-to-adamw", "optimization", ["quality"])
def sgd_to_adamw(src: Source) -> Iterator[Candidate]:
    r = sgd_to_adamw
    for rel in src.texts:
        for _, call, _ in optimizers(src, rel):
            name = dotted(call.func) or ""
            if not (name.endswith("optim.SGD") or name == "_PlainSGD") or len(call.args) != 1:
                continue
            kw = {k.arg: k.value for k in call.keywords}
            if None in kw or "lr" not in kw or isinstance(call.args[0], (ast.List, ast.Dict)):
                continue
            lr_set, lr = resolve(src, rel, kw["lr"])
            if lr is None or lr <= 0:
                continue
            new_lr = float(f"{min(max(lr * ADAM_LR_PER_SGD_LR, ADAM_LR_RANGE[0]), ADAM_LR_RANGE[1]):.1g}")
            rw, changes = Rewriter(src), []
            args = [src.segment(rel, call.args[0])]
            if lr_set is not None:
                rw.set_literal(lr_set, (new_lr,))
                changes.append((lr_set.label, lr, new_lr))
                args.append(f"lr={lr_set.name}")
            else:
                args.append(f"lr={format_number(new_lr, 0.1)}")
            wd_set, _ = resolve(src, rel, kw["weight_decay"]) if "weight_decay" in kw else (None, None)
            if wd_set is not None and src.name_uses(rel, wd_set.name) == 2:  # defined once, used only here
                rw.set_literal(wd_set, (ADAMW_DECOUPLED_WD,))
                changes.append((wd_set.label, wd_set.value, ADAMW_DECOUPLED_WD))
                args.append(f"weight_decay={wd_set.name}")
            else:
                args.append(f"weight_decay={ADAMW_DECOUPLED_WD}")
            plain = name == "_PlainSGD"
            func = "_PlainAdamW" if plain else name[: -len("SGD")] + "AdamW"
            if plain and not insert_helper(rw, src, rel, "_PlainAdamW", _snippets.PLAIN_ADAMW):
                continue
            rw.replace_node(rel, call, f"{func}({', '.join(args)})")
            old = f"{name}({kwargs_text(src, rel, call)})"
            new = f"{func}(lr={show(new_lr)}, weight_decay={ADAMW_DECOUPLED_WD})"
            consts = ", ".join(f"{label} {show(o)} -> {show(n)}" for label, o, n in changes)
            yield cand(r, rw.edits(), f"replaced {old} with {new}" + (f" ({consts})" if consts else ""),
                        "AdamW reaches the same accuracy in fewer epochs than momentum SGD on a small net",
                        changes, enables_cut=True)


@rewrite("plain-optimizer", "systems", ["faster"])
def plain_optimizer(src: Source) -> Iterator[Candidate]:
    """torch.optim.SGD/AdamW -> the same update in a small class: no torch.optim optimizer is built."""
    r = plain_optimizer
    allowed = {"SGD": {"lr", "momentum", "weight_decay"}, "AdamW": {"lr", "betas", "eps", "weight_decay"}}
    for rel in src.texts:
        text = src.texts[rel]
        opts = list(optimizers(src, rel))
        if len(opts) != 1 or not imports_torch(src, rel):
            continue
        stmt, call, var = opts[0]
        name = dotted(call.func) or ""
        kind = name.rsplit(".", 1)[-1]
        if not re.search(r"(^|\.)optim\.(SGD|AdamW)$", name) or len(call.args) != 1:
            continue
        kws = {k.arg for k in call.keywords}
        if None in kws or not kws <= allowed[kind] or isinstance(call.args[0], (ast.List, ast.Dict, ast.ListComp)):
            continue
        if len(re.findall(r"\boptim\.", text)) != 1:
            continue  # schedulers or a second optimizer still build torch.optim objects
        uses = [n for n in ast.walk(src.trees[rel]) if isinstance(n, ast.Name) and n.id == var]
        attrs = [n for n in ast.walk(src.trees[rel]) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                 and n.value.id == var]
        if len(uses) != len(attrs) + 1 or any(a.attr not in ("zero_grad", "step", "param_groups") for a in attrs):
            continue  # the optimizer escapes (a scheduler, a state_dict): keep torch.optim
        helper = "_PlainSGD" if kind == "SGD" else "_PlainAdamW"
        rw = Rewriter(src)
        if not insert_helper(rw, src, rel, helper, _snippets.PLAIN_SGD if kind == "SGD" else _snippets.PLAIN_ADAMW):
            continue
        rw.replace_node(rel, call.func, helper)
        yield cand(r, rw.edits(),
                    f"replaced {name}({kwargs_text(src, rel, call)}) with {helper}, a short class making the same "
                    f"update{' (no Nesterov, no dampening)' if kind == 'SGD' else ''}, so no torch.optim optimizer is "
                    "constructed and torch._dynamo is never imported",
                    "the same training curve with about a second less start-up on the CPU")


@rewrite("sgd-nesterov", "optimization", ["quality"])
def sgd_nesterov(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        for _, call, _ in optimizers(src, rel):
            kw = {k.arg: k.value for k in call.keywords}
            if not (dotted(call.func) or "").endswith("optim.SGD") or "momentum" not in kw or "nesterov" in kw:
                continue
            _, mom = resolve(src, rel, kw["momentum"])
            if not mom:
                continue
            text = src.segment(rel, call)
            inner = text[:-1].rstrip()
            new = inner + (" nesterov=True)" if inner.endswith(",") else ", nesterov=True)")
            yield cand(sgd_nesterov, Rewriter(src).replace_node(rel, call, new).edits(),
                        f"switched {dotted(call.func)} (momentum {show(mom)}) to Nesterov momentum (nesterov=True)",
                        "slightly faster convergence at the same cost per step")


@rewrite("grad-clip", "optimization", ["stability", "quality"])
def grad_clip(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        if re.search(r"clip_grad|GRAD_CLIP", src.texts[rel], re.I) or not imports_torch(src, rel):
            continue
        site = step_site(src, rel)
        if site is None:
            continue
        stmt, model = site
        indent = src.indent_of(rel, stmt.lineno)
        line = f"{indent}torch.nn.utils.clip_grad_norm_({model}.parameters(), {CLIP_NORM})\n"
        yield cand(grad_clip, Rewriter(src).insert_before_line(rel, stmt.lineno, line).edits(),
                    f"clip the gradient norm of {model}'s parameters to {CLIP_NORM} before the optimizer step "
                    f"({rel} line {stmt.lineno})",
                    "no divergence from rare large gradients; lets a higher learning rate survive")
        return


# ----- systems ----------------------------------------------------------------------------------
@rewrite("bf16-autocast", "systems", ["faster"])
def bf16_autocast(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if re.search(r"autocast|bfloat16|float16|\.half\(\)", text) or not imports_torch(src, rel):
            continue
        for model in model_names(src, rel):
            found = training_step(src, rel, model)
            if found is None:
                continue
            body, i, j, _ = found
            header = f"with torch.autocast(device_type=next({model}.parameters()).device.type, dtype=torch.bfloat16):"
            start, end, new = wrap_lines(src, rel, body[i], body[j], header)
            lines = f"lines {body[i].lineno}-{body[j].end_lineno}" if body[j].end_lineno != body[i].lineno \
                else f"line {body[i].lineno}"
            yield cand(bf16_autocast, Rewriter(src).replace(rel, start, end, new).edits(),
                        f"run the forward pass and loss ({rel} {lines}) under torch.autocast with bfloat16",
                        "faster matrix products where bf16 is native (GPUs, recent CPUs), at a small precision cost")
            return


@rewrite("channels-last", "systems", ["faster"])
def channels_last(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        if "Conv2d" not in src.all_text or "channels_last" in src.texts[rel]:
            continue
        for model in model_names(src, rel):
            rw = insert_after_model(src, rel, model, f"{model} = {model}.to(memory_format=torch.channels_last)")
            if rw is not None:
                yield cand(channels_last, rw.edits(), f"convert {model} to the channels_last memory format",
                            "faster convolutions on tensor cores")
                return


@rewrite("compile-model", "systems", ["faster"])
def compile_model(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if not re.search(r"\bcuda\b", text) or re.search(r"torch\.compile|jit\.(script|trace)|COMPILE", text, re.I):
            continue
        for model in model_names(src, rel):
            rw = insert_after_model(src, rel, model, f"{model} = torch.compile({model})")
            if rw is not None:
                yield cand(compile_model, rw.edits(), f"wrap {model} in torch.compile",
                            "fused kernels and fewer launches: faster steps after a one-off compile")
                return


@rewrite("tf32-matmul", "systems", ["faster"])
def tf32_matmul(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if not re.search(r"\bcuda\b", text) or re.search(r"allow_tf32|float32_matmul_precision", text):
            continue
        line = src.end_of_imports(rel)
        if line is None or line >= len(src._line_starts[rel]) - 1 or not imports_torch(src, rel):
            continue
        code = "torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for fp32 matmuls\n" \
               "torch.backends.cudnn.allow_tf32 = True\n"
        yield cand(tf32_matmul, Rewriter(src).insert_before_line(rel, line + 1, code).edits(),
                    "allow TF32 tensor cores for fp32 matmuls and convolutions",
                    "faster fp32 matrix products at about bf16-level mantissa precision")
        return


