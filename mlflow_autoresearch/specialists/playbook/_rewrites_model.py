"""Program rewrites of the model and its data: attention path, activations, norms, augmentation, quantization."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from mlflow_autoresearch.specialists.playbook import _snippets
from mlflow_autoresearch.specialists.playbook._catalogue import Candidate, rewrite
from mlflow_autoresearch.specialists.playbook._matchers import (
    activation_swap,
    attention_blocks,
    cand,
    functional,
    imports_torch,
    insert_helper,
    model_input,
)
from mlflow_autoresearch.specialists.playbook._source import Rewriter, Source

SMOOTHING = 0.1
INT6_LEVEL = 31
Z_LOSS = 1e-4


# ----- architecture -------------------------------------------------------------------------------
@rewrite("sdpa-attention", "architecture", ["faster"], also=["systems"])
def sdpa_attention(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        F = functional(src, rel)
        for body, i, j, q, k, v, y, causal in attention_blocks(src, rel):
            start = src.line_start(rel, body[i].lineno)
            end = src.line_start(rel, body[j].end_lineno + 1)
            indent = src.indent_of(rel, body[i].lineno)
            new = f"{indent}{y} = {F}.scaled_dot_product_attention({q}, {k}, {v}, is_causal={causal})\n"
            yield cand(sdpa_attention, Rewriter(src).replace(rel, start, end, new).edits(),
                        f"replaced the hand-written attention ({rel} lines {body[i].lineno}-{body[j].end_lineno}: "
                        f"{q} @ {k}^T, softmax, @ {v}) with {F}.scaled_dot_product_attention(is_causal={causal})",
                        "the fused (flash / memory-efficient) kernel: less memory and time per step, same math "
                        "up to the attention dropout")


@rewrite("qk-norm", "architecture", ["stability", "quality"])
def qk_norm(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        F = functional(src, rel)
        if re.search(r"q_norm|qk_norm", text, re.I):
            continue
        for call in src.calls(rel, "scaled_dot_product_attention"):
            if len(call.args) < 3 or not all(isinstance(a, ast.Name) for a in call.args[:2]):
                continue
            q, k = call.args[0].id, call.args[1].id  # type: ignore[attr-defined]
            if re.search(rf"^\s*{q}\b[^=\n]*=[^\n]*norm\(", text, re.M):
                continue  # the queries already pass through a norm
            stmt = next(s for s in ast.walk(src.trees[rel]) if isinstance(s, ast.stmt) and s.lineno == call.lineno
                        and not isinstance(s, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.With)))
            indent = src.indent_of(rel, stmt.lineno)
            line = f"{indent}{q}, {k} = {F}.rms_norm({q}, ({q}.size(-1),)), {F}.rms_norm({k}, ({k}.size(-1),))  # QK-norm\n"
            yield cand(qk_norm, Rewriter(src).insert_before_line(rel, stmt.lineno, line).edits(),
                        f"RMS-normalize queries and keys ({q}, {k}) before scaled_dot_product_attention",
                        "bounded attention logits: steadier training at higher learning rates")
            return


@rewrite("relu-to-gelu", "architecture", ["quality", "slower"])
def relu_to_gelu(src: Source) -> Iterator[Candidate]:
    found = activation_swap(src, "relu", "gelu")
    if found:
        yield cand(relu_to_gelu, found[0].edits(), f"replaced ReLU with GELU ({found[1]} place(s))",
                    "smoother gradients: a little more accuracy per epoch at a little more compute")


@rewrite("gelu-to-relu", "architecture", ["faster"])
def gelu_to_relu(src: Source) -> Iterator[Candidate]:
    found = activation_swap(src, "gelu", "relu")
    if found:
        yield cand(gelu_to_relu, found[0].edits(), f"replaced GELU with ReLU ({found[1]} place(s))",
                    "a cheaper activation: slightly faster steps at a small accuracy cost")


@rewrite("add-layernorm", "architecture", ["quality", "stability", "slower"])
def add_layernorm(src: Source) -> Iterator[Candidate]:
    pattern = re.compile(r"nn\.Linear\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*\)(,\s*)nn\.(ReLU|GELU)\(\)")
    for rel in src.texts:
        text = src.texts[rel]
        if re.search(r"LayerNorm|BatchNorm|RMSNorm|rms_norm", text):
            continue
        rw, n = Rewriter(src), 0
        for m in pattern.finditer(text):
            rw.replace(rel, m.start(3), m.start(3), f", nn.LayerNorm({m.group(2)})")
            n += 1
        if n:
            yield cand(add_layernorm, rw.edits(),
                        f"inserted nn.LayerNorm after each hidden nn.Linear, before its activation ({n} place(s))",
                        "better-conditioned hidden layers: faster, steadier convergence")


# ----- data -------------------------------------------------------------------------------------------
@rewrite("add-label-smoothing", "data", ["quality"], also=["regularization"])
def add_label_smoothing(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        rw, n = Rewriter(src), 0
        for call in src.calls(rel, "cross_entropy", "CrossEntropyLoss"):
            if any(k.arg == "label_smoothing" for k in call.keywords) or any(k.arg is None for k in call.keywords):
                continue
            if re.search(r"\bLABEL_SMOOTHING\b", src.texts[rel], re.I):
                continue
            text = src.segment(rel, call)
            inner = text[:-1].rstrip()
            sep = "" if inner.endswith("(") else (" " if inner.endswith(",") else ", ")
            rw.replace_node(rel, call, f"{inner}{sep}label_smoothing={SMOOTHING})")
            n += 1
        if n:
            yield cand(add_label_smoothing, rw.edits(), f"added label_smoothing={SMOOTHING} to the cross-entropy loss",
                        "better-calibrated logits and a little test accuracy")


@rewrite("shift-augment", "data", ["quality", "slower"])
def shift_augment(src: Source) -> Iterator[Candidate]:
    """Flat 8x8 images (64 inputs): shift each batch by up to one pixel."""
    for rel in src.texts:
        text = src.texts[rel]
        if not re.search(r"nn\.Linear\(\s*64\b|\bwidth\s*=\s*64\b", text) or "_shift_pixels" in text:
            continue
        found = model_input(src, rel)
        if found is None or not imports_torch(src, rel):
            continue
        rw = Rewriter(src)
        if not insert_helper(rw, src, rel, "_shift_pixels", _snippets.SHIFT_PIXELS.replace("F.", functional(src, rel) + ".")):
            continue
        arg = src.segment(rel, found[1])
        rw.replace_node(rel, found[1], f"_shift_pixels({arg})")
        yield cand(shift_augment, rw.edits(),
                    f"augment the training batches: model input {arg} -> _shift_pixels({arg}), a random shift of the "
                    "8x8 images by up to one pixel per batch (zero fill)",
                    "better test accuracy per epoch (digits are shift-invariant) for a little time per step")


@rewrite("random-flip", "data", ["quality"])
def random_flip(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if "Conv2d" not in src.all_text or re.search(r"flip|FLIP", text):
            continue
        found = model_input(src, rel)
        if found is None or not imports_torch(src, rel):
            continue
        rw = Rewriter(src)
        if not insert_helper(rw, src, rel, "_random_flip", _snippets.RANDOM_FLIP):
            continue
        arg = src.segment(rel, found[1])
        rw.replace_node(rel, found[1], f"_random_flip({arg})")
        yield cand(random_flip, rw.edits(),
                    f"augment the training batches with random horizontal flips: {arg} -> _random_flip({arg})",
                    "better generalization per epoch on mirror-symmetric images")


@rewrite("center-inputs", "data", ["quality"])
def center_inputs(src: Source) -> Iterator[Candidate]:
    pattern = re.compile(r"\(\s*([A-Za-z_][\w.]*)\s*/\s*(16|255)(?:\.0*)?\s*\)")
    for rel in src.texts:
        for m in pattern.finditer(src.texts[rel]):
            x, scale = m.group(1), int(m.group(2))
            half = f"{scale / 2:g}" + (".0" if scale % 2 == 0 else "")
            new = f"({x} / {half} - 1.0)"
            yield cand(center_inputs, Rewriter(src).replace(rel, m.start(), m.end(), new).edits(),
                        f"rescaled the inputs from [0, 1] to [-1, 1]: {m.group(0)} -> {new}",
                        "zero-centred inputs: better-conditioned first layer, faster convergence")
            return


@rewrite("z-loss", "regularization", ["stability", "quality"], also=["data"])
def z_loss(src: Source) -> Iterator[Candidate]:
    """``loss = cross_entropy(logits..., y)`` -> ``+ Z_LOSS * logsumexp(logits)^2``: keeps the softmax normaliser near 0."""
    for rel in src.texts:
        if re.search(r"z_loss|logsumexp", src.texts[rel], re.I) or not imports_torch(src, rel):
            continue
        for call in src.calls(rel, "cross_entropy"):
            if not call.args:
                continue
            base = call.args[0]
            while isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) \
                    and base.func.attr in ("view", "reshape", "float", "flatten"):
                base = base.func.value
            if not isinstance(base, ast.Name):
                continue
            term = f"{Z_LOSS} * torch.logsumexp({base.id}.float(), dim=-1).pow(2).mean()"
            rw = Rewriter(src).replace_node(rel, call, f"{src.segment(rel, call)} + {term}")
            yield cand(z_loss, rw.edits(), f"added a z-loss to the cross-entropy ({rel} line {call.lineno}): + {term}",
                       "logits that stay normalised: steadier training with bf16 and high learning rates")
            return


# ----- quantization -------------------------------------------------------------------------------------
@rewrite("int6-levels", "quantization", ["smaller"])
def int6_levels(src: Source) -> Iterator[Candidate]:
    """An int8 quantizer (levels +-127) whose output is compressed: use +-31 (6-bit) levels instead."""
    for rel in src.texts:
        if not re.search(r"compress\(", src.texts[rel]):
            continue
        for fn in ast.walk(src.trees[rel]):
            if not isinstance(fn, ast.FunctionDef) or "quant" not in fn.name.lower():
                continue
            consts = [n for n in ast.walk(fn) if isinstance(n, ast.Constant) and not isinstance(n.value, bool)
                      and isinstance(n.value, (int, float)) and abs(n.value) == 127]
            negs = [n for n in ast.walk(fn) if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)
                    and isinstance(n.operand, ast.Constant) and n.operand in consts]
            if len(consts) < 2:
                continue
            rw = Rewriter(src)
            for n in consts:
                rw.replace_node(rel, n, str(INT6_LEVEL) + (".0" if isinstance(n.value, float) else ""))
            yield cand(int6_levels, rw.edits(),
                        f"quantize to {2 * INT6_LEVEL + 1} levels (+-{INT6_LEVEL}, 6-bit) instead of 255 (+-127) in "
                        f"{fn.name} ({len(consts)} constants, {len(negs)} of them negated); still stored as int8",
                        "the compressor packs the smaller alphabet tighter: a smaller artifact for some loss of quality")
            return


