"""The one-command demo: generate the demo archive, train on it, index it, pick example queries.

Every step reuses what an earlier run left (archive, model, index), so re-running is quick.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from elmsearch.datasets.demo import GENERATOR_VERSION, DemoArchive, generate_archive
from elmsearch.train.trainer import build_model, demo_config, load_items, train

logger = logging.getLogger(__name__)

TEXT_QUERY = "generalized 3 Hz spike and wave discharges"


def demo_archive(directory: str | os.PathLike, n_recordings: int = 100, seed: int = 0,
                 version: int = GENERATOR_VERSION) -> DemoArchive:
    """Generate (or reuse) the demo archive in ``directory/archive`` (``version``: the generator's)."""
    return generate_archive(Path(directory) / "archive", n_recordings=n_recordings, seed=seed, version=version)


def demo_model(archive: DemoArchive, model_dir: str | os.PathLike, seed: int = 0, on_step=None) -> dict:
    """Train the demo model into ``model_dir`` unless a finished one is there; returns its metrics."""
    out = Path(model_dir)
    metrics = out / "metrics.json"
    if metrics.is_file() and (out / "model.safetensors").is_file():
        logger.info("%s: trained model found, reused", out)
        return json.loads(metrics.read_text())
    items = load_items(archive.root, 5.0, "sentence")
    return train(build_model("elm-5s", seed=seed), items, out, demo_config(seed=seed), resume=True, on_step=on_step)


def demo_query_recording(archive: DemoArchive, model_dir: str | os.PathLike) -> Path:
    """A held-out (validation-patient) recording with generalized spike-and-wave, for the EEG queries."""
    split = json.loads((Path(model_dir) / "split.json").read_text())
    held_out = set(split["val"])
    with archive.labels_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows.sort(key=lambda r: (r["subject"] not in held_out, r["spike_wave"] != "1", r["path"]))
    return archive.root / rows[0]["path"]


def demo_next_steps(db: str | os.PathLike, query: str | os.PathLike) -> list[str]:
    """The commands to try after the demo, for its index folder and one of its recordings (shell-quoted)."""
    import shlex

    d, q = shlex.quote(str(db)), shlex.quote(str(query))
    return [f'elmsearch search "focal slowing" --db {d}',
            f'elmsearch search "no epileptiform discharges" --db {d} --source reports',
            f"elmsearch similar {q} --db {d}",
            f"elmsearch show 1 --db {d}",
            f"elmsearch serve --db {d}      # then open http://127.0.0.1:8000/"]
