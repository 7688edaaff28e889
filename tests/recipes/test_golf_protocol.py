"""Parameter Golf's protected scoring: sliding windows against a direct computation, tokenizers, artifacts.

The model here is a small causal TorchScript module whose logits depend on
every earlier token of its window (a running mean of embeddings), so the
context each target gets changes its score: a protocol that gave a target
the wrong context would not match the direct computation.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.recipes.test_reference_recipes import RECIPES, load_module

GOLF = RECIPES / "parameter-golf"


@pytest.fixture(scope="module")
def golf():
    """(data, evaluate) modules of the recipe; evaluate.py's ``import data`` gets the golf one."""
    saved = sys.modules.pop("data", None)
    try:
        data = load_module(GOLF / "data.py", "data")
        ev = load_module(GOLF / "evaluate.py", "golf_evaluate")
    finally:
        sys.modules.pop("data", None)
        if saved is not None:
            sys.modules["data"] = saved
    return data, ev


class RunningMean(torch.nn.Module):
    """Causal: position i sees the mean of the embeddings of tokens 0..i of its window."""

    def __init__(self, vocab: int, dim: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Parameter(torch.randn(vocab, dim, generator=g))
        self.out = torch.nn.Parameter(torch.randn(vocab, dim, generator=g) * 0.5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = F.embedding(idx, self.emb)
        n = torch.arange(1, idx.size(1) + 1, dtype=x.dtype, device=x.device)[None, :, None]
        return F.linear(x.cumsum(1) / n, self.out)


def direct(model, tokens: np.ndarray, luts, seq_len: int, stride: int) -> tuple[float, int, int]:
    """Each target t scored alone, from the context the protocol promises it (derived independently)."""
    base, space, boundary = luts
    n = (len(tokens) - 1) // seq_len * seq_len  # targets after the cut to whole windows
    loss = 0.0
    n_bytes = 0
    with torch.no_grad():
        for t in range(1, n + 1):
            start = 0 if t <= seq_len else math.ceil((t - seq_len) / stride) * stride
            ctx = torch.from_numpy(tokens[start:t].astype(np.int64))[None]
            logits = model(ctx)[0, -1]
            loss += float(F.cross_entropy(logits[None].double(), torch.tensor([int(tokens[t])])))
            prev, tgt = int(tokens[t - 1]), int(tokens[t])
            n_bytes += int(base[tgt]) + int(space[tgt] and not boundary[prev])
    return loss, n, n_bytes


@pytest.mark.parametrize(("seq_len", "stride"), [(32, 8), (32, 32), (24, 5)])
def test_sliding_window_bits_per_byte_equal_a_direct_computation(golf, seq_len, stride):
    data, ev = golf
    pieces = data.tokenizer_pieces("sp1024", tiny=True)
    val = data.val_tokens("sp1024", tiny=True)[:403]  # not a whole number of windows: the cut matters
    model = torch.jit.script(RunningMean(len(pieces)).eval())
    luts_np = data.byte_luts(pieces)
    luts = tuple(torch.from_numpy(a) for a in luts_np)
    cut = ev.usable_tokens(val, seq_len)
    tokens = torch.from_numpy(cut.astype(np.int64))
    got = ev.score(model, tokens, luts, seq_len, stride, batch=7)
    want = direct(model, val, luts_np, seq_len, stride)
    assert got[1] == want[1] == (len(val) - 1) // seq_len * seq_len  # every target scored exactly once
    assert got[2] == want[2]
    assert got[0] == pytest.approx(want[0], rel=1e-7)  # float32 logits vs float64 here
    # the bytes are the text's: a direct count over the same targets
    assert got[2] == data.count_bytes(cut[:-1].astype(np.int64), cut[1:].astype(np.int64), luts_np)
    # processes that each score their share sum to the single-process result
    parts = [ev.score(model, tokens, luts, seq_len, stride, batch=3, rank=r, world=3) for r in range(3)]
    assert sum(p[1] for p in parts) == got[1] and sum(p[2] for p in parts) == got[2]
    assert sum(p[0] for p in parts) == pytest.approx(got[0], rel=1e-9)


def test_more_context_scores_differently_and_windows_tile_the_targets(golf):
    data, ev = golf
    assert ev.windows(10, 4, 4) == [(0, 4, 0), (4, 8, 0), (8, 10, 0)]
    assert ev.windows(10, 4, 2) == [(0, 4, 0), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    pieces = data.tokenizer_pieces("sp1024", tiny=True)
    luts = tuple(torch.from_numpy(a) for a in data.byte_luts(pieces))
    tokens = torch.from_numpy(ev.usable_tokens(data.val_tokens("sp1024", tiny=True)[:513], 64).astype(np.int64))
    model = torch.jit.script(RunningMean(len(pieces)).eval())
    fixed = ev.score(model, tokens, luts, 64, 64, batch=8)
    sliding = ev.score(model, tokens, luts, 64, 16, batch=8)
    assert fixed[1:] == sliding[1:] and fixed[0] != pytest.approx(sliding[0], rel=1e-6)


def test_a_model_whose_vocabulary_is_smaller_than_the_tokenizer_is_refused(golf):
    data, ev = golf
    pieces = data.tokenizer_pieces("sp8192", tiny=True)
    luts = tuple(torch.from_numpy(a) for a in data.byte_luts(pieces))
    tokens = torch.from_numpy(ev.usable_tokens(data.val_tokens("sp8192", tiny=True)[:129], 64).astype(np.int64))
    small = torch.jit.script(RunningMean(1024).eval())  # an sp1024 model cannot score sp8192 tokens
    with pytest.raises((ValueError, IndexError, RuntimeError)):
        ev.score(small, tokens, luts, 64, 64, batch=2)
    assert len(pieces) == 8192 == data.vocab_size("sp8192") and len(data.tokenizer_pieces("sp1024", True)) == 1024


def test_byte_shuffled_archives_round_trip_through_the_protected_loader(golf):
    _, ev = golf
    raw = b"PK" + bytes(range(256)) * 3 + b"odd"
    shuffled = b"BSHF\x02" + raw[0::2] + raw[1::2]
    import lzma

    assert ev.decompress(lzma.compress(shuffled)) == raw
    assert ev.decompress(raw) == raw
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        ev.decompress(lzma.compress(b"BSHF\x02" + b"xy" * 10))


@pytest.mark.slow
def test_evaluate_under_torchrun_with_two_processes_matches_one(golf, tmp_path):
    data, ev = golf
    model = torch.jit.script(RunningMean(8192).eval())
    model.save(str(tmp_path / "final_model.ptz"))
    env = {**os.environ, "AUTORESEARCH_ARTIFACT_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    args = ["evaluate.py", "--tiny", "--tokenizer", "sp8192", "--seq-len", "128", "--stride", "32"]
    one = subprocess.run([sys.executable, *args], cwd=GOLF, env=env, capture_output=True, text=True, timeout=120)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                         cwd=GOLF, env=env, capture_output=True, text=True, timeout=180)
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-800:] + two.stderr[-800:]

    def metrics(out: str) -> dict[str, float]:
        return {k: float(v) for k, v in (ln.split(": ") for ln in out.splitlines() if ": " in ln)}

    m1, m2 = metrics(one.stdout), metrics(two.stdout)
    assert m1["val_tokens"] == m2["val_tokens"] == 8192 and m1["val_bytes"] == m2["val_bytes"]
    assert m2["val_bpb"] == pytest.approx(m1["val_bpb"], rel=1e-5)


@pytest.mark.slow
def test_golf_trainer_under_torchrun_with_two_processes_exports_a_model_the_evaluation_scores(tmp_path):
    """The 8-GPU profile's code path (DDP, sharded Muon, the shared stop), on 2 CPU processes with gloo."""
    import shutil

    work = tmp_path / "golf"
    shutil.copytree(GOLF, work, ignore=shutil.ignore_patterns("notes", "__pycache__"))
    code = (work / "train_gpt.py").read_text()
    assert "MAX_STEPS=60," in code
    (work / "train_gpt.py").write_text(code.replace("MAX_STEPS=60,", "MAX_STEPS=6,"))  # a few steps suffice here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTORESEARCH_ARTIFACT_DIR": str(work)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train_gpt.py", "--tiny"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "steps: 6" in r.stdout and r.stdout.count("model_bytes:") == 1  # rank 0 alone exports
    e = subprocess.run([sys.executable, "evaluate.py", "--tiny", "--tokenizer", "sp8192", "--seq-len", "128",
                        "--stride", "32"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert e.returncode == 0, e.stderr[-1500:]
    bpb = float(next(ln.split(": ")[1] for ln in e.stdout.splitlines() if ln.startswith("val_bpb")))
    assert 0 < bpb < 2.62  # below the uniform distribution's 2.62 bpb over the 8,192 generated pieces
