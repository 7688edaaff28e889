"""The offline backend: real catalogue, real recipes' code, real edit sessions and lineage stores.

Nothing is faked: proposals are made by the playbook on the code of the
shipped recipes, lineages are InMemoryStore trials with the evaluator's tags,
and the one slow test trains for real through the evaluator.
"""

from __future__ import annotations

import ast
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.lineage import InMemoryStore, Lineage, TrialRecord, code_digest, write_snapshot
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.specialists import ProposalContext, apply_edits, make_specialist, roster
from mlflow_autoresearch.specialists._offline import OfflineSpecialist, role_families
from mlflow_autoresearch.specialists._roles import builtin_roles
from mlflow_autoresearch.specialists.playbook import Source, candidates, catalogue
from mlflow_autoresearch.trial import create_trial, recipe_files

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.parent for p in (ROOT / "recipes").glob("*/recipe.yaml"))
DIGITS = ROOT / "recipes" / "digits-speedrun"


# ----- a lineage with the evaluator's facts ------------------------------------------------------
def record(store, recipe, files, *, parent=None, specialist="optimization", hypothesis="manual", outcome="ok",
           decision="keep", feedback="", near_miss=False, metrics=None) -> TrialRecord:
    """A finished trial as the evaluator and the policy would leave it."""
    t = create_trial(store, recipe, files, specialist=specialist, hypothesis=hypothesis, parent=parent,
                     parent_files=store.code(parent.run_id) if parent else None)
    return store.record_result(t.run_id, tags={
        S.OUTCOME: outcome, S.DECISION: decision, S.FEEDBACK: feedback or f"outcome: {outcome}",
        S.NEAR_MISS: "true" if near_miss else "false", S.SCORE_NAME: recipe.metric.name,
    }, metrics=metrics or {}, artifacts={})


@pytest.fixture
def digits():
    recipe = load_recipe(DIGITS)
    store = InMemoryStore()
    base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                  decision="baseline", metrics={"train_seconds": 6.0, "accuracy": 0.98})
    return recipe, store, base


def ctx_for(recipe, store, parent, role="optimization", **kw) -> ProposalContext:
    roles = {r.name: r for r in roster(recipe)} | builtin_roles()
    return ProposalContext(recipe=recipe, role=roles[role], parent=parent, parent_files=store.code(parent.run_id),
                           lineage=Lineage.load(store, recipe.metric.goal), store=store, **kw)


def edited(recipe, store, parent, old: str, new: str) -> dict[str, bytes]:
    files = store.code(parent.run_id)
    text = files["train.py"].decode()
    assert old in text
    return {**files, "train.py": text.replace(old, new, 1).encode()}


def constant(files, name: str) -> float:
    m = re.search(rf"^{name} = ([-\d.e]+)", files["train.py"].decode(), re.M)
    assert m, f"{name} not found"
    return float(m.group(1))


# ----- the catalogue on every shipped recipe ----------------------------------------------------------
@pytest.mark.parametrize("root", RECIPES, ids=lambda p: p.name)
def test_every_move_applies_parses_and_names_what_changed(root):
    recipe = load_recipe(root)
    files = recipe_files(recipe)
    found = candidates(Source(recipe, files))
    assert len(found) >= 8, f"only {len(found)} moves match {root.name}"
    for c in found:
        out = apply_edits(recipe, files, list(c.edits))  # raises if an edit does not apply or breaks syntax
        assert out != files, c.move
        for rel in recipe.editable:
            if rel.endswith(".py"):
                ast.parse(out[rel])
        h = c.hypothesis()
        assert h.startswith(f"{c.move}: ") and "; expect " in h
        for label, _, _ in c.changes:  # every number it changes is named
            assert label in h, (c.move, label)
        # the text each edit puts in is what the hypothesis talks about: no silent extra change
        assert all(e.file in recipe.editable for e in c.edits)


def test_argparse_defaults_are_settings_unless_the_command_passes_them(tmp_path):
    (tmp_path / "train.py").write_text(
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--epochs', type=int, default=20)\n"
        "p.add_argument('--lr', type=float, default=0.1)\nargs = p.parse_args()\nprint(f'loss: {args.lr}')\n")
    spec = {"name": "cli", "editable": ["train.py"], "command": "python train.py --epochs 20",
            "metric": {"name": "loss", "goal": "minimize"}, "limits": {"train_seconds": 10}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(spec))
    recipe = load_recipe(tmp_path)
    changed = {label for c in candidates(Source(recipe, recipe_files(recipe))) for label, _, _ in c.changes}
    assert "lr" in changed and "epochs" not in changed  # --epochs on the command line wins over its default


def test_digits_catalogue_has_program_rewrites_for_every_role():
    recipe = load_recipe(DIGITS)
    found = candidates(Source(recipe, recipe_files(recipe)))
    by_family: dict[str, set[str]] = {}
    for c in found:
        for f in c.families:
            by_family.setdefault(f, set()).add(c.move)
    assert {"sgd-to-adamw", "sgd-nesterov", "grad-clip", "fewer-epochs", "bigger-batch", "add-warmup"} <= \
        by_family["optimization"]
    assert {"narrower", "shallower", "relu-to-gelu", "add-layernorm"} <= by_family["architecture"]
    assert {"center-inputs", "shift-augment", "label-smoothing"} <= by_family["data"]
    assert {"plain-optimizer", "bf16-autocast", "more-threads"} <= by_family["systems"]
    structural = {c.move for c in found if c.structural}
    assert len(structural) >= 9  # not only constants


def test_cpu_code_never_gets_gpu_only_moves_even_after_autocast():
    recipe = load_recipe(DIGITS)
    files = recipe_files(recipe)
    auto = next(c for c in candidates(Source(recipe, files)) if c.move == "bf16-autocast")
    after = apply_edits(recipe, files, list(auto.edits))
    assert "with torch.autocast(device_type=next(model.parameters()).device.type" in after["train.py"].decode()
    moves = {c.move for c in candidates(Source(recipe, after))}
    assert not moves & {"tf32-matmul", "compile-model", "enable-compile", "channels-last", "bf16-autocast"}


def test_sgd_to_adamw_rewrites_the_call_and_fixes_the_learning_rate():
    recipe = load_recipe(DIGITS)
    files = recipe_files(recipe)
    c = next(c for c in candidates(Source(recipe, files)) if c.move == "sgd-to-adamw")
    out = apply_edits(recipe, files, list(c.edits))
    text = out["train.py"].decode()
    assert "torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)" in text
    assert "optim.SGD" not in text and constant(out, "LR") == 0.003 and constant(out, "WEIGHT_DECAY") == 0.01
    assert "SGD(lr=0.02, momentum=0.9" in c.what and "AdamW(lr=0.003" in c.what and "LR 0.02 -> 0.003" in c.what


@pytest.mark.slow
def test_plain_optimizer_makes_the_same_update_as_torch_sgd():
    """The systems rewrite claims the same update as torch.optim.SGD: check it on real tensors."""
    import torch

    from mlflow_autoresearch.specialists.playbook import _snippets

    ns: dict = {"torch": torch}
    exec(compile(_snippets.PLAIN_SGD + _snippets.PLAIN_ADAMW, "snippets", "exec"), ns)
    for plain, ref, kw in ((ns["_PlainSGD"], torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}),
                           (ns["_PlainAdamW"], torch.optim.AdamW, {"lr": 0.003, "weight_decay": 0.01})):
        torch.manual_seed(0)
        a = torch.nn.Linear(5, 3)
        b = torch.nn.Linear(5, 3)
        b.load_state_dict(a.state_dict())
        oa, ob = plain(a.parameters(), **kw), ref(b.parameters(), **kw)
        for step in range(5):
            x = torch.randn(8, 5)
            for m, o in ((a, oa), (b, ob)):
                o.param_groups[0]["lr"] = kw["lr"] * (1 - step / 10)
                o.zero_grad(set_to_none=True)
                m(x).pow(2).mean().backward()
                o.step()
        assert torch.allclose(a.weight, b.weight, atol=1e-6), plain


def test_numeric_moves_change_every_copy_of_a_setting():
    """airbench keeps a TINY override dict: halving the epochs must halve both copies."""
    recipe = load_recipe(ROOT / "recipes" / "cifar10-airbench96")
    c = next(c for c in candidates(Source(recipe, recipe_files(recipe))) if c.move == "fewer-epochs")
    labels = [label for label, _, _ in c.changes]
    assert "EPOCHS" in labels and "TINY.EPOCHS" in labels


def test_manual_attention_becomes_sdpa(tmp_path):
    code = '''import math
import torch
import torch.nn as nn
import torch.nn.functional as F
WIDTH = 64  # model width


class Attention(nn.Module):
    def forward(self, q, k, v):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v
        return y


def main():
    model = Attention()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):
        loss = model(1, 2, 3).sum()
        loss.backward()
        opt.step()
'''
    (tmp_path / "train.py").write_text(code)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "attn", "editable": ["train.py"], "command": "python train.py",
        "metric": {"name": "loss", "goal": "minimize"}, "limits": {"train_seconds": 10}}))
    recipe = load_recipe(tmp_path)
    files = recipe_files(recipe)
    found = {c.move: c for c in candidates(Source(recipe, files))}
    out = apply_edits(recipe, files, list(found["sdpa-attention"].edits))["train.py"].decode()
    assert "y = F.scaled_dot_product_attention(q, k, v, is_causal=True)" in out and "softmax" not in out
    assert "qk-norm" not in found  # no SDPA call yet
    after = {**files, "train.py": out.encode()}
    qk = next(c for c in candidates(Source(recipe, after)) if c.move == "qk-norm")
    assert "q, k = F.rms_norm(q, (q.size(-1),))" in apply_edits(recipe, after, list(qk.edits))["train.py"].decode()


def test_catalogue_respects_what_the_code_says_is_fixed():
    """parameter-golf: VOCAB_SIZE 'must match the tokenizer'; COMPILE is off only in the CPU profile on purpose."""
    recipe = load_recipe(ROOT / "recipes" / "parameter-golf", "naive-baseline")  # the 9 x 512 int8 script
    found = candidates(Source(recipe, recipe_files(recipe)))
    changed = {label for c in found for label, _, _ in c.changes}
    assert not {"VOCAB_SIZE", "TINY.VOCAB_SIZE"} & changed
    assert "TINY.COMPILE" not in changed  # COMPILE is already on; a "set" move leaves a profile's override alone
    assert {"MODEL_DIM", "NUM_LAYERS", "NUM_KV_HEADS", "WARMDOWN_FRAC", "GRAD_CLIP"} <= changed
    # widths stay a multiple of twice the heads (rotary needs an even head width); kv heads divide the heads
    for c in found:
        for label, _, new in c.changes:
            if label.endswith("MODEL_DIM"):
                assert new % (2 * (8 if label == "MODEL_DIM" else 4)) == 0, c.what
            if label.endswith("NUM_KV_HEADS"):
                assert (8 if label == "NUM_KV_HEADS" else 4) % new == 0, c.what
    moves = {c.move for c in found}
    assert {"int6-levels", "z-loss", "fewer-ns-steps"} <= moves
    assert "qk-norm" not in moves  # its queries are already RMS-normalised


@pytest.mark.parametrize("name", ["parameter-golf", "nanochat-d12", "cifar10-airbench96"])
def test_every_role_of_a_recipe_gets_a_proposal(name):
    recipe = load_recipe(ROOT / "recipes" / name)
    store = InMemoryStore()
    score = {recipe.metric.name: 1.0} | {g.metric: g.value + 1e-4 for g in recipe.gates}
    base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                  decision="baseline", metrics=score)
    moves = set()
    for role in roster(recipe):
        p = OfflineSpecialist().propose(ctx_for(recipe, store, base, role.name))
        assert p.invalid_reason is None, (role.name, p.invalid_reason)
        assert code_digest(p.files) != base.code_sha256
        moves.add(p.hypothesis.split(":")[0])
    assert len(moves) >= min(4, len(roster(recipe)))


def test_quant_role_spends_the_bytes_it_saves():
    recipe = load_recipe(ROOT / "recipes" / "parameter-golf", "naive-baseline")  # int8 export: int6 frees bytes
    store = InMemoryStore()
    base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                  decision="baseline", metrics={"val_bpb": 1.25})
    p = OfflineSpecialist().propose(ctx_for(recipe, store, base, "quant"))
    text = p.files["naive_baseline.py"].decode()
    assert p.hypothesis.startswith("int6-levels: quantize to 63 levels")
    assert "torch.clamp(torch.round(w / scale[:, None]), -31, 31)" in text and "clip / 31.0" in text
    assert "NUM_LAYERS 9 -> 10" in p.hypothesis and re.search(r"^NUM_LAYERS = 10\b", text, re.M)


# ----- proposals ------------------------------------------------------------------------------------------
def test_same_lineage_and_seed_give_the_same_proposal_from_many_threads(digits):
    recipe, store, base = digits
    ctx = ctx_for(recipe, store, base, "data")
    first = OfflineSpecialist(seed=0).propose(ctx)
    shared = OfflineSpecialist(seed=0)
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda _: shared.propose(ctx), range(8)))
    assert all(p.hypothesis == first.hypothesis and p.files == first.files for p in again)
    assert first.backend == "offline" and first.invalid_reason is None
    assert make_specialist("offline", seed=0, model="ignored", max_turns=3).propose(ctx).files == first.files


def test_each_default_role_proposes_its_own_kind_of_rewrite(digits):
    recipe, store, base = digits
    moves = {}
    for role in ("architecture", "optimization", "data", "systems"):
        p = OfflineSpecialist().propose(ctx_for(recipe, store, base, role))
        assert p.invalid_reason is None and p.files != store.code(base.run_id)
        moves[role] = p.hypothesis.split(":")[0]
        fams = {f for m in (*catalogue().moves, *catalogue().rewrites) if m.id == moves[role]
                for f in (m.family, *m.also)}
        assert role in fams, (role, p.hypothesis)
    assert len(set(moves.values())) == 4
    # the time score pairs a faster-converging optimizer with a shorter schedule, and says so
    opt = OfflineSpecialist().propose(ctx_for(recipe, store, base, "optimization"))
    assert "AdamW" in opt.hypothesis and "EPOCHS 60 -> 30" in opt.hypothesis
    assert constant(opt.files, "EPOCHS") == 30


def test_moves_that_lost_on_this_line_are_not_retried_before_fresh_ones(digits):
    """Once every systems move lost on this line, the systems role borrows another family's untried move."""
    recipe, store, base = digits
    spec = OfflineSpecialist()
    tried = []
    for _ in range(3):  # plain-optimizer, bf16-autocast, more-threads: each discarded, slower than the parent
        p = spec.propose(ctx_for(recipe, store, base, "systems"))
        tried.append(p.hypothesis.split(":")[0])
        record(store, recipe, p.files, parent=base, specialist="systems", hypothesis=p.hypothesis, decision="discard",
               metrics={"train_seconds": 9.0, "accuracy": 0.98})
    assert tried == ["plain-optimizer", "bf16-autocast", "more-threads"]
    kept = record(store, recipe, edited(recipe, store, base, "EPOCHS = 60", "EPOCHS = 40"), parent=base,
                  hypothesis="manual: EPOCHS 60 -> 40", metrics={"train_seconds": 5.0, "accuracy": 0.98})
    p = spec.propose(ctx_for(recipe, store, kept, "systems"))  # a child of the line where they all lost
    assert "the systems catalogue has nothing untried on this line" in p.hypothesis
    assert p.hypothesis.split(":")[0] not in tried


def test_cuts_get_gentler_near_the_gate():
    """With room above the accuracy gate a convergence move is paired with half the epochs; near it, a quarter fewer."""
    recipe = load_recipe(DIGITS)
    hyps = {}
    for acc in (0.985, 0.975):  # gate 0.97, near-miss band 0.005: tight below 0.98
        store = InMemoryStore()
        base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                      decision="baseline", metrics={"train_seconds": 6.0, "accuracy": acc})
        p = OfflineSpecialist().propose(ctx_for(recipe, store, base, "data"))
        hyps[acc] = p.hypothesis
    assert "EPOCHS 60 -> 30" in hyps[0.985] and "EPOCHS 60 -> 45" in hyps[0.975]


def test_parameter_golf_style_roles_map_to_catalogue_families():
    assert role_families("arch") == ("architecture",)
    assert role_families("opt") == ("optimization",)
    assert role_families("quant")[0] == "quantization"
    assert role_families("meta")[:2] == ("optimization", "architecture")
    assert role_families("pruning", "Compress the saved artifact below 16 MB") == ("quantization",)


def test_no_proposal_repeats_code_already_in_the_lineage(digits):
    recipe, store, base = digits
    spec = OfflineSpecialist()
    seen = {base.code_sha256}
    for i in range(12):
        p = spec.propose(ctx_for(recipe, store, base, ("optimization", "architecture")[i % 2]))
        assert p.invalid_reason is None
        digest = code_digest(p.files)
        assert digest not in seen, p.hypothesis
        seen.add(digest)
        record(store, recipe, p.files, parent=base, hypothesis=p.hypothesis, decision="discard",
               metrics={"train_seconds": 6.5, "accuracy": 0.98})


def test_an_exhausted_catalogue_says_so_instead_of_looping(tmp_path):
    (tmp_path / "train.py").write_text("EPOCHS = 4  # passes\nprint(f'loss: {1 / EPOCHS}')\n")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "editable": ["train.py"], "command": "python train.py",
        "metric": {"name": "loss", "goal": "minimize"}, "limits": {"train_seconds": 10}}))
    recipe = load_recipe(tmp_path)
    store = InMemoryStore()
    base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                  decision="baseline", metrics={"loss": 0.25})
    spec, made = OfflineSpecialist(), []
    start = time.monotonic()
    for _ in range(10):
        p = spec.propose(ctx_for(recipe, store, base, "optimization"))
        if p.invalid_reason:
            break
        made.append(p.hypothesis)
        record(store, recipe, p.files, parent=base, hypothesis=p.hypothesis, decision="discard", metrics={"loss": 0.3})
    assert 2 <= len(made) <= 4  # EPOCHS x0.5, x0.75, +1, ...
    assert "exhausted" in p.invalid_reason and base.short in p.invalid_reason
    assert p.files == store.code(base.run_id)
    assert time.monotonic() - start < 20


# ----- repairs ---------------------------------------------------------------------------------------------
def failed_child(recipe, store, base, old, new, *, outcome, feedback, near_miss=False, hypothesis, specialist,
                 metrics=None):
    files = edited(recipe, store, base, old, new)
    return record(store, recipe, files, parent=base, specialist=specialist, hypothesis=hypothesis, outcome=outcome,
                  decision="discard", feedback=feedback, near_miss=near_miss, metrics=metrics)


NEAR_MISS_FEEDBACK = ("outcome: gate_failed (near miss) — gate accuracy >= 0.97 missed: accuracy = 0.968820, "
                      "short by 0.00118 (near miss)\ndecision: discard — gate_failed")


def test_near_miss_buys_back_accuracy(digits):
    recipe, store, base = digits
    parent = failed_child(recipe, store, base, "EPOCHS = 60", "EPOCHS = 12", outcome="gate_failed", near_miss=True,
                          feedback=NEAR_MISS_FEEDBACK, hypothesis="fewer-epochs: shorten training: EPOCHS 60 -> 12",
                          specialist="optimization", metrics={"train_seconds": 4.0, "accuracy": 0.96882})
    opt = OfflineSpecialist().propose(ctx_for(recipe, store, parent, "optimization"))
    assert opt.hypothesis.startswith(f"one-more-epoch: repair of {parent.short} (gate_failed (near miss): gate accuracy")
    assert "0.968820" in opt.hypothesis and constant(opt.files, "EPOCHS") == 13
    data = OfflineSpecialist().propose(ctx_for(recipe, store, parent, "data"))
    assert data.hypothesis.startswith("label-smoothing: repair of") and constant(data.files, "LABEL_SMOOTHING") == 0.1
    assert constant(data.files, "EPOCHS") == 12  # a repair does not cut further
    # a role with no accuracy moves of its own moves the parent's numbers a quarter of the way back
    sys_ = OfflineSpecialist().propose(ctx_for(recipe, store, parent, "systems"))
    assert sys_.hypothesis.startswith("bisect-back: repair of") and constant(sys_.files, "EPOCHS") == 14
    assert "EPOCHS 12 -> 14 (it was 60 before)" in sys_.hypothesis  # a small step: at most +20%


def test_far_gate_miss_moves_half_way_back(digits):
    recipe, store, base = digits
    parent = failed_child(recipe, store, base, "EPOCHS = 60", "EPOCHS = 4", outcome="gate_failed",
                          feedback="outcome: gate_failed — gate accuracy >= 0.97 missed: accuracy = 0.8975",
                          hypothesis="fewer-epochs: shorten training: EPOCHS 60 -> 4", specialist="optimization")
    p = OfflineSpecialist().propose(ctx_for(recipe, store, parent, "architecture"))
    assert p.hypothesis.startswith(f"bisect-back: repair of {parent.short}") and constant(p.files, "EPOCHS") == 32


def test_timed_out_cuts_work(digits):
    recipe, store, base = digits
    parent = failed_child(recipe, store, base, "HIDDEN = 256", "HIDDEN = 4096", outcome="timed_out",
                          feedback="outcome: timed_out — training (seed 0) ran past its 60 s limit and was killed",
                          hypothesis="wider: a wider network: HIDDEN 256 -> 4096", specialist="architecture")
    for role in ("optimization", "architecture"):
        p = OfflineSpecialist().propose(ctx_for(recipe, store, parent, role))
        assert f"repair of {parent.short} (timed_out: training (seed 0) ran past" in p.hypothesis
        # less work than the parent: fewer epochs, fewer steps or a narrower net
        assert (constant(p.files, "EPOCHS") < 60 or constant(p.files, "HIDDEN") < 4096
                or constant(p.files, "BATCH_SIZE") > 32), p.hypothesis


def test_a_speed_up_that_ran_out_of_time_is_undone(digits):
    """more-threads on a shared CPU can time out: the repair undoes it (THREADS back to 1) and tries another move."""
    recipe, store, base = digits
    parent = failed_child(recipe, store, base, "THREADS = 1", "THREADS = 2", outcome="timed_out",
                          feedback="outcome: timed_out — training (seed 0) ran past its 60 s limit and was killed",
                          hypothesis="more-threads: more intra-op threads: THREADS 1 -> 2", specialist="systems")
    p = OfflineSpecialist().propose(ctx_for(recipe, store, parent, "architecture"))
    assert constant(p.files, "THREADS") == 1 and f"undid {parent.short}'s change (more-threads" in p.hypothesis
    assert code_digest(p.files) != base.code_sha256


def test_size_exceeded_shrinks_the_artifact(digits):
    recipe, store, base = digits
    parent = failed_child(recipe, store, base, "HIDDEN = 256", "HIDDEN = 1024", outcome="size_exceeded",
                          feedback="outcome: size_exceeded — artifact is 4,500,000 bytes, 2,500,000 bytes over",
                          hypothesis="wider: a wider network: HIDDEN 256 -> 1024", specialist="architecture")
    for role in ("architecture", "data", "systems"):
        p = OfflineSpecialist().propose(ctx_for(recipe, store, parent, role))
        assert "repair of" in p.hypothesis and "size_exceeded" in p.hypothesis
        assert constant(p.files, "HIDDEN") < 1024 or constant(p.files, "DEPTH") < 2, p.hypothesis


def test_crash_undoes_the_change_and_tries_another_family(digits):
    recipe, store, base = digits
    broken = "    torch.set_num_threads(THREADS)\n    torch.autocast_cpu_dtype_is_gone()\n"
    parent = failed_child(recipe, store, base, "    torch.set_num_threads(THREADS)\n", broken, outcome="crashed",
                          feedback="outcome: crashed — training (seed 0) failed with AttributeError",
                          hypothesis="bf16-autocast: run the forward pass under autocast", specialist="systems")
    p = OfflineSpecialist().propose(ctx_for(recipe, store, parent, "systems"))
    text = p.files["train.py"].decode()
    assert "autocast_cpu_dtype_is_gone" not in text  # the crashing change is gone
    assert f"undid {parent.short}'s change" in p.hypothesis and "repair of" in p.hypothesis
    move = p.hypothesis.split(":")[0]
    family = next(m.family for m in (*catalogue().moves, *catalogue().rewrites) if m.id == move)
    assert family != "systems"  # another family than the move that crashed
    assert code_digest(p.files) != base.code_sha256  # not just the grandparent again
    # and the patch the loop would record is exactly: undo + the new move
    assert apply_edits(recipe, store.code(parent.run_id), list(p.edits)) == dict(p.files)


def test_out_of_memory_crash_shrinks_memory(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "nanochat-d12")
    store = InMemoryStore()
    base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                  decision="baseline", metrics={"core": 0.12})
    files = store.code(base.run_id)
    text = files["train.py"].decode().replace("DEVICE_BATCH = 32", "DEVICE_BATCH = 64", 1)
    parent = record(store, recipe, {**files, "train.py": text.encode()}, parent=base, specialist="systems",
                    hypothesis="bigger-micro-batch: larger micro-batches: DEVICE_BATCH 32 -> 64", outcome="crashed",
                    decision="discard", feedback="outcome: crashed — training (seed 0) failed with "
                    "torch.OutOfMemoryError\nerror (torch.OutOfMemoryError), last lines:\nCUDA out of memory.")
    p = OfflineSpecialist().propose(ctx_for(recipe, store, parent, "architecture"))
    assert "repair of" in p.hypothesis and "OutOfMemoryError" in p.hypothesis
    new = p.files["train.py"].decode()
    dev = int(re.search(r"^DEVICE_BATCH = (\d+)", new, re.M).group(1))
    width = int(re.search(r"^ASPECT = (\d+)", new, re.M).group(1))
    depth = int(re.search(r"^DEPTH = (\d+)", new, re.M).group(1))
    assert dev < 64 or width < 64 or depth < 12, p.hypothesis  # less memory than the crashed parent


# ----- for real ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_digits_moves_train_and_pass_the_gate(digits):
    """plain-optimizer (same update, no torch.optim) and AdamW with half the epochs, through the evaluator."""
    recipe, store, base = digits
    files = recipe_files(recipe)
    found = {c.move: c for c in candidates(Source(recipe, files))}
    opt = OfflineSpecialist().propose(ctx_for(recipe, store, base, "optimization"))
    for name, new in (("plain-optimizer", apply_edits(recipe, files, list(found["plain-optimizer"].edits))),
                      ("adamw-half-epochs", dict(opt.files))):
        with tempfile.TemporaryDirectory() as tmp:
            write_snapshot(new, Path(tmp))
            ev = evaluate_code(recipe, tmp, seeds=1)
        assert ev.outcome.value == "ok", (name, ev.reason, ev.error_tail)
        assert ev.metrics["accuracy"] >= 0.97 and ev.train_seconds < recipe.limits.train_seconds
