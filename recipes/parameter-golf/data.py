"""Protected: FineWeb token shards, the SentencePiece tokenizers' byte counts, tiny generated text.

Real data: the challenge's published exports, one per tokenizer (``VARIANTS``):
``fineweb10B_sp1024`` (the Naive Baseline's) and ``fineweb10B_sp8192`` (the
2026-04-09 record's, which the paper started from).  Shards of uint16 tokens
with a 256-word int32 header (magic 20240520, version 1, token count), a
fixed validation split (``fineweb_val_*``: the first 50k documents) and the
SentencePiece BPE model.  Cached under
``$AUTORESEARCH_DATA_DIR/parameter-golf/<variant>/`` (default
``/var/tmp/autoresearch-data``) with each step's part in its own folder::

    sp8192/train/fineweb_train_000001.bin ...   what training reads
    sp8192/val/fineweb_val_000000.bin           only the protected evaluation
    sp8192/tokenizer/fineweb_8192_bpe.model     only the protected evaluation

Trials run without network, so fetch once beforehand::

    python data.py --variant sp8192              # 80 train shards (8B tokens), the downloader's default
    python data.py --variant sp1024              # the Naive Baseline's (it saw 7.0B tokens: 70 shards)

Bits per byte need the byte length of every token: they are read from the
tokenizer's ``.model`` file (a protobuf, parsed here without the sentencepiece
package) the way the challenge's ``build_sentencepiece_luts`` counts them: a
piece's UTF-8 bytes, one for a byte piece, plus one for a leading "▁" unless
the previous token is a boundary (control/unknown/unused).

Tiny data (``tiny=True``): a generated tokenizer of the variant's size
(1,024 or 8,192 pieces, written in the same protobuf format and parsed by the
same code) and a Zipfian Markov "language" over its words; identical in every
process.  Needs numpy and the standard library only.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR = "/var/tmp/autoresearch-data"
MAGIC, VERSION, HEADER_WORDS = 20240520, 1, 256
HF = "https://huggingface.co/datasets/{repo}/resolve/main/datasets"
# Source: openai/parameter-golf data/cached_challenge_fineweb.py (repo ids, file names, shard counts) and the
# record's README ("MATCHED_FINEWEB_REPO_ID=kevclark/parameter-golf ... --variant sp8192").
VARIANTS = {
    "sp1024": dict(vocab=1024, repo="willdepueoai/parameter-golf", val_shards=1, train_shards=80),
    "sp8192": dict(vocab=8192, repo="kevclark/parameter-golf", val_shards=1, train_shards=80),
}

# SentencePiece piece types (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"

TINY_TRAIN_TOKENS = 65_536
TINY_VAL_TOKENS = 8_192 + 1


class DataUnavailable(RuntimeError):
    """The data is neither cached nor downloadable from here."""


def data_dir() -> Path:
    return Path(os.environ.get("AUTORESEARCH_DATA_DIR") or DEFAULT_DATA_DIR) / "parameter-golf"


def variant_info(variant: str) -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown tokenizer {variant!r}; known: {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    return dict(v, dataset=f"fineweb10B_{variant}", tokenizer=f"fineweb_{v['vocab']}_bpe.model")


# ----- shards -------------------------------------------------------------

def write_shard(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def read_shard(path: Path) -> np.ndarray:
    """The tokens of one shard (memory-mapped, uint16); the size must match the header exactly."""
    header = np.fromfile(path, dtype="<i4", count=HEADER_WORDS)
    if len(header) != HEADER_WORDS or header[0] != MAGIC or header[1] != VERSION:
        raise ValueError(f"{path}: not a token shard (bad header)")
    n = int(header[2])
    expected = HEADER_WORDS * 4 + 2 * n
    if Path(path).stat().st_size != expected:
        raise ValueError(f"{path}: {Path(path).stat().st_size} bytes, the header says {expected} ({n} tokens)")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_WORDS * 4, shape=(n,))


# ----- SentencePiece model (protobuf) -------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def read_pieces(path: Path) -> list[tuple[str, int]]:
    """(piece, type) for every id of a SentencePiece ``.model`` file."""
    pieces = []
    for field, wire, value in _fields(Path(path).read_bytes()):
        if field == 1 and wire == 2:
            piece, kind = "", NORMAL
            for f, w, v in _fields(value):
                if f == 1 and w == 2:
                    piece = v.decode("utf-8")
                elif f == 3 and w == 0:
                    kind = v
            pieces.append((piece, kind))
    if not pieces:
        raise ValueError(f"{path}: no pieces; not a SentencePiece model")
    return pieces


def write_pieces(path: Path, pieces: list[tuple[str, int]]) -> None:
    """A minimal SentencePiece ``.model`` (pieces only), readable by :func:`read_pieces`."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    blob = bytearray()
    for piece, kind in pieces:
        p = piece.encode("utf-8")
        body = b"\x0a" + varint(len(p)) + p + b"\x15" + struct.pack("<f", 0.0) + b"\x18" + varint(kind)
        blob += b"\x0a" + varint(len(body)) + body
    Path(path).write_bytes(bytes(blob))


def byte_luts(pieces: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base_bytes int16, has_leading_space bool, is_boundary bool), indexed by token id."""
    n = len(pieces)
    base = np.zeros(n, dtype=np.int16)
    space = np.zeros(n, dtype=bool)
    boundary = np.ones(n, dtype=bool)
    for i, (piece, kind) in enumerate(pieces):
        if kind in (CONTROL, UNKNOWN, UNUSED):
            continue
        boundary[i] = False
        if kind == BYTE:
            base[i] = 1
            continue
        if piece.startswith(SPACE):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, space, boundary


def count_bytes(prev: np.ndarray, target: np.ndarray, luts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int:
    """UTF-8 bytes that the ``target`` tokens (each following ``prev``) stand for."""
    base, space, boundary = luts
    return int(base[target].astype(np.int64).sum() + (space[target] & ~boundary[prev]).sum())


# ----- tiny generated data ------------------------------------------------

_SUFFIXES = ["s", "ed", "ing", "er", "ly", "al", "ion", "ment", "ness", "ful", "ous", "ive", "est"]


def _tiny_pieces(vocab: int) -> list[tuple[str, int]]:
    pieces = [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)]
    pieces += [(f"<0x{b:02X}>", BYTE) for b in range(256)]
    rng = np.random.default_rng(7)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < vocab - len(pieces) - len(_SUFFIXES):
        w = "".join(rng.choice(syllables, size=int(rng.integers(1, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    pieces += [(SPACE + w, NORMAL) for w in words] + [(s, NORMAL) for s in _SUFFIXES]
    return pieces


def _tiny_stream(pieces: list[tuple[str, int]], n: int, seed: int) -> np.ndarray:
    """Documents of a Markov chain over words: each word has three likely successors, drawn Zipf-like."""
    words = np.array([i for i, (p, k) in enumerate(pieces) if k == NORMAL and p.startswith(SPACE)])
    suffixes = np.array([i for i, (p, k) in enumerate(pieces) if k == NORMAL and not p.startswith(SPACE)])
    period, comma = 3 + ord("."), 3 + ord(",")
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    cdf = np.cumsum(zipf)
    table = np.random.default_rng(3).choice(len(words), size=(len(words), 3), p=zipf)
    rng = np.random.default_rng(seed)

    def common() -> int:
        return min(int(np.searchsorted(cdf, rng.random())), len(words) - 1)

    out = np.empty(n, dtype=np.uint16)
    i, w = 0, 0
    while i < n:
        if i == 0 or rng.random() < 0.02:
            out[i], i = 1, i + 1  # <s>: a new document
            w = common()
            continue
        r = rng.random()
        w = int(table[w, rng.integers(3)]) if r < 0.9 else common()
        out[i], i = words[w], i + 1
        if i < n and rng.random() < 0.1:
            out[i], i = suffixes[w % len(suffixes)], i + 1
        if i < n and rng.random() < 0.08:
            out[i], i = (period if rng.random() < 0.5 else comma), i + 1
    return out


# ----- download and cache -----------------------------------------------------

def fetch(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; raises DataUnavailable with the cause."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise DataUnavailable(f"could not download {url}: {e}") from None
    if dest.suffix == ".bin":
        try:
            read_shard(part)  # the published shards carry no checksum: check header and size, as the reference does
        except ValueError as e:
            part.unlink(missing_ok=True)
            raise DataUnavailable(f"downloaded {url} is not a valid shard: {e}") from None
    os.replace(part, dest)
    dest.chmod(0o644)
    return dest


def layout(variant: str, root: Path | None = None) -> dict[str, Path]:
    """The variant's folders: ``train`` (training), ``val`` and ``tokenizer`` (the protected evaluation)."""
    base = (root or data_dir()) / variant
    return {"train": base / "train", "val": base / "val", "tokenizer": base / "tokenizer"}


def prepare(variant: str = "sp8192", train_shards: int | None = None, root: Path | None = None,
            base_url: str | None = None) -> Path:
    """Download what is missing: tokenizer, validation shards, ``train_shards`` train shards (numbered from 1)."""
    info = variant_info(variant)
    n_train = info["train_shards"] if train_shards is None else train_shards
    if not 0 <= n_train <= info["train_shards"]:
        raise ValueError(f"{variant} has {info['train_shards']} train shards; asked for {n_train}")
    url = base_url or HF.format(repo=info["repo"])
    dirs = layout(variant, root)
    prefix = f"datasets/{info['dataset']}"
    wanted = [(f"tokenizers/{info['tokenizer']}", dirs["tokenizer"] / info["tokenizer"])]
    wanted += [(f"{prefix}/fineweb_val_{i:06d}.bin", dirs["val"] / f"fineweb_val_{i:06d}.bin")
               for i in range(info["val_shards"])]
    # the challenge's downloader fetches fineweb_train_000001 .. _{N}
    wanted += [(f"{prefix}/fineweb_train_{i:06d}.bin", dirs["train"] / f"fineweb_train_{i:06d}.bin")
               for i in range(1, n_train + 1)]
    for remote, local in wanted:
        if not local.is_file():
            fetch(f"{url}/{remote}", local)
    for d in (*dirs.values(), dirs["train"].parent, dirs["train"].parent.parent):
        d.chmod(0o755)
    return dirs["train"].parent


def _ensure(variant: str, part: str) -> Path:
    """The folder of one part (train / val / tokenizer), fetching the variant once if it is missing."""
    folder = layout(variant)[part]
    pattern = {"train": "fineweb_train_*.bin", "val": "fineweb_val_*.bin", "tokenizer": "*.model"}[part]
    if not list(folder.glob(pattern)):
        try:
            prepare(variant, train_shards=1 if part == "train" else 0)
        except (DataUnavailable, OSError) as e:
            raise DataUnavailable(
                f"{part}: the {variant} FineWeb export is not in the cache ({folder}) and could not be fetched: "
                f"{e}. Trials run without network: run `python data.py --variant {variant} --train-shards N` "
                f"once on a machine with network access (AUTORESEARCH_DATA_DIR chooses the parent folder)."
            ) from None
    return folder


def vocab_size(variant: str) -> int:
    return variant_info(variant)["vocab"]


def tokenizer_pieces(variant: str = "sp8192", tiny: bool = False) -> list[tuple[str, int]]:
    if tiny:
        return _tiny_pieces(vocab_size(variant))
    pieces = read_pieces(_ensure(variant, "tokenizer") / variant_info(variant)["tokenizer"])
    if len(pieces) != vocab_size(variant):
        raise ValueError(f"the {variant} tokenizer has {len(pieces)} pieces, expected {vocab_size(variant)}")
    return pieces


def train_shards(variant: str = "sp8192", tiny: bool = False) -> list[np.ndarray]:
    """Training token shards, in order (training may read these and nothing else)."""
    if tiny:
        return [_tiny_stream(_tiny_pieces(vocab_size(variant)), TINY_TRAIN_TOKENS, seed=1)]
    return [read_shard(p) for p in sorted(_ensure(variant, "train").glob("fineweb_train_*.bin"))]


def val_tokens(variant: str = "sp8192", tiny: bool = False) -> np.ndarray:
    """The fixed validation split, all shards concatenated (the protected evaluation only)."""
    if tiny:
        return _tiny_stream(_tiny_pieces(vocab_size(variant)), TINY_VAL_TOKENS, seed=2)
    return np.concatenate([read_shard(p) for p in sorted(_ensure(variant, "val").glob("fineweb_val_*.bin"))])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Download a Parameter Golf FineWeb export into the cache.")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="sp8192")
    ap.add_argument("--train-shards", type=int, default=None, help="default: 80, what the challenge downloader fetches")
    args = ap.parse_args()
    try:
        print(f"FineWeb {args.variant} cached in {prepare(args.variant, args.train_shards)}")
    except (DataUnavailable, ValueError) as e:
        sys.exit(f"data.py: {e}")
