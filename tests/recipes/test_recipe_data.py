"""The recipes' real data loaders, run on generated files served over HTTP on loopback.

The real datasets cannot be fetched from here; these tests build files in the
published formats (CIFAR-10 python pickles in a tar.gz, Parameter Golf token
shards and a SentencePiece model, FineWeb-Edu parquet and a DCLM eval bundle),
serve them locally and run the same download, cache and parsing code a real
run uses.  Without cache and network every loader fails with a message that
says what to run.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.recipes.test_reference_recipes import RECIPES, load_module

CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens


@pytest.fixture
def served(tmp_path):
    """(folder, base URL) of an HTTP server on loopback serving the folder."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# ----- CIFAR-10 ------------------------------------------------------------------

def _cifar_archive(path: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(0)
    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, 10, size=3)]
            blob = pickle.dumps({b"data": x, b"labels": y})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            batches[name] = (x, y)
    return batches


def test_cifar_downloads_once_checks_md5_and_caches(served, tmp_path, monkeypatch):
    www, url = served
    data = load_module(RECIPES / "cifar10-airbench96" / "data.py", "cifar_data")
    batches = _cifar_archive(www / "cifar.tar.gz")
    md5 = hashlib.md5((www / "cifar.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(data.DataUnavailable, match="checksum mismatch"):
        data.prepare(url=f"{url}/cifar.tar.gz", md5="0" * 32)
    root = data.prepare(url=f"{url}/cifar.tar.gz", md5=md5)
    assert root == tmp_path / "cache" / "cifar10" and not (root / "cifar-10-python.tar.gz").exists()
    assert (root / "train.npz").stat().st_mode & 0o777 == 0o644  # readable by the sandbox user
    (www / "cifar.tar.gz").unlink()  # later loads never touch the network
    x, y = data.load("train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x[:3].reshape(3, -1), batches["data_batch_1"][0])
    assert y.tolist()[-3:] == batches["data_batch_5"][1]
    xt, yt = data.load("test")
    assert np.array_equal(xt.reshape(3, -1), batches["test_batch"][0]) and yt.tolist() == batches["test_batch"][1]


def test_cifar_without_cache_or_network_says_what_to_do(tmp_path, monkeypatch):
    data = load_module(RECIPES / "cifar10-airbench96" / "data.py", "cifar_data_offline")
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "CIFAR_URL", f"{CLOSED}/cifar.tar.gz")
    with pytest.raises(data.DataUnavailable) as e:
        data.load("train")
    assert "not in the cache" in str(e.value) and "python data.py" in str(e.value)
    assert str(tmp_path / "empty" / "cifar10") in str(e.value)


# ----- Parameter Golf -------------------------------------------------------------

def test_parameter_golf_shards_tokenizer_and_byte_counts(served, tmp_path, monkeypatch):
    www, url = served
    data = load_module(RECIPES / "parameter-golf" / "data.py", "golf_data_real")
    info = data.variant_info("sp8192")
    assert (info["dataset"], info["tokenizer"]) == ("fineweb10B_sp8192", "fineweb_8192_bpe.model")
    pieces = [("<unk>", data.UNKNOWN), ("<s>", data.CONTROL), ("</s>", data.CONTROL)]
    pieces += [(f"<0x{b:02X}>", data.BYTE) for b in range(256)]
    pieces += [("\u2581the", data.NORMAL), ("re", data.NORMAL), ("\u2581\u00e9", data.NORMAL)]
    pieces += [(f"p{i}", data.NORMAL) for i in range(8192 - len(pieces))]
    (www / "tokenizers").mkdir()
    data.write_pieces(www / "tokenizers" / info["tokenizer"], pieces)
    shards = www / "datasets" / info["dataset"]
    shards.mkdir(parents=True)
    rng = np.random.default_rng(1)
    made = {name: rng.integers(0, len(pieces), size=n, dtype=np.uint16)
            for name, n in (("fineweb_val_000000.bin", 500), ("fineweb_train_000001.bin", 700),
                            ("fineweb_train_000002.bin", 300), ("fineweb_train_000003.bin", 10))}
    for name, tokens in made.items():
        data.write_shard(shards / name, tokens)
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="has 80 train shards"):
        data.prepare("sp8192", train_shards=81, base_url=url)
    root = data.prepare("sp8192", train_shards=2, base_url=url)  # the challenge's numbering starts at 1
    for p in list(www.rglob("*.bin")):
        p.unlink()  # from here on, only the cache
    # each step's part in its own folder: training never needs the val or tokenizer folder
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "tokenizer/fineweb_8192_bpe.model", "train/fineweb_train_000001.bin", "train/fineweb_train_000002.bin",
        "val/fineweb_val_000000.bin"]
    assert root == tmp_path / "cache" / "parameter-golf" / "sp8192"
    assert data.tokenizer_pieces("sp8192") == pieces
    train = data.train_shards("sp8192")
    assert [len(s) for s in train] == [700, 300]
    assert np.array_equal(train[1], made["fineweb_train_000002.bin"])
    assert np.array_equal(data.val_tokens("sp8192"), made["fineweb_val_000000.bin"])
    # "<s> ▁the re ▁é ." is the text "there é.": 9 UTF-8 bytes; no space after the boundary token
    ids = np.array([1, 259, 260, 261, 3 + ord(".")])
    assert data.count_bytes(ids[:-1], ids[1:], data.byte_luts(pieces)) == len("there \u00e9.".encode()) == 9


def test_parameter_golf_bad_shard_and_offline_errors(tmp_path, monkeypatch):
    data = load_module(RECIPES / "parameter-golf" / "data.py", "golf_data_offline")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 2048)
    with pytest.raises(ValueError, match="bad header"):
        data.read_shard(bad)
    short = tmp_path / "short.bin"
    data.write_shard(short, np.arange(100, dtype=np.uint16))
    short.write_bytes(short.read_bytes()[:-2])  # one token missing: the size no longer matches the header
    with pytest.raises(ValueError, match="the header says"):
        data.read_shard(short)
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "HF", CLOSED + "/{repo}")
    for variant in ("sp1024", "sp8192"):
        with pytest.raises(data.DataUnavailable) as e:
            data.train_shards(variant)
        assert f"python data.py --variant {variant} --train-shards" in str(e.value)
        assert "could not be fetched" in str(e.value) and str(tmp_path / "empty") in str(e.value)
    assert not list((tmp_path / "empty").rglob("*.bin")), "nothing half-downloaded is left behind"


# ----- nanochat ------------------------------------------------------------------

def _bundle(root: Path) -> None:
    b = root / "eval_bundle"
    (b / "eval_data").mkdir(parents=True)
    (b / "core.yaml").write_text(
        "icl_tasks:\n"
        "- {label: capitals, dataset_uri: capitals.jsonl, num_fewshot: [1], icl_task_type: multiple_choice}\n"
        "- {label: pronoun, dataset_uri: pronoun.jsonl, num_fewshot: [0], icl_task_type: schema}\n"
        "- {label: count, dataset_uri: count.jsonl, num_fewshot: [0], icl_task_type: language_modeling,"
        " continuation_delimiter: ' '}\n")
    (b / "eval_meta_data.csv").write_text("Eval Task,Random baseline\ncapitals,25\npronoun,50\ncount,0\n")
    mc = [{"query": f"Capital of {c}?", "choices": ["Xa", "Yb", "Zc", "Wd"], "gold": i % 4}
          for i, c in enumerate(["France", "Peru", "Chad"])]
    schema = [{"context_options": ["Ann fed the cat", "Bob fed the dog"], "continuation": "it purred", "gold": 0}]
    lm = [{"context": "one two three ", "continuation": "four"}]
    for name, items in (("capitals", mc), ("pronoun", schema), ("count", lm)):
        (b / "eval_data" / f"{name}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))


def test_nanochat_prepare_downloads_trains_a_tokenizer_and_renders_core_tasks(served, tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")  # installed with mlflow
    import pyarrow as pa

    www, url = served
    data = load_module(RECIPES / "nanochat-d12" / "data.py", "chat_data_real")
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    rng = np.random.default_rng(0)
    for i in range(3):
        docs = [" ".join(rng.choice(words, size=30)) + "." for _ in range(40)]
        pq.write_table(pa.table({"text": docs}), www / f"shard_{i:05d}.parquet")
    _bundle(tmp_path / "bundle")
    with zipfile.ZipFile(www / "eval_bundle.zip", "w") as z:
        for p in (tmp_path / "bundle").rglob("*"):
            z.write(p, p.relative_to(tmp_path / "bundle").as_posix())
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(data.DataUnavailable, match="python data.py"):
        data.train_shards()
    root = data.prepare(shards=2, val_shard=2, shard_url=f"{url}/shard_{{:05d}}.parquet",
                        bundle_url=f"{url}/eval_bundle.zip", vocab_size=300, tokenizer_chars=100_000)
    # training's files apart from the protected evaluation's (validation tokens, CORE tasks with gold answers)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.bin")) == [
        "eval/val.bin", "train/train_00000.bin", "train/train_00001.bin"]
    assert (root / "eval" / "core.npz").is_file() and not list((root / "train").glob("*.npz"))
    train, val = data.train_shards(), data.val_tokens()
    assert all(s[0] == data.BOS for s in train) and (val == data.BOS).sum() == 40  # one BOS per document
    assert max(int(s.max()) for s in train) < 300

    tasks = {t.name: t for t in data.core_tasks()}
    assert [(t.kind, t.chance, len(t.examples)) for t in tasks.values()] == [
        ("multiple_choice", 0.25, 3), ("schema", 0.5, 1), ("language_modeling", 0.0, 1)]
    for cands, spans, gold in tasks["capitals"].examples:
        assert len(cands) == 4 and 0 <= gold < 4 and all(c[0] == data.BOS for c in cands)
        starts = {a for a, _ in spans}
        assert len(starts) == 1 and all(b == len(c) for c, (_, b) in zip(cands, spans, strict=True))
        prefix = cands[0][: starts.pop()]
        assert all(np.array_equal(c[: len(prefix)], prefix) for c in cands)  # the scored span is the answer
    (cands, spans, gold), = tasks["pronoun"].examples
    assert gold == 0 and len({b - a for a, b in spans}) == 1  # the same continuation after each context
    (root / "eval").rename(tmp_path / "sealed")  # what training sees when the evaluation data is sealed
    assert len(data.train_shards()) == 2
    with pytest.raises(data.DataUnavailable, match="python data.py"):
        data.core_tasks()


def test_nanochat_rendering_follows_nanochat_templates(tmp_path):
    data = load_module(RECIPES / "nanochat-d12" / "data.py", "chat_data_render")
    _bundle(tmp_path)
    text_of: dict[tuple[int, ...], str] = {}

    def encode(s: str) -> list[int]:
        ids = [ord(c) for c in s]
        text_of[tuple(ids)] = s
        return ids

    tasks = {t.name: t for t in data.render_bundle(tmp_path / "eval_bundle", encode)}
    cands, spans, gold = tasks["capitals"].examples[0]
    texts = ["".join(chr(i) for i in c[1:]) for c in cands]
    assert texts[0].count("\n\n") == 1 and texts[0].startswith("Capital of ")  # one few-shot example first
    assert [t[a - 1 : b - 1] for t, (a, b) in zip(texts, spans, strict=True)] == ["Xa", "Yb", "Zc", "Wd"]
    (lm_seq,), ((a, b),), _ = tasks["count"].examples[0]
    assert "".join(chr(i) for i in lm_seq[a:b]) == " four"


def test_the_data_cache_folder_reaches_trials_through_the_scrubbed_environment(tmp_path, monkeypatch):
    from mlflow_autoresearch.evaluator import evaluate_code
    from mlflow_autoresearch.recipe import load_recipe
    from tests.conftest import write_recipe

    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path / "datasets"))
    root = write_recipe(tmp_path / "r", {
        "name": "env", "editable": ["train.py"], "command": "python train.py",
        "metric": {"name": "seen", "goal": "maximize"}, "limits": {"train_seconds": 30}},
        {"train.py": f"import os\nprint('seen:', int(os.environ.get('AUTORESEARCH_DATA_DIR') == {str(tmp_path / 'datasets')!r}))\n"})
    assert evaluate_code(load_recipe(root), root).score == 1.0
