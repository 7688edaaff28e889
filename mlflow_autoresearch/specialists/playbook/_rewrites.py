"""Program rewrites: moves that change the structure of the training program, found by matching its AST.

Each rewrite is a function from the parent's :class:`Source` to candidates;
it returns nothing when its precondition (the pattern it rewrites is present
and the change is not already made) does not hold.  The helper code some
rewrites insert is kept beside them, as text, in :mod:`._snippets`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from mlflow_autoresearch.specialists.playbook import _snippets
from mlflow_autoresearch.specialists.playbook._catalogue import Candidate, Rewrite, rewrite
from mlflow_autoresearch.specialists.playbook._source import Rewriter, Setting, Source, dotted, format_number, show

ADAM_LR_PER_SGD_LR = 0.15  # AdamW wants a learning rate roughly 5-10x below momentum SGD's
ADAM_LR_RANGE = (3e-4, 3e-3)
ADAMW_DECOUPLED_WD = 0.01
SMOOTHING = 0.1
CLIP_NORM = 1.0


def _cand(r: Rewrite, edits, what: str, expect: str, changes=(), enables_cut: bool = False) -> Candidate:
    return Candidate(r.id, r.family, r.effects, edits, what, expect, True, r.also, tuple(changes), enables_cut)


def _functional(src: Source, rel: str) -> str:
    """How the file names torch.nn.functional."""
    m = re.search(r"^import torch\.nn\.functional as (\w+)", src.texts[rel], re.M)
    return m.group(1) if m else "torch.nn.functional"


def _imports_torch(src: Source, rel: str) -> bool:
    return bool(re.search(r"^import torch\b", src.texts[rel], re.M))


# ----- shared matchers -------------------------------------------------------------------
def _optimizers(src: Source, rel: str) -> Iterator[tuple[ast.Assign, ast.Call, str]]:
    """``opt = torch.optim.X(...)`` (or a playbook plain optimizer): statement, call, variable."""
    for node in ast.walk(src.trees[rel]):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call)):
            name = dotted(node.value.func) or ""
            if re.search(r"(^|\.)optim\.\w+$|^_Plain\w+$", name):
                yield node, node.value, node.targets[0].id


def _model_var(call: ast.Call) -> str | None:
    """``X`` when the optimizer's first argument is ``X.parameters()``."""
    if call.args and isinstance(call.args[0], ast.Call) and isinstance(call.args[0].func, ast.Attribute):
        f = call.args[0].func
        if f.attr == "parameters" and isinstance(f.value, ast.Name):
            return f.value.id
    return None


def _resolve(src: Source, rel: str, node: ast.AST) -> tuple[Setting | None, float | None]:
    """A keyword's value: a literal, or a module constant that holds one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return None, float(node.value)
    if isinstance(node, ast.Name):
        s = src.setting_named(rel, node.id)
        if s is not None and not isinstance(s.value, tuple) and not s.is_bool:
            return s, float(s.value)  # type: ignore[arg-type]
    return None, None


def _training_step(src: Source, rel: str, model: str) -> tuple[list[ast.stmt], int, int, ast.Call] | None:
    """The innermost loop body that calls ``model(...)`` and assigns a loss: (body, first, last, model call)."""
    best = None
    for loop in ast.walk(src.trees[rel]):
        if not isinstance(loop, (ast.For, ast.While)):
            continue
        body = loop.body
        first = call = None
        for i, stmt in enumerate(body):
            if isinstance(stmt, (ast.For, ast.While, ast.With, ast.If)):
                if first is not None:
                    break
                continue
            calls = [n for n in ast.walk(stmt) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                     and n.func.id == model]
            if first is None and calls:
                first, call = i, calls[0]
            if first is not None and isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and "loss" in t.id for t in stmt.targets):
                best = (body, first, i, call)
                break
    return best  # ast.walk visits outer loops first: the last match is the innermost


def _insert_helper(rw: Rewriter, src: Source, rel: str, name: str, code: str) -> bool:
    """Insert a helper before the first top-level def/class, once."""
    if re.search(rf"^(def|class) {name}\b", src.texts[rel], re.M):
        return True
    line = src.first_toplevel_def(rel)
    if line is None:
        return False
    rw.insert_before_line(rel, line, code.rstrip("\n") + "\n\n\n")
    return True


def _wrap_lines(src: Source, rel: str, first: ast.stmt, last: ast.stmt, header: str) -> tuple[int, int, str]:
    """Span and text that put statements ``first..last`` inside ``header`` (a with-statement)."""
    start = src.line_start(rel, first.lineno)
    end = src.line_start(rel, last.end_lineno + 1) if last.end_lineno < len(src._line_starts[rel]) - 1 \
        else len(src.texts[rel])
    indent = src.indent_of(rel, first.lineno)
    block = src.texts[rel][start:end]
    inner = "".join(("    " + ln) if ln.strip() else ln for ln in block.splitlines(keepends=True))
    if not inner.endswith("\n"):
        inner += "\n"
    return start, end, f"{indent}{header}\n{inner}"


def _kwargs_text(src: Source, rel: str, call: ast.Call) -> str:
    parts = []
    for kw in call.keywords:
        s, v = _resolve(src, rel, kw.value)
        parts.append(f"{kw.arg}={show(v) if v is not None else src.segment(rel, kw.value)}")
    return ", ".join(parts)


# ----- optimization -------------------------------------------------------------------------
@rewrite("sgd-to-adamw", "optimization", ["quality"])
def sgd_to_adamw(src: Source) -> Iterator[Candidate]:
    r = sgd_to_adamw
    for rel in src.texts:
        for _, call, _ in _optimizers(src, rel):
            name = dotted(call.func) or ""
            if not (name.endswith("optim.SGD") or name == "_PlainSGD") or len(call.args) != 1:
                continue
            kw = {k.arg: k.value for k in call.keywords}
            if None in kw or "lr" not in kw or isinstance(call.args[0], (ast.List, ast.Dict)):
                continue
            lr_set, lr = _resolve(src, rel, kw["lr"])
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
            wd_set, _ = _resolve(src, rel, kw["weight_decay"]) if "weight_decay" in kw else (None, None)
            if wd_set is not None and src.name_uses(rel, wd_set.name) == 2:  # defined once, used only here
                rw.set_literal(wd_set, (ADAMW_DECOUPLED_WD,))
                changes.append((wd_set.label, wd_set.value, ADAMW_DECOUPLED_WD))
                args.append(f"weight_decay={wd_set.name}")
            else:
                args.append(f"weight_decay={ADAMW_DECOUPLED_WD}")
            plain = name == "_PlainSGD"
            func = "_PlainAdamW" if plain else name[: -len("SGD")] + "AdamW"
            if plain and not _insert_helper(rw, src, rel, "_PlainAdamW", _snippets.PLAIN_ADAMW):
                continue
            rw.replace_node(rel, call, f"{func}({', '.join(args)})")
            old = f"{name}({_kwargs_text(src, rel, call)})"
            new = f"{func}(lr={show(new_lr)}, weight_decay={ADAMW_DECOUPLED_WD})"
            consts = ", ".join(f"{label} {show(o)} -> {show(n)}" for label, o, n in changes)
            yield _cand(r, rw.edits(), f"replaced {old} with {new}" + (f" ({consts})" if consts else ""),
                        "AdamW reaches the same accuracy in fewer epochs than momentum SGD on a small net",
                        changes, enables_cut=True)


@rewrite("plain-optimizer", "systems", ["faster"])
def plain_optimizer(src: Source) -> Iterator[Candidate]:
    """torch.optim.SGD/AdamW -> the same update in a small class: no torch.optim optimizer is built."""
    r = plain_optimizer
    allowed = {"SGD": {"lr", "momentum", "weight_decay"}, "AdamW": {"lr", "betas", "eps", "weight_decay"}}
    for rel in src.texts:
        text = src.texts[rel]
        opts = list(_optimizers(src, rel))
        if len(opts) != 1 or not _imports_torch(src, rel):
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
        if not _insert_helper(rw, src, rel, helper, _snippets.PLAIN_SGD if kind == "SGD" else _snippets.PLAIN_ADAMW):
            continue
        rw.replace_node(rel, call.func, helper)
        yield _cand(r, rw.edits(),
                    f"replaced {name}({_kwargs_text(src, rel, call)}) with {helper}, a short class making the same "
                    f"update{' (no Nesterov, no dampening)' if kind == 'SGD' else ''}, so no torch.optim optimizer is "
                    "constructed and torch._dynamo is never imported",
                    "the same training curve with about a second less start-up on the CPU")


@rewrite("sgd-nesterov", "optimization", ["quality"])
def sgd_nesterov(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        for _, call, _ in _optimizers(src, rel):
            kw = {k.arg: k.value for k in call.keywords}
            if not (dotted(call.func) or "").endswith("optim.SGD") or "momentum" not in kw or "nesterov" in kw:
                continue
            _, mom = _resolve(src, rel, kw["momentum"])
            if not mom:
                continue
            text = src.segment(rel, call)
            inner = text[:-1].rstrip()
            new = inner + (" nesterov=True)" if inner.endswith(",") else ", nesterov=True)")
            yield _cand(sgd_nesterov, Rewriter(src).replace_node(rel, call, new).edits(),
                        f"switched {dotted(call.func)} (momentum {show(mom)}) to Nesterov momentum (nesterov=True)",
                        "slightly faster convergence at the same cost per step")


def _step_site(src: Source, rel: str) -> tuple[ast.stmt, str] | None:
    """Where the optimizers step: ``opt.step()``, or ``for opt in opts: opt.step()``; and the model variable."""
    opt_vars = {var for _, _, var in _optimizers(src, rel)}
    models = [m for _, call, _ in _optimizers(src, rel) if (m := _model_var(call))]
    zero = [dotted(n.func)[: -len(".zero_grad")] for n in ast.walk(src.trees[rel]) if isinstance(n, ast.Call)
            and (dotted(n.func) or "").endswith(".zero_grad") and dotted(n.func).count(".") == 1]
    model = next(iter(models), None) or next((z for z in zero if z not in opt_vars), None)
    if model is None:
        return None
    sites = []
    for node in ast.walk(src.trees[rel]):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                and dotted(node.value.func) in {f"{v}.step" for v in opt_vars}:
            sites.append(node)
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and len(node.body) == 1:
            inner = node.body[0]
            if isinstance(inner, ast.Expr) and isinstance(inner.value, ast.Call) \
                    and dotted(inner.value.func) == f"{node.target.id}.step":
                sites.append(node)
    return (sites[0], model) if len(sites) == 1 else None


@rewrite("grad-clip", "optimization", ["stability", "quality"])
def grad_clip(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        if re.search(r"clip_grad|GRAD_CLIP", src.texts[rel], re.I) or not _imports_torch(src, rel):
            continue
        site = _step_site(src, rel)
        if site is None:
            continue
        stmt, model = site
        indent = src.indent_of(rel, stmt.lineno)
        line = f"{indent}torch.nn.utils.clip_grad_norm_({model}.parameters(), {CLIP_NORM})\n"
        yield _cand(grad_clip, Rewriter(src).insert_before_line(rel, stmt.lineno, line).edits(),
                    f"clip the gradient norm of {model}'s parameters to {CLIP_NORM} before the optimizer step "
                    f"({rel} line {stmt.lineno})",
                    "no divergence from rare large gradients; lets a higher learning rate survive")
        return


# ----- systems ----------------------------------------------------------------------------------
def _model_names(src: Source, rel: str) -> list[str]:
    names = [m for _, call, _ in _optimizers(src, rel) if (m := _model_var(call))]
    return names or ["model"]


@rewrite("bf16-autocast", "systems", ["faster"])
def bf16_autocast(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if re.search(r"autocast|bfloat16|float16|\.half\(\)", text) or not _imports_torch(src, rel):
            continue
        for model in _model_names(src, rel):
            found = _training_step(src, rel, model)
            if found is None:
                continue
            body, i, j, _ = found
            header = 'with torch.autocast(device_type="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16):'
            start, end, new = _wrap_lines(src, rel, body[i], body[j], header)
            lines = f"lines {body[i].lineno}-{body[j].end_lineno}" if body[j].end_lineno != body[i].lineno \
                else f"line {body[i].lineno}"
            yield _cand(bf16_autocast, Rewriter(src).replace(rel, start, end, new).edits(),
                        f"run the forward pass and loss ({rel} {lines}) under torch.autocast with bfloat16",
                        "faster matrix products where bf16 is native (GPUs, recent CPUs), at a small precision cost")
            return


def _insert_after_model(src: Source, rel: str, model: str, line_text: str) -> Rewriter | None:
    for node in ast.walk(src.trees[rel]):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == model for t in node.targets) \
                and isinstance(node.value, ast.Call):
            indent = src.indent_of(rel, node.lineno)
            nxt = node.end_lineno + 1
            if nxt > len(src._line_starts[rel]) - 1:
                return None
            return Rewriter(src).insert_before_line(rel, nxt, f"{indent}{line_text}\n")
    return None


@rewrite("channels-last", "systems", ["faster"])
def channels_last(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        if "Conv2d" not in src.all_text or "channels_last" in src.texts[rel]:
            continue
        for model in _model_names(src, rel):
            rw = _insert_after_model(src, rel, model, f"{model} = {model}.to(memory_format=torch.channels_last)")
            if rw is not None:
                yield _cand(channels_last, rw.edits(), f"convert {model} to the channels_last memory format",
                            "faster convolutions on tensor cores")
                return


@rewrite("compile-model", "systems", ["faster"])
def compile_model(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if not re.search(r"\bcuda\b", text) or re.search(r"torch\.compile|jit\.(script|trace)|COMPILE", text, re.I):
            continue
        for model in _model_names(src, rel):
            rw = _insert_after_model(src, rel, model, f"{model} = torch.compile({model})")
            if rw is not None:
                yield _cand(compile_model, rw.edits(), f"wrap {model} in torch.compile",
                            "fused kernels and fewer launches: faster steps after a one-off compile")
                return


@rewrite("tf32-matmul", "systems", ["faster"])
def tf32_matmul(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if not re.search(r"\bcuda\b", text) or re.search(r"allow_tf32|float32_matmul_precision", text):
            continue
        line = src.end_of_imports(rel)
        if line is None or line >= len(src._line_starts[rel]) - 1 or not _imports_torch(src, rel):
            continue
        code = "torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for fp32 matmuls\n" \
               "torch.backends.cudnn.allow_tf32 = True\n"
        yield _cand(tf32_matmul, Rewriter(src).insert_before_line(rel, line + 1, code).edits(),
                    "allow TF32 tensor cores for fp32 matmuls and convolutions",
                    "faster fp32 matrix products at about bf16-level mantissa precision")
        return


# ----- architecture -------------------------------------------------------------------------------
def _attention_blocks(src: Source, rel: str) -> Iterator[tuple[list[ast.stmt], int, int, str, str, str, str, bool]]:
    """Manual attention: ``att = q @ k.transpose(..) * scale; [mask/softmax/dropout on att]; y = att @ v``."""
    for fn in ast.walk(src.trees[rel]):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = fn.body
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
                continue
            att = stmt.targets[0].id
            mm = next((n for n in ast.walk(stmt.value) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult)),
                      None)
            if mm is None or not isinstance(mm.left, ast.Name):
                continue
            right = src.segment(rel, mm.right)
            km = re.fullmatch(r"(\w+)\.(transpose\(-2, ?-1\)|mT)", right)
            if km is None:
                continue
            q, k = mm.left.id, km.group(1)
            causal, softmax = False, "softmax" in src.segment(rel, stmt.value)
            for j in range(i + 1, min(i + 6, len(body))):
                s = body[j]
                if not (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)):
                    break
                seg = src.segment(rel, s.value)
                if s.targets[0].id == att and re.search(r"softmax|masked_fill|dropout|tril|where", seg):
                    causal = causal or bool(re.search(r"masked_fill|tril|-inf", seg))
                    softmax = softmax or "softmax" in seg
                    continue
                v = s.value
                if (softmax and isinstance(v, ast.BinOp) and isinstance(v.op, ast.MatMult)
                        and isinstance(v.left, ast.Name) and v.left.id == att and isinstance(v.right, ast.Name)):
                    yield body, i, j, q, k, v.right.id, s.targets[0].id, causal
                break


@rewrite("sdpa-attention", "architecture", ["faster"], also=["systems"])
def sdpa_attention(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        F = _functional(src, rel)
        for body, i, j, q, k, v, y, causal in _attention_blocks(src, rel):
            start = src.line_start(rel, body[i].lineno)
            end = src.line_start(rel, body[j].end_lineno + 1)
            indent = src.indent_of(rel, body[i].lineno)
            new = f"{indent}{y} = {F}.scaled_dot_product_attention({q}, {k}, {v}, is_causal={causal})\n"
            yield _cand(sdpa_attention, Rewriter(src).replace(rel, start, end, new).edits(),
                        f"replaced the hand-written attention ({rel} lines {body[i].lineno}-{body[j].end_lineno}: "
                        f"{q} @ {k}^T, softmax, @ {v}) with {F}.scaled_dot_product_attention(is_causal={causal})",
                        "the fused (flash / memory-efficient) kernel: less memory and time per step, same math "
                        "up to the attention dropout")


@rewrite("qk-norm", "architecture", ["stability", "quality"])
def qk_norm(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        F = _functional(src, rel)
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
            yield _cand(qk_norm, Rewriter(src).insert_before_line(rel, stmt.lineno, line).edits(),
                        f"RMS-normalize queries and keys ({q}, {k}) before scaled_dot_product_attention",
                        "bounded attention logits: steadier training at higher learning rates")
            return


def _activation_swap(src: Source, frm: str, to: str) -> tuple[Rewriter, int] | None:
    rw, n = Rewriter(src), 0
    for rel in src.texts:
        for node in ast.walk(src.trees[rel]):
            if not isinstance(node, ast.Call):
                continue
            name = dotted(node.func) or ""
            module_form = {"relu": "ReLU", "gelu": "GELU"}
            if name.endswith("nn." + module_form[frm]) and not node.args and not node.keywords:
                rw.replace_node(rel, node.func, name[: -len(module_form[frm])] + module_form[to])
                n += 1
            elif re.fullmatch(r"(F|torch\.nn\.functional|nn\.functional)\." + frm, name) and len(node.args) == 1 \
                    and not node.keywords:
                rw.replace_node(rel, node.func, name[: -len(frm)] + to)
                n += 1
    return (rw, n) if n else None


@rewrite("relu-to-gelu", "architecture", ["quality", "slower"])
def relu_to_gelu(src: Source) -> Iterator[Candidate]:
    found = _activation_swap(src, "relu", "gelu")
    if found:
        yield _cand(relu_to_gelu, found[0].edits(), f"replaced ReLU with GELU ({found[1]} place(s))",
                    "smoother gradients: a little more accuracy per epoch at a little more compute")


@rewrite("gelu-to-relu", "architecture", ["faster"])
def gelu_to_relu(src: Source) -> Iterator[Candidate]:
    found = _activation_swap(src, "gelu", "relu")
    if found:
        yield _cand(gelu_to_relu, found[0].edits(), f"replaced GELU with ReLU ({found[1]} place(s))",
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
            yield _cand(add_layernorm, rw.edits(),
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
            yield _cand(add_label_smoothing, rw.edits(), f"added label_smoothing={SMOOTHING} to the cross-entropy loss",
                        "better-calibrated logits and a little test accuracy")


def _model_input(src: Source, rel: str) -> tuple[ast.Call, ast.AST] | None:
    for model in _model_names(src, rel):
        found = _training_step(src, rel, model)
        if found and len(found[3].args) == 1:
            return found[3], found[3].args[0]
    return None


@rewrite("shift-augment", "data", ["quality", "slower"])
def shift_augment(src: Source) -> Iterator[Candidate]:
    """Flat 8x8 images (64 inputs): shift each batch by up to one pixel."""
    for rel in src.texts:
        text = src.texts[rel]
        if not re.search(r"nn\.Linear\(\s*64\b|\bwidth\s*=\s*64\b", text) or "_shift_pixels" in text:
            continue
        found = _model_input(src, rel)
        if found is None or not _imports_torch(src, rel):
            continue
        rw = Rewriter(src)
        if not _insert_helper(rw, src, rel, "_shift_pixels", _snippets.SHIFT_PIXELS.replace("F.", _functional(src, rel) + ".")):
            continue
        arg = src.segment(rel, found[1])
        rw.replace_node(rel, found[1], f"_shift_pixels({arg})")
        yield _cand(shift_augment, rw.edits(),
                    f"augment the training batches: model input {arg} -> _shift_pixels({arg}), a random shift of the "
                    "8x8 images by up to one pixel per batch (zero fill)",
                    "better test accuracy per epoch (digits are shift-invariant) for a little time per step")


@rewrite("random-flip", "data", ["quality"])
def random_flip(src: Source) -> Iterator[Candidate]:
    for rel in src.texts:
        text = src.texts[rel]
        if "Conv2d" not in src.all_text or re.search(r"flip|FLIP", text):
            continue
        found = _model_input(src, rel)
        if found is None or not _imports_torch(src, rel):
            continue
        rw = Rewriter(src)
        if not _insert_helper(rw, src, rel, "_random_flip", _snippets.RANDOM_FLIP):
            continue
        arg = src.segment(rel, found[1])
        rw.replace_node(rel, found[1], f"_random_flip({arg})")
        yield _cand(random_flip, rw.edits(),
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
            yield _cand(center_inputs, Rewriter(src).replace(rel, m.start(), m.end(), new).edits(),
                        f"rescaled the inputs from [0, 1] to [-1, 1]: {m.group(0)} -> {new}",
                        "zero-centred inputs: better-conditioned first layer, faster convergence")
            return


# ----- quantization -------------------------------------------------------------------------------------
INT6_LEVEL = 31


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
            yield _cand(int6_levels, rw.edits(),
                        f"quantize to {2 * INT6_LEVEL + 1} levels (+-{INT6_LEVEL}, 6-bit) instead of 255 (+-127) in "
                        f"{fn.name} ({len(consts)} constants, {len(negs)} of them negated); still stored as int8",
                        "the compressor packs the smaller alphabet tighter: a smaller artifact for some loss of quality")
            return


REWRITES: tuple[Rewrite, ...] = (
    sgd_to_adamw, plain_optimizer, sgd_nesterov, grad_clip,
    bf16_autocast, channels_last, compile_model, tf32_matmul,
    sdpa_attention, qk_norm, relu_to_gelu, gelu_to_relu, add_layernorm,
    center_inputs, add_label_smoothing, shift_augment, random_flip,
    int6_levels,
)
