"""Training from windows kept on disk (``elmsearch.io.window_store``, issue 27)."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest

from elmsearch.io.window_store import WindowStore, WindowStoreFull


def test_windows_are_written_once_by_content_and_preprocessing(write_edf, tmp_path):
    f = write_edf("a.edf", duration=30, seed=1)
    store = WindowStore(tmp_path / "store")
    made = []

    def make():
        made.append(1)
        return np.random.default_rng(0).normal(size=(6, 20, 500)).astype(np.float32), np.ones(6, bool)

    w = store.windows(f, {"sfreq": 100}, 5.0, make)
    assert len(w) == 6 and w[2:4].dtype == np.float16 and w[np.array([5, 0])].shape == (2, 20, 500)
    copy = tmp_path / "elsewhere.edf"
    shutil.copy(f, copy)
    again = store.windows(copy, {"sfreq": 100}, 5.0, make)  # the same bytes under another name: read back
    np.testing.assert_array_equal(again[0:6], w[0:6])
    assert len(made) == 1 and (store.hits, store.writes) == (1, 1)
    store.windows(f, {"sfreq": 200}, 5.0, make)  # other preprocessing: other windows
    assert len(made) == 2 and len(list((tmp_path / "store").glob("*[0-9a-f].npy"))) == 2
    assert store.get(store.key(f, {"sfreq": 100}, 5.0))[1].tolist() == [True] * 6  # the mask beside them
    small = WindowStore(tmp_path / "small", max_bytes=store.size() // 4)
    with pytest.raises(WindowStoreFull, match="limit"):
        small.windows(f, {"sfreq": 100}, 5.0, make)
    assert not list((tmp_path / "small").iterdir())  # nothing half-written


@pytest.fixture(scope="module")
def bigger_archive(tmp_path_factory):
    from elmsearch.datasets.demo import generate_archive

    return generate_archive(tmp_path_factory.mktemp("store") / "archive", n_recordings=24, seed=3)


def _train(items, out, epochs=1):
    from elmsearch.train.trainer import build_model, recipe_config, train

    cfg = recipe_config("heads", seed=0, device="cpu", epochs=epochs, batch_size=4, max_eeg=8)
    return train(build_model("elm-5s", seed=0), items, out, cfg, resume=False)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_training_from_the_store_matches_memory_and_does_not_grow_with_the_archive(bigger_archive, tmp_path):
    from elmsearch.train.trainer import load_items

    in_memory = _train(load_items(bigger_archive.root, 5.0, "sentence"), tmp_path / "m1")
    store = WindowStore(tmp_path / "store")
    items = load_items(bigger_archive.root, 5.0, "sentence", store=store)  # fills the store
    assert store.writes == len(items) and store.hits == 0
    from_disk = _train(items, tmp_path / "m2")
    for split in ("val", "untrained_val"):  # the same training, same seed, windows from disk
        assert _flat(from_disk[split]) == pytest.approx(_flat(in_memory[split]), abs=1e-6)
    window_bytes = sum(len(it.windows) * it.windows.row_bytes for it in items)
    half = len(items) // 2
    # reading (from the store) and one epoch, on half the archive and on all of it
    small = _peak(lambda: _train(load_items(bigger_archive.root, 5.0, "sentence", store=store)[:half], tmp_path / "s"))
    full = _peak(lambda: _train(load_items(bigger_archive.root, 5.0, "sentence", store=store), tmp_path / "f"))
    assert store.writes == len(items)  # nothing preprocessed twice
    assert full < 1.25 * small, (small, full)  # the memory does not follow the archive
    in_ram = _peak(lambda: _train(load_items(bigger_archive.root, 5.0, "sentence"), tmp_path / "r"))
    assert in_ram > full + window_bytes / 2, (in_ram, full, window_bytes)  # what the store saves


def test_two_processes_train_one_model_with_torchrun_on_cpu(demo_archive, tmp_path):
    """torch.distributed with gloo: each process trains on its share, the weights stay identical, rank 0 writes."""
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "model"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}

    def torchrun(epochs: int):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "cli", "-v", "train", str(demo_archive.root), "--out", str(out), "--recipe",
                               "heads", "--epochs", str(epochs), "--device", "cpu", "--window-store",
                               str(tmp_path / "store")], cwd=repo, capture_output=True, text=True, timeout=600, env=env)

    proc = torchrun(2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = dict(re.findall(r"process (\d) of 2: weights and buffers (\w+)", proc.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]  # gradients averaged, buffers shared
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and (out / "model.safetensors").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [-1, 0, 1] and all(r.get("world_size") == 2 for r in log[1:])
    assert proc.stderr.count("best epoch") == 1  # one process reports
    more = torchrun(3)  # both processes resume from rank 0's checkpoint and stay identical
    assert more.returncode == 0, more.stderr[-3000:]
    assert more.stderr.count("resuming at epoch 2") == 2
    digests = dict(re.findall(r"process (\d) of 2: weights and buffers (\w+)", more.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [-1, 0, 1, 2]


def test_index_fills_the_store_and_reembed_train_read_it_without_preprocessing(archive, demo_model_dir, tmp_path,
                                                                               model_dir, monkeypatch):
    """`index --window-store` keeps the windows; a re-embedding, another index and training read them."""
    import json

    from db import Recording
    from elmsearch.io.windowed import WindowedRecording
    from elmsearch.train.trainer import load_items
    from indexer.pipeline import index_archive
    from indexer.store import IndexStore

    db, ws = tmp_path / "idx", tmp_path / "windows"
    n = len(list(archive.rglob("*.edf")))
    first = index_archive(archive, db, demo_model_dir, n_jobs=0, window_store=ws, window_store_gb=1)
    assert first.added == n and first.window_store["written"] == n and first.window_store.get("read", 0) == 0
    assert 0 < first.window_store["bytes"] < 2**30 and len(list(ws.glob("*.keep.npy"))) == n
    assert json.loads((db / "manifest.json").read_text())["window_store"]["path"] == str(ws.resolve())

    def no_signal(*_a, **_k):
        raise AssertionError("the signal was read again")

    with monkeypatch.context() as m:  # the manifest names the store: a model change reads no signal
        m.setattr(WindowedRecording, "windows", no_signal)
        m.setattr(WindowedRecording, "spill", no_signal)
        again = index_archive(archive, db, model_dir, n_jobs=0, reembed=True)
        assert again.updated == n and again.window_store["read"] == n and again.failed == 0
        other = index_archive(archive, tmp_path / "idx2", model_dir, n_jobs=0, window_store=ws)
        assert other.window_store["read"] == n
        items = load_items(archive, 5.0, "sentence", store=WindowStore(ws))  # training, same windows
        assert items and all(str(it.windows.fname).startswith(str(ws)) for it in items)

    def embeddings(folder):
        with IndexStore.open(folder).session() as s:
            rows = s.query(Recording).filter(Recording.emb.isnot(None))
            return {r.path: np.frombuffer(r.emb, np.float32) for r in rows}

    from_store, same = embeddings(db), embeddings(tmp_path / "idx2")
    assert from_store.keys() == same.keys() and len(same) == n
    for k in same:  # one recording embeds the same, whichever run wrote its windows
        np.testing.assert_array_equal(from_store[k], same[k])
    index_archive(archive, tmp_path / "idx3", model_dir, n_jobs=0)
    plain = embeddings(tmp_path / "idx3")
    assert plain.keys() == same.keys()
    for k in plain:  # and as from the file, to float16's precision
        cos = float(plain[k] @ same[k] / np.linalg.norm(plain[k]) / np.linalg.norm(same[k]))
        assert cos > 0.999, (k, cos)


def test_a_full_store_warns_once_and_the_recordings_still_index(archive, demo_model_dir, tmp_path, caplog):
    from indexer.pipeline import index_archive

    n = len(list(archive.rglob("*.edf")))
    summary = index_archive(archive, tmp_path / "idx", demo_model_dir, n_jobs=0, window_store=tmp_path / "w",
                            window_store_gb=0.0005)  # 0.5 MiB: a few of its 12
    assert summary.added == n and summary.failed == 0
    ws = summary.window_store
    assert 0 < ws["written"] < n and "limit" in ws["not_kept"] and ws["bytes"] <= 0.0005 * 2**30
    assert sum("window store" in r.getMessage() and "limit" in r.getMessage() for r in caplog.records) == 1


def test_frozen_trunk_features_kept_beside_the_windows_and_reused(bigger_archive, tmp_path, caplog):
    import logging

    from elmsearch.train.trainer import load_items

    store = WindowStore(tmp_path / "store")
    items = load_items(bigger_archive.root, 5.0, "sentence", store=store)
    from elmsearch.train.trainer import build_model, recipe_config, train

    def run(out):
        cfg = recipe_config("heads", seed=0, device="cpu", epochs=1, batch_size=4, max_eeg=8)
        return train(build_model("elm-5s", seed=0), items, out, cfg, resume=False, store=store)

    first = run(tmp_path / "a")
    feats = list((tmp_path / "store" / "features").glob("*.npy"))
    assert len(feats) == len(items)  # one file per recording, beside its windows
    with caplog.at_level(logging.INFO, logger="elmsearch.train.trainer"):
        second = run(tmp_path / "b")
    import re

    said = [re.search(r"features of (\d+) recordings read", r.getMessage()) for r in caplog.records]
    read = [int(m.group(1)) for m in said if m]
    assert sum(read) == len(items)  # training and validation recordings: the trunk did not run again
    assert _flat(second["val"]) == pytest.approx(_flat(first["val"]), abs=1e-6)
    in_memory = _train(items, tmp_path / "c")  # features in memory: the same training
    assert _flat(in_memory["val"]) == pytest.approx(_flat(first["val"]), abs=1e-6)


def test_training_from_the_store_stays_far_below_the_windows_bytes(tmp_path):
    """200 MB of windows on disk; training (heads recipe, features on disk too) allocates a fraction of it."""
    from elmsearch.train.trainer import TrainItem, _text_features, build_model, recipe_config, train

    store = WindowStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    items = []
    for i in range(40):  # 40 recordings of 250 windows (21 min each): 10,000 windows, 200 MB as float16
        w = store.put(f"{i:032x}", rng.normal(scale=20, size=(250, 20, 500)).astype(np.float32), np.ones(250, bool))
        items.append(TrainItem(f"p{i % 20}/s{i}", f"p{i % 20}", w, [f"finding {i % 3}", "normal background"],
                               str(w.fname)))
    window_bytes = sum(len(it.windows) * it.windows.row_bytes for it in items)
    assert window_bytes >= 200e6
    model = build_model("elm-5s", seed=0)
    _text_features(model, items[:1])  # the text encoder loaded before the count starts
    cfg = recipe_config("heads", seed=0, device="cpu", epochs=2, batch_size=8, max_eeg=8)
    peak = _peak(lambda: train(model, items, tmp_path / "m", cfg, resume=False, store=store))
    assert peak < window_bytes / 8, (peak, window_bytes)  # about a batch of 256 windows, not the archive
    assert len(list((tmp_path / "store" / "features").glob("*.npy"))) == len(items)


def test_index_command_states_the_store(archive, demo_model_dir, tmp_path):
    from typer.testing import CliRunner

    from cli.app import app

    ws = tmp_path / "w"
    args = ["index", str(archive), "--db", str(tmp_path / "idx"), "--model", str(demo_model_dir), "-j", "0"]
    res = CliRunner().invoke(app, [*args, "--window-store", str(ws), "--window-store-gb", "2"])
    assert res.exit_code == 0, res.output
    n = len(list(archive.rglob("*.edf")))
    assert f"0 read, {n} written" in " ".join(res.output.split()) and "MiB of 2 GiB" in res.output
    bad = CliRunner().invoke(app, [*args, "--window-store", str(archive / "x.txt"), "--runner", "ray"])
    assert bad.exit_code == 1 and "--window-store runs with --runner local" in bad.output
    (tmp_path / "file").write_text("x")
    bad = CliRunner().invoke(app, [*args, "--window-store", str(tmp_path / "file")])
    assert bad.exit_code == 1 and "not a folder" in bad.output


def test_trunk_feature_batches_do_not_change_the_features(demo_archive):
    """The frozen trunk's batch (256 on a CPU, sized to the free memory on a GPU) gives the same features."""
    from elmsearch.train.trainer import build_model, load_items, trunk_features, window_batch

    model = build_model("elm-5s", seed=0)
    items = load_items(demo_archive.root, 5.0, "sentence")[:4]
    assert window_batch(model) == 256  # this machine's CPU
    a, b = trunk_features(model, items), trunk_features(model, items, batch_size=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_a_store_that_cannot_be_written_never_fails_a_recording(archive, demo_model_dir, tmp_path, monkeypatch):
    import errno

    from indexer.pipeline import index_archive

    def broken(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(WindowStore, "put", broken)
    n = len(list(archive.rglob("*.edf")))
    summary = index_archive(archive, tmp_path / "idx", demo_model_dir, n_jobs=0, window_store=tmp_path / "w")
    assert summary.added == n and summary.failed == 0 and summary.window_store.get("written", 0) == 0
    assert "Read-only file system" in summary.window_store["not_kept"]


def test_the_store_counts_its_writes_instead_of_listing_the_folder_for_each(tmp_path, monkeypatch):
    store = WindowStore(tmp_path / "s", max_bytes=6 * (4 * 20 * 500 * 2) + 6 * 512)
    listed = []
    real = WindowStore.size
    monkeypatch.setattr(WindowStore, "size", lambda self: listed.append(1) or real(self))
    w = np.zeros((4, 20, 500), np.float32)
    for i in range(6):
        store.put(f"{i:032x}", w, np.ones(4, bool))
    assert len(listed) == 1  # one count of the folder, then its own writes added
    with pytest.raises(WindowStoreFull):  # and the limit still holds
        store.put("f" * 32, w, np.ones(4, bool))
    assert real(store) <= store.max_bytes
