"""Protected: FineWeb token shards, the SentencePiece tokenizer's byte counts, tiny generated text.

Real data: the challenge's published export (``fineweb10B_sp1024``): shards of
uint16 tokens with a 256-word int32 header (magic 20240520, version 1, token
count), a fixed validation split (``fineweb_val_*``, the first 50k documents)
and the 1024-piece SentencePiece BPE model.  Cached under
``$AUTORESEARCH_DATA_DIR/parameter-golf`` (default ``/var/tmp/autoresearch-data``);
trials run without network, so fetch it once beforehand::

    python data.py --train-shards 10     # each train shard holds 100M tokens

Bits per byte need the byte length of every token: they are read from the
tokenizer's ``.model`` file (a protobuf, parsed here without the sentencepiece
package) the way the challenge counts them: a piece's UTF-8 bytes, plus one
for a leading "▁" unless the previous token is a boundary (control/unknown).

Tiny data (``tiny=True``): a generated 512-piece tokenizer (written in the same
protobuf format and parsed by the same code) and a Markov "language" over its
words; identical in every process.  Needs numpy and the standard library only.
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

BASE_URL = "https://huggingface.co/datasets/willdepueoai/parameter-golf/resolve/main/datasets"
DATASET = "fineweb10B_sp1024"
TOKENIZER = "fineweb_1024_bpe.model"
DEFAULT_DATA_DIR = "/var/tmp/autoresearch-data"
TRAIN_SHARDS = 10  # default download: 1B tokens, more than one H100 sees in 10 minutes
MAGIC, VERSION, HEADER_WORDS = 20240520, 1, 256

# SentencePiece piece types (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"

TINY_VOCAB = 512
TINY_TRAIN_TOKENS = 65_536
TINY_VAL_TOKENS = 8_192 + 1


class DataUnavailable(RuntimeError):
    """The data is neither cached nor downloadable from here."""


def data_dir() -> Path:
    return Path(os.environ.get("AUTORESEARCH_DATA_DIR") or DEFAULT_DATA_DIR) / "parameter-golf"


# ----- shards -------------------------------------------------------------

def write_shard(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def read_shard(path: Path) -> np.ndarray:
    """The tokens of one shard (memory-mapped, uint16)."""
    header = np.fromfile(path, dtype="<i4", count=HEADER_WORDS)
    if len(header) != HEADER_WORDS or header[0] != MAGIC or header[1] != VERSION:
        raise ValueError(f"{path}: not a token shard (bad header)")
    n = int(header[2])
    tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_WORDS * 4, shape=(n,))
    if len(tokens) != n:
        raise ValueError(f"{path}: truncated ({len(tokens)} of {n} tokens)")
    return tokens


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

def _tiny_pieces() -> list[tuple[str, int]]:
    pieces = [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)]
    pieces += [(f"<0x{b:02X}>", BYTE) for b in range(256)]
    suffixes = ["s", "ed", "ing", "er", "ly", "al", "ion", "ment", "ness", "ful", "ous", "ive", "est"]
    rng = np.random.default_rng(7)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: list[str] = []
    while len(words) < TINY_VOCAB - len(pieces) - len(suffixes):
        w = "".join(rng.choice(syllables, size=int(rng.integers(1, 4))))
        if w not in words:
            words.append(w)
    pieces += [(SPACE + w, NORMAL) for w in words] + [(s, NORMAL) for s in suffixes]
    return pieces


def _tiny_stream(n: int, seed: int) -> np.ndarray:
    """Documents of a Markov chain over words: each word has three likely successors."""
    pieces = _tiny_pieces()
    words = np.array([i for i, (p, k) in enumerate(pieces) if k == NORMAL and p.startswith(SPACE)])
    suffixes = np.array([i for i, (p, k) in enumerate(pieces) if k == NORMAL and not p.startswith(SPACE)])
    period, comma = 3 + ord("."), 3 + ord(",")
    table = np.random.default_rng(3).integers(0, len(words), size=(len(words), 3))
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.uint16)
    i, w = 0, 0
    while i < n:
        if i == 0 or rng.random() < 0.02:
            out[i], i = 1, i + 1  # <s>: a new document
            w = int(rng.integers(len(words)))
            continue
        r = rng.random()
        w = int(table[w, rng.integers(3)]) if r < 0.9 else int(rng.integers(len(words)))
        out[i], i = words[w], i + 1
        if i < n and rng.random() < 0.1:
            out[i], i = suffixes[w % len(suffixes)], i + 1
        if i < n and rng.random() < 0.08:
            out[i], i = (period if rng.random() < 0.5 else comma), i + 1
    return out


# ----- public face --------------------------------------------------------

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
    os.replace(part, dest)
    dest.chmod(0o644)
    return dest


def prepare(train_shards: int = TRAIN_SHARDS, root: Path | None = None, base_url: str | None = None) -> Path:
    """Download what is missing: tokenizer, validation shard, ``train_shards`` train shards."""
    root, base_url = root or data_dir(), base_url or BASE_URL
    wanted = [(f"tokenizers/{TOKENIZER}", root / TOKENIZER),
              (f"datasets/{DATASET}/fineweb_val_000000.bin", root / "fineweb_val_000000.bin")]
    wanted += [(f"datasets/{DATASET}/fineweb_train_{i:06d}.bin", root / f"fineweb_train_{i:06d}.bin")
               for i in range(train_shards)]
    for remote, local in wanted:
        if not local.is_file():
            fetch(f"{base_url}/{remote}", local)
    root.chmod(0o755)
    return root


def _ensure(what: str) -> Path:
    root = data_dir()
    if not (root / TOKENIZER).is_file() or not (root / "fineweb_val_000000.bin").is_file() or \
            not list(root.glob("fineweb_train_*.bin")):
        try:
            prepare(root=root)
        except (DataUnavailable, OSError) as e:
            raise DataUnavailable(
                f"{what}: the FineWeb shards are not in the cache ({root}) and could not be fetched: {e}. "
                f"Trials run without network: run `python data.py --train-shards N` once on a machine with "
                f"network access (AUTORESEARCH_DATA_DIR chooses the parent folder)."
            ) from None
    return root


def tokenizer_pieces(tiny: bool = False) -> list[tuple[str, int]]:
    return _tiny_pieces() if tiny else read_pieces(_ensure("tokenizer") / TOKENIZER)


def train_shards(tiny: bool = False) -> list[np.ndarray]:
    """Training token shards, in order."""
    if tiny:
        return [_tiny_stream(TINY_TRAIN_TOKENS, seed=1)]
    return [read_shard(p) for p in sorted(_ensure("training").glob("fineweb_train_*.bin"))]


def val_tokens(tiny: bool = False) -> np.ndarray:
    """The fixed validation split, all shards concatenated."""
    if tiny:
        return _tiny_stream(TINY_VAL_TOKENS, seed=2)
    return np.concatenate([read_shard(p) for p in sorted(_ensure("validation").glob("fineweb_val_*.bin"))])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Download the Parameter Golf FineWeb export into the cache.")
    ap.add_argument("--train-shards", type=int, default=TRAIN_SHARDS)
    args = ap.parse_args()
    try:
        print(f"FineWeb shards cached in {prepare(args.train_shards)}")
    except DataUnavailable as e:
        sys.exit(f"data.py: {e}")
