"""Protected: CIFAR-10, downloaded once and cached; a generated stand-in for tiny mode.

Real data: the python pickles from the CIFAR-10 home page, checked against
their MD5, converted once to ``train.npz``/``test.npz`` (uint8 images
[N, 3, 32, 32], int64 labels) under the cache folder:
``$AUTORESEARCH_DATA_DIR/cifar10`` or ``/var/tmp/autoresearch-data/cifar10``.
Trials run without network by default, so fetch it once beforehand::

    python data.py            # downloads, converts, prints the cache folder

Tiny data (``load(split, tiny=True)``): class-conditional 16x16 images that a
small conv net separates in a few CPU seconds; identical in every process.

Run as a script or imported; needs only numpy (and the standard library).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
DEFAULT_DATA_DIR = "/var/tmp/autoresearch-data"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

TINY_SIZE = 16  # pixels per side of a tiny image
TINY_COUNTS = {"train": 1024, "test": 512}
TINY_SEEDS = {"train": 11, "test": 12}


class DataUnavailable(RuntimeError):
    """The data is neither cached nor downloadable from here."""


def data_dir() -> Path:
    return Path(os.environ.get("AUTORESEARCH_DATA_DIR") or DEFAULT_DATA_DIR) / "cifar10"


def fetch(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (atomically); raises DataUnavailable with the cause."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise DataUnavailable(f"could not download {url}: {e}") from None
    if md5 is not None and digest.hexdigest() != md5:
        part.unlink(missing_ok=True)
        raise DataUnavailable(f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5})")
    os.replace(part, dest)
    return dest


def _share(path: Path) -> None:
    """World-readable, so trials running as another user can read the cache."""
    path.chmod(0o755 if path.is_dir() else 0o644)


def _batches(tar: tarfile.TarFile, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
    xs, ys = [], []
    for name in names:
        if name not in members:
            raise DataUnavailable(f"the CIFAR-10 archive has no {name}")
        blob = pickle.load(io.BytesIO(tar.extractfile(members[name]).read()), encoding="bytes")
        xs.append(np.asarray(blob[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(blob[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def prepare(root: Path | None = None, url: str | None = None, md5: str | None = CIFAR_MD5) -> Path:
    """Make sure ``train.npz`` and ``test.npz`` are in the cache; download once if not."""
    root, url = root or data_dir(), url or CIFAR_URL
    if all((root / f"{s}.npz").is_file() for s in ("train", "test")):
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
        _share(root)
    except OSError as e:
        raise DataUnavailable(f"cannot create the cache folder {root}: {e}") from None
    archive = fetch(url, root / "cifar-10-python.tar.gz", md5)
    with tarfile.open(archive, "r:gz") as tar:
        for split, names in (("train", TRAIN_BATCHES), ("test", (TEST_BATCH,))):
            x, y = _batches(tar, names)
            tmp = root / f"{split}.tmp{os.getpid()}.npz"
            np.savez(tmp, images=x, labels=y)
            os.replace(tmp, root / f"{split}.npz")
            _share(root / f"{split}.npz")
    archive.unlink()
    return root


def synthetic(split: str, n: int | None = None, size: int = TINY_SIZE, seed: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Generated images: a smooth colour template per class, shifted and noised.

    Deterministic for a (split, n, size, seed); the templates are shared by
    both splits so the test split measures generalisation.
    """
    n = TINY_COUNTS[split] if n is None else n
    templates = np.random.default_rng(0).uniform(0, 1, size=(10, 3, 4, 4))
    reps = -(-size // 4)
    templates = np.kron(templates, np.ones((1, 1, reps, reps)))[:, :, :size, :size]
    rng = np.random.default_rng(TINY_SEEDS[split] if seed is None else seed)
    labels = rng.integers(0, 10, size=n)
    images = templates[labels]
    shifts = rng.integers(-2, 3, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):
        images[i] = np.roll(images[i], (int(dy), int(dx)), axis=(1, 2))
    images = images + rng.normal(0, 0.25, size=images.shape)
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels.astype(np.int64)


def load(split: str, tiny: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, H, W], labels int64 [N]) of ``split`` ("train" or "test").

    Raises:
        DataUnavailable: not cached and not downloadable; the message says what to do.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if tiny:
        return synthetic(split)
    path = data_dir() / f"{split}.npz"
    if not path.is_file():
        try:
            prepare()
        except DataUnavailable as e:
            raise DataUnavailable(
                f"CIFAR-10 is not in the cache ({path}) and could not be fetched: {e}. Trials run "
                f"without network: run `python data.py` once on a machine with network access, or put "
                f"train.npz/test.npz there (AUTORESEARCH_DATA_DIR chooses the parent folder)."
            ) from None
    with np.load(path) as f:
        return f["images"], f["labels"]


if __name__ == "__main__":
    try:
        print(f"CIFAR-10 cached in {prepare()}")
    except DataUnavailable as e:
        sys.exit(f"data.py: {e}")
