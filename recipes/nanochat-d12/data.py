"""Protected: ClimbMix tokens, the CORE task bundle, and tiny generated stand-ins.

Real data, prepared once into ``$AUTORESEARCH_DATA_DIR/nanochat`` (default
``/var/tmp/autoresearch-data``) by ``python data.py`` on a machine with network
access (needs ``pyarrow``, ``tokenizers`` and ``pyyaml`` there; trials need only
numpy):

1. ClimbMix parquet shards (``karpathy/climbmix-400b-shuffle``, the data of
   current nanochat): ``TRAIN_SHARDS`` from the start and the last shard of
   the set (``shard_06542``) for validation, as nanochat splits it;
2. a byte-level BPE tokenizer of 32,768 tokens trained on their first
   characters (GPT-4 style split pattern, ``<|bos|>`` = id 0), as nanochat does;
3. every document tokenized, BOS-prefixed, into ``train/train_*.bin`` and
   ``eval/val.bin`` in the shared token-shard format;
4. the DCLM CORE eval bundle (``core.yaml``, ``eval_meta_data.csv``, jsonl
   tasks), rendered with few-shot examples as nanochat renders them and
   tokenized into ``eval/core.npz``: for every example, one token sequence per
   candidate and the span [start, end) to score.

Training reads ``train/`` only; ``eval/`` (validation tokens, CORE tasks with
their gold answers) is for the protected evaluation.

Tiny data (``tiny=True``): a 256-token Markov language and four generated
tasks of the same kinds (multiple choice, schema, language modelling) in the
same structures; identical in every process.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main/shard_{:05d}.parquet"
BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
DEFAULT_DATA_DIR = "/var/tmp/autoresearch-data"
TRAIN_SHARDS = 40  # training parquet shards; d12's horizon is 1.32B tokens (check the count data.py prints)
VAL_SHARD = 6542  # the last ClimbMix shard: nanochat's validation split
VOCAB_SIZE = 32_768  # tokenizer vocabulary, 2**15 as nanochat's tok_train (ids fit uint16)
TOKENIZER_CHARS = 2_000_000_000  # characters the tokenizer is trained on
MAX_PER_TASK = 500  # CORE examples kept per task (shuffled with seed 1337, as nanochat)
MAX_SEQ_LEN = 2048  # candidates longer than this are cropped from the left
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                 r"""\s*[\r\n]|\s+(?!\S)|\s+""")
MAGIC, VERSION, HEADER_WORDS = 20240520, 1, 256
KINDS = ("multiple_choice", "schema", "language_modeling")
BOS = 0

TINY_VOCAB = 256
TINY_TRAIN_TOKENS = 65_536
TINY_VAL_TOKENS = 4_096
TINY_EXAMPLES = 48  # per tiny task


class DataUnavailable(RuntimeError):
    """The data is neither cached nor downloadable from here."""


@dataclass(frozen=True)
class Task:
    """One CORE task: every example is (candidate sequences, [start, end) spans, gold index)."""

    name: str
    kind: str  # one of KINDS
    chance: float  # accuracy of random guessing, as a fraction
    examples: list[tuple[list[np.ndarray], list[tuple[int, int]], int]]


def data_dir() -> Path:
    return Path(os.environ.get("AUTORESEARCH_DATA_DIR") or DEFAULT_DATA_DIR) / "nanochat"


# ----- token shards (same format as the Parameter Golf export) -------------

def write_shard(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def read_shard(path: Path) -> np.ndarray:
    header = np.fromfile(path, dtype="<i4", count=HEADER_WORDS)
    if len(header) != HEADER_WORDS or header[0] != MAGIC or header[1] != VERSION:
        raise ValueError(f"{path}: not a token shard (bad header)")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_WORDS * 4, shape=(int(header[2]),))


# ----- CORE tasks: packing ---------------------------------------------------

def pack_tasks(tasks: list[Task], path: Path) -> None:
    seqs, spans, first_seq, golds, first_ex = [], [], [0], [], [0]
    for t in tasks:
        for cands, sp, gold in t.examples:
            seqs += cands
            spans += sp
            first_seq.append(len(seqs))
            golds.append(gold)
        first_ex.append(len(golds))
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    np.savez(path, tokens=np.concatenate(seqs).astype(np.uint16), offsets=np.concatenate([[0], np.cumsum(lengths)]),
             spans=np.array(spans, dtype=np.int32).reshape(-1, 2), first_seq=np.array(first_seq, dtype=np.int64),
             golds=np.array(golds, dtype=np.int32), first_ex=np.array(first_ex, dtype=np.int64),
             names=np.array([t.name for t in tasks]), kinds=np.array([KINDS.index(t.kind) for t in tasks]),
             chances=np.array([t.chance for t in tasks], dtype=np.float64))


def unpack_tasks(path: Path) -> list[Task]:
    with np.load(path) as f:
        z = {k: f[k] for k in f.files}
    tasks = []
    for ti, name in enumerate(z["names"]):
        examples = []
        for ei in range(z["first_ex"][ti], z["first_ex"][ti + 1]):
            rng = range(z["first_seq"][ei], z["first_seq"][ei + 1])
            cands = [z["tokens"][z["offsets"][s] : z["offsets"][s + 1]] for s in rng]
            examples.append((cands, [tuple(int(v) for v in z["spans"][s]) for s in rng], int(z["golds"][ei])))
        tasks.append(Task(str(name), KINDS[int(z["kinds"][ti])], float(z["chances"][ti]), examples))
    return tasks


# ----- CORE tasks: rendering (nanochat's templates) --------------------------

def _common(seqs: list[list[int]], from_left: bool) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        idx = i if from_left else -1 - i
        if any(s[idx] != seqs[0][idx] for s in seqs):
            return i
    return n


def render_example(item: dict, kind: str, shots: list[dict], delim: str, encode) -> tuple[list[list[int]], list[tuple[int, int]], int]:
    """Candidate token sequences, their scored spans and the gold index for one item."""
    if kind == "multiple_choice":
        prefix = "".join(f"{s['query']}{delim}{s['choices'][s['gold']]}\n\n" for s in shots)
        seqs = [[BOS] + encode(f"{prefix}{item['query']}{delim}{c}") for c in item["choices"]]
        start = _common(seqs, True)
        spans = [(start, len(s)) for s in seqs]
        gold = int(item["gold"])
    elif kind == "schema":
        prefix = "".join(f"{s['context_options'][s['gold']]}{delim}{s['continuation']}\n\n" for s in shots)
        seqs = [[BOS] + encode(f"{prefix}{c}{delim}{item['continuation']}") for c in item["context_options"]]
        suffix = _common(seqs, False)
        spans = [(len(s) - suffix, len(s)) for s in seqs]
        gold = int(item["gold"])
    else:
        prefix = "".join(f"{s['context'].strip()}{delim}{s['continuation']}\n\n" for s in shots)
        without = [BOS] + encode(f"{prefix}{item['context'].strip()}{delim}".strip())
        seq = [BOS] + encode(f"{prefix}{item['context'].strip()}{delim}{item['continuation']}")
        start = _common([without, seq], True)
        seqs, spans, gold = [seq], [(start, len(seq))], 0
    out_seqs, out_spans = [], []
    for s, (a, b) in zip(seqs, spans, strict=True):
        crop = max(0, len(s) - MAX_SEQ_LEN)
        out_seqs.append(s[crop:])
        out_spans.append((max(1, a - crop), b - crop))
    return out_seqs, out_spans, gold


def render_bundle(bundle: Path, encode, max_per_task: int = MAX_PER_TASK) -> list[Task]:
    """Every task of ``core.yaml`` in an unpacked DCLM eval bundle, rendered and tokenized."""
    import yaml

    config = yaml.safe_load((bundle / "core.yaml").read_text())
    with open(bundle / "eval_meta_data.csv", encoding="utf-8") as f:
        chance = {row["Eval Task"]: float(row["Random baseline"]) / 100 for row in csv.DictReader(f)}
    tasks = []
    for spec in config["icl_tasks"]:
        label, kind = spec["label"], spec["icl_task_type"]
        delim = spec.get("continuation_delimiter", " ")
        shots = spec["num_fewshot"][0] if isinstance(spec["num_fewshot"], list) else int(spec["num_fewshot"])
        lines = (bundle / "eval_data" / spec["dataset_uri"]).read_text(encoding="utf-8").splitlines()
        items = [json.loads(ln) for ln in lines if ln.strip()]
        random.Random(1337).shuffle(items)
        items = items[:max_per_task] if max_per_task > 0 else items
        examples = []
        for idx, item in enumerate(items):
            others = [i for i in range(len(items)) if i != idx]
            picks = random.Random(1234 + idx).sample(others, min(shots, len(others))) if shots else []
            seqs, spans, gold = render_example(item, kind, [items[i] for i in picks], delim, encode)
            examples.append(([np.array(s, dtype=np.uint16) for s in seqs], spans, gold))
        tasks.append(Task(label, kind, chance.get(label, 0.0), examples))
    return tasks


# ----- tiny generated data ----------------------------------------------------

def _tiny_rule() -> np.ndarray:
    """successor[t] = (most likely next token, second most likely)."""
    rng = np.random.default_rng(5)
    return np.stack([rng.permutation(np.arange(1, TINY_VOCAB)), rng.permutation(np.arange(1, TINY_VOCAB))], 1)


def _walk(rng: np.random.Generator, succ: np.ndarray, start: int, n: int) -> list[int]:
    out, t = [], start
    for _ in range(n):
        r = rng.random()
        t = int(succ[t - 1, 0] if r < 0.6 else succ[t - 1, 1] if r < 0.9 else rng.integers(1, TINY_VOCAB))
        out.append(t)
    return out


def _tiny_stream(n: int, seed: int) -> np.ndarray:
    succ, rng = _tiny_rule(), np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < n:
        out += [BOS] + _walk(rng, succ, int(rng.integers(1, TINY_VOCAB)), int(rng.integers(20, 200)))
    return np.array(out[:n], dtype=np.uint16)


def _tiny_tasks() -> list[Task]:
    succ, rng = _tiny_rule(), np.random.default_rng(9)

    def context() -> list[int]:
        return [BOS] + _walk(rng, succ, int(rng.integers(1, TINY_VOCAB)), int(rng.integers(6, 14)))

    def other(avoid: set[int]) -> int:
        while True:
            t = int(rng.integers(1, TINY_VOCAB))
            if t not in avoid:
                return t

    def mc(cands: list[list[int]], ctx: list[int]) -> tuple[list[np.ndarray], list[tuple[int, int]], int]:
        gold = int(rng.integers(len(cands)))
        cands[0], cands[gold] = cands[gold], cands[0]
        return [np.array(ctx + c, dtype=np.uint16) for c in cands], [(len(ctx), len(ctx) + len(c)) for c in cands], gold

    next_token, two_step, schema, lm = [], [], [], []
    for _ in range(TINY_EXAMPLES):
        ctx = context()
        x = ctx[-1]
        good = int(succ[x - 1, 0])
        avoid = {good, int(succ[x - 1, 1])}
        next_token.append(mc([[good]] + [[other(avoid)] for _ in range(3)], ctx))
        two_step.append(mc([[good, int(succ[good - 1, 0])], [other(avoid), other(set())]], context()[:-1] + [x]))
        a, b = context(), context()
        cont = int(succ[a[-1] - 1, 0])
        while cont in (succ[b[-1] - 1, 0], succ[b[-1] - 1, 1]):
            b = context()
        gold = int(rng.integers(2))
        opts = [b, a] if gold else [a, b]
        schema.append(([np.array(o + [cont], dtype=np.uint16) for o in opts], [(len(o), len(o) + 1) for o in opts], gold))
        chain = [good, int(succ[good - 1, 0])]
        chain.append(int(succ[chain[-1] - 1, 0]))
        lm.append(([np.array(ctx + chain, dtype=np.uint16)], [(len(ctx), len(ctx) + 3)], 0))
    return [Task("next_token", "multiple_choice", 0.25, next_token), Task("two_step", "multiple_choice", 0.5, two_step),
            Task("which_context", "schema", 0.5, schema), Task("greedy_chain", "language_modeling", 0.0, lm)]


# ----- preparing the real data --------------------------------------------------

def fetch(url: str, dest: Path, timeout: float = 60.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise DataUnavailable(f"could not download {url}: {e}") from None
    os.replace(part, dest)
    return dest


def _texts(paths: list[Path]):
    import pyarrow.parquet as pq

    for p in paths:
        pf = pq.ParquetFile(p)
        for i in range(pf.num_row_groups):
            yield from pf.read_row_group(i, columns=["text"]).column("text").to_pylist()


def train_tokenizer(texts, vocab_size: int = VOCAB_SIZE, max_chars: int = TOKENIZER_CHARS):
    """A byte-level BPE with nanochat's split pattern; ``<|bos|>`` is id 0."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|bos|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def capped():
        seen = 0
        for t in texts:
            if seen >= max_chars:
                return
            seen += len(t)
            yield t

    tok.train_from_iterator(capped(), trainer)
    return tok


def prepare(root: Path | None = None, shards: int = TRAIN_SHARDS, shard_url: str | None = None,
            bundle_url: str | None = None, vocab_size: int = VOCAB_SIZE, tokenizer_chars: int = TOKENIZER_CHARS,
            max_per_task: int = MAX_PER_TASK, val_shard: int = VAL_SHARD) -> Path:
    """Download, train the tokenizer, tokenize the shards and the CORE bundle (idempotent)."""
    from tokenizers import Tokenizer

    root, shard_url, bundle_url = root or data_dir(), shard_url or SHARD_URL, bundle_url or BUNDLE_URL
    raw = root / "raw"
    ids = [*range(shards), val_shard]
    parquet = [raw / f"shard_{i:05d}.parquet" for i in ids]
    for i, p in zip(ids, parquet, strict=True):
        if not p.is_file():
            fetch(shard_url.format(i), p)
    tok_path = root / "tokenizer.json"
    if not tok_path.is_file():
        train_tokenizer(_texts(parquet[:-1]), vocab_size, tokenizer_chars).save(str(tok_path))
    tok = Tokenizer.from_file(str(tok_path))

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(parquet):
        out = root / ("eval/val.bin" if i == len(parquet) - 1 else f"train/train_{i:05d}.bin")
        if out.is_file():
            continue
        docs: list[np.ndarray] = []  # one small array per document: ~2 bytes per token in memory
        batch: list[str] = []
        for text in [*_texts([p]), None]:
            if text is not None:
                batch.append(text)
            if batch and (text is None or len(batch) == 1024):
                docs += [np.array([BOS, *e.ids], dtype=np.uint16) for e in tok.encode_batch(batch, add_special_tokens=False)]
                batch = []
        write_shard(out, np.concatenate(docs))
    if not (root / "eval" / "core.npz").is_file():
        archive = fetch(bundle_url, raw / "eval_bundle.zip")
        with zipfile.ZipFile(archive) as z:
            z.extractall(raw)
        pack_tasks(render_bundle(raw / "eval_bundle", encode, max_per_task), root / "eval" / "core.npz")
    for p in [root, *root.iterdir(), *(root / "train").iterdir(), *(root / "eval").iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    n = sum(len(read_shard(t)) for t in (root / "train").glob("train_*.bin"))
    print(f"training tokens: {n:,} (d12 at 12 tokens per scaling parameter needs 1,321,205,760)")
    return root


# ----- public face --------------------------------------------------------------

def _ensure(what: str, needed: tuple[str, ...]) -> Path:
    """The prepared folder, when the files one step needs are there (training never needs eval/)."""
    root = data_dir()
    if not all(list(root.glob(pattern)) for pattern in needed):
        raise DataUnavailable(
            f"{what}: the prepared ClimbMix tokens and CORE tasks are not in {root}. Trials run without "
            f"network: run `python data.py` once on a machine with network access (it downloads the shards "
            f"and the eval bundle and trains the tokenizer; AUTORESEARCH_DATA_DIR chooses the parent folder).")
    return root


def train_shards(tiny: bool = False) -> list[np.ndarray]:
    if tiny:
        return [_tiny_stream(TINY_TRAIN_TOKENS, seed=1)]
    return [read_shard(p) for p in sorted((_ensure("training", ("train/train_*.bin",)) / "train").glob("train_*.bin"))]


def val_tokens(tiny: bool = False) -> np.ndarray:
    return _tiny_stream(TINY_VAL_TOKENS, seed=2) if tiny else read_shard(_ensure("validation", ("eval/val.bin",)) / "eval" / "val.bin")


def core_tasks(tiny: bool = False) -> list[Task]:
    if tiny:
        buf = io.BytesIO()
        pack_tasks(_tiny_tasks(), buf)  # the same packing as the real tasks
        buf.seek(0)
        return unpack_tasks(buf)
    return unpack_tasks(_ensure("CORE evaluation", ("eval/core.npz",)) / "eval" / "core.npz")


def vocab_size(tiny: bool = False) -> int:
    return TINY_VOCAB if tiny else VOCAB_SIZE


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Prepare ClimbMix tokens and CORE tasks for nanochat-d12.")
    ap.add_argument("--shards", type=int, default=TRAIN_SHARDS, help="training parquet shards")
    args = ap.parse_args()
    try:
        print(f"nanochat data prepared in {prepare(shards=args.shards)}")
    except (DataUnavailable, ImportError) as e:
        sys.exit(f"data.py: {e}")
