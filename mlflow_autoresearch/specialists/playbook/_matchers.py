"""AST matchers and edit helpers shared by the program rewrites.

Each matcher reads a :class:`Source` and returns the nodes a rewrite needs
(the optimizer call, the training step, the model variable, hand-written
attention, ...) or None when the pattern is absent.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from mlflow_autoresearch.specialists.playbook._catalogue import Candidate, Rewrite
from mlflow_autoresearch.specialists.playbook._source import Rewriter, Setting, Source, dotted, show


def cand(r: Rewrite, edits, what: str, expect: str, changes=(), enables_cut: bool = False) -> Candidate:
    return Candidate(r.id, r.family, r.effects, edits, what, expect, True, r.also, tuple(changes), enables_cut)


def functional(src: Source, rel: str) -> str:
    """How the file names torch.nn.functional."""
    m = re.search(r"^import torch\.nn\.functional as (\w+)", src.texts[rel], re.M)
    return m.group(1) if m else "torch.nn.functional"


def imports_torch(src: Source, rel: str) -> bool:
    return bool(re.search(r"^import torch\b", src.texts[rel], re.M))


# ----- shared matchers -------------------------------------------------------------------
def optimizers(src: Source, rel: str) -> Iterator[tuple[ast.Assign, ast.Call, str]]:
    """``opt = torch.optim.X(...)`` (or a playbook plain optimizer): statement, call, variable."""
    for node in ast.walk(src.trees[rel]):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call)):
            name = dotted(node.value.func) or ""
            if re.search(r"(^|\.)optim\.\w+$|^_Plain\w+$", name):
                yield node, node.value, node.targets[0].id


def model_var(call: ast.Call) -> str | None:
    """``X`` when the optimizer's first argument is ``X.parameters()``."""
    if call.args and isinstance(call.args[0], ast.Call) and isinstance(call.args[0].func, ast.Attribute):
        f = call.args[0].func
        if f.attr == "parameters" and isinstance(f.value, ast.Name):
            return f.value.id
    return None


def resolve(src: Source, rel: str, node: ast.AST) -> tuple[Setting | None, float | None]:
    """A keyword's value: a literal, or a module constant that holds one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return None, float(node.value)
    if isinstance(node, ast.Name):
        s = src.setting_named(rel, node.id)
        if s is not None and not isinstance(s.value, tuple) and not s.is_bool:
            return s, float(s.value)  # type: ignore[arg-type]
    return None, None


def training_step(src: Source, rel: str, model: str) -> tuple[list[ast.stmt], int, int, ast.Call] | None:
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


def insert_helper(rw: Rewriter, src: Source, rel: str, name: str, code: str) -> bool:
    """Insert a helper before the first top-level def/class, once."""
    if re.search(rf"^(def|class) {name}\b", src.texts[rel], re.M):
        return True
    line = src.first_toplevel_def(rel)
    if line is None:
        return False
    rw.insert_before_line(rel, line, code.rstrip("\n") + "\n\n\n")
    return True


def wrap_lines(src: Source, rel: str, first: ast.stmt, last: ast.stmt, header: str) -> tuple[int, int, str]:
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


def kwargs_text(src: Source, rel: str, call: ast.Call) -> str:
    parts = []
    for kw in call.keywords:
        s, v = resolve(src, rel, kw.value)
        parts.append(f"{kw.arg}={show(v) if v is not None else src.segment(rel, kw.value)}")
    return ", ".join(parts)


def step_site(src: Source, rel: str) -> tuple[ast.stmt, str] | None:
    """Where the optimizers step: ``opt.step()``, or ``for opt in opts: opt.step()``; and the model variable."""
    opt_vars = {var for _, _, var in optimizers(src, rel)}
    models = [m for _, call, _ in optimizers(src, rel) if (m := model_var(call))]
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


def model_names(src: Source, rel: str) -> list[str]:
    names = [m for _, call, _ in optimizers(src, rel) if (m := model_var(call))]
    return names or ["model"]


def insert_after_model(src: Source, rel: str, model: str, line_text: str) -> Rewriter | None:
    for node in ast.walk(src.trees[rel]):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == model for t in node.targets) \
                and isinstance(node.value, ast.Call):
            indent = src.indent_of(rel, node.lineno)
            nxt = node.end_lineno + 1
            if nxt > len(src._line_starts[rel]) - 1:
                return None
            return Rewriter(src).insert_before_line(rel, nxt, f"{indent}{line_text}\n")
    return None


def model_input(src: Source, rel: str) -> tuple[ast.Call, ast.AST] | None:
    for model in model_names(src, rel):
        found = training_step(src, rel, model)
        if found and len(found[3].args) == 1:
            return found[3], found[3].args[0]
    return None


def attention_blocks(src: Source, rel: str) -> Iterator[tuple[list[ast.stmt], int, int, str, str, str, str, bool]]:
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


def activation_swap(src: Source, frm: str, to: str) -> tuple[Rewriter, int] | None:
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


