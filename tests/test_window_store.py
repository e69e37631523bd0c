"""Training from windows kept on disk (``elmsearch.train.window_store``, issue 27)."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest

from elmsearch.train.window_store import WindowStore, WindowStoreFull


def test_windows_are_written_once_by_content_and_preprocessing(write_edf, tmp_path):
    f = write_edf("a.edf", duration=30, seed=1)
    store = WindowStore(tmp_path / "store")
    made = []

    def make():
        made.append(1)
        return np.random.default_rng(0).normal(size=(6, 20, 500)).astype(np.float32)

    w = store.windows(f, {"sfreq": 100}, 5.0, make)
    assert len(w) == 6 and w[2:4].dtype == np.float16 and w[np.array([5, 0])].shape == (2, 20, 500)
    copy = tmp_path / "elsewhere.edf"
    shutil.copy(f, copy)
    again = store.windows(copy, {"sfreq": 100}, 5.0, make)  # the same bytes under another name: read back
    np.testing.assert_array_equal(again[0:6], w[0:6])
    assert len(made) == 1 and (store.hits, store.writes) == (1, 1)
    store.windows(f, {"sfreq": 200}, 5.0, make)  # other preprocessing: other windows
    assert len(made) == 2 and len(list((tmp_path / "store").glob("*.npy"))) == 2
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
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "cli", "-v", "train", str(demo_archive.root), "--out", str(out), "--recipe", "heads",
                           "--epochs", "2", "--device", "cpu", "--window-store", str(tmp_path / "store")],
                          cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = dict(re.findall(r"process (\d) of 2: weights and buffers (\w+)", proc.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]  # gradients averaged, buffers shared
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and (out / "model.safetensors").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [-1, 0, 1] and all(r.get("world_size") == 2 for r in log[1:])
    assert proc.stderr.count("best epoch") == 1  # one process reports
