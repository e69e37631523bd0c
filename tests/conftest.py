"""Shared fixtures: the integration data folder and a writer of small synthetic EDF files."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from edfio import Edf, EdfAnnotation, EdfSignal, Recording

from elmsearch.signal.channels import STANDARD_1020, tuh_channel_name

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# TUH style: the 21 electrodes of the 10-20 system referenced to "REF", plus an EKG lead.
TUH_LABELS: tuple[str, ...] = tuple(tuh_channel_name(e) for e in STANDARD_1020) + (
    "EEG EKG1-REF",
)
TUH_PATIENT = "aaaaaaab F 01-JAN-1961 aaaaaaab Age:53"
TUH_STARTDATE = dt.date(2015, 3, 4)
TUH_STARTTIME = dt.time(10, 20, 30)
PHYSICAL_RANGE_UV = (-3000.0, 3000.0)


def synthetic_uv(
    n_chans: int, sfreq: float, duration: float, seed: int = 0, sine_uv: float = 20.0
) -> np.ndarray:
    """Seeded EEG-like signals in microvolts: noise (std 10 uV) plus a 10 Hz sine.

    Returns
    -------
    array, shape (n_chans, round(duration * sfreq))
    """
    rng = np.random.default_rng(seed)
    n_times = int(round(duration * sfreq))
    t = np.arange(n_times) / sfreq
    noise = rng.normal(0.0, 10.0, size=(n_chans, n_times))
    phases = rng.uniform(0, 2 * np.pi, size=(n_chans, 1))
    return noise + sine_uv * np.sin(2 * np.pi * 10.0 * t + phases)


@pytest.fixture(scope="session", autouse=True)
def _trace_cache(tmp_path_factory):
    """Traced text encoders go to a session folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELMSEARCH_CACHE_DIR", str(tmp_path_factory.mktemp("elmsearch-cache")))
        yield


@pytest.fixture
def restore_logging():
    """Put the root logger back after a test: the CLI's root callback reconfigures logging
    onto the streams of Typer's CliRunner, which it closes."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def pg_url():
    """A PostgreSQL server's URL (``ELMSEARCH_TEST_PG_URL``) with every elmsearch table dropped and
    re-created (isolation); skips when it is not set."""
    import os

    url = os.environ.get("ELMSEARCH_TEST_PG_URL")
    if not url:
        pytest.skip("set ELMSEARCH_TEST_PG_URL=postgresql+psycopg://... to run the PostgreSQL tests")
    pytest.importorskip("psycopg")
    from db import Base, make_engine

    engine = make_engine(url, create=False)
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared integration data folder (``../shared/data`` next to the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data absent: {SHARED_DATA} does not exist (integration data)")
    return SHARED_DATA


def write_edf_file(
    path: Path,
    labels: Sequence[str] = TUH_LABELS,
    sfreq: float = 250,
    signals: np.ndarray | None = None,
    *,
    duration: float = 30,
    patient: str = TUH_PATIENT,
    startdate: dt.date | None = TUH_STARTDATE,
    starttime: dt.time = TUH_STARTTIME,
    seed: int = 0,
    annotations: Sequence[tuple[float, float | None, str]] | None = None,
) -> Path:
    """Write a small synthetic EDF (µV signals, shape (n_labels, n_times); see ``write_edf``) to ``path``."""
    assert duration <= 60 or signals is not None, "keep synthetic EDFs small"
    labels = list(labels)
    if signals is None:
        signals = synthetic_uv(len(labels), sfreq, duration, seed=seed)
    signals = np.asarray(signals, dtype=float)
    assert signals.shape[0] == len(labels) and signals.shape[1] <= 60 * sfreq, signals.shape
    edf = Edf(
        [
            EdfSignal(row, sfreq, label=label, physical_dimension="uV", physical_range=PHYSICAL_RANGE_UV)
            for label, row in zip(labels, signals, strict=True)
        ],
        recording=Recording(startdate=startdate),
        starttime=starttime,
        annotations=[EdfAnnotation(*a) for a in annotations] if annotations else None,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    edf.write(path)
    # The patient field is patched in raw, so tests can write any TUH-style or odd field
    # (edfio validates EDF+ subfields and would refuse e.g. "Age:0.5" spacing variants).
    field = patient.encode("latin-1")
    assert len(field) <= 80
    with open(path, "r+b") as fh:
        fh.seek(8)
        fh.write(field.ljust(80, b" "))
    return path


@pytest.fixture
def write_edf(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small synthetic EDF under ``tmp_path`` and returning its path.

    Keyword arguments: ``labels`` (TUH-style 10-20 + EKG by default), ``sfreq`` (250),
    ``duration`` in s (30), ``signals`` in uV, shape (n_labels, n_times) (seeded noise +
    10 Hz sine by default), ``patient`` (the raw 80-character patient field, TUH style by
    default), ``startdate`` (4 Mar 2015; None writes an anonymised EDF+ start date),
    ``starttime``, ``seed``, ``annotations`` (``(onset, duration, text)`` tuples: an EDF+C
    annotation signal).
    """

    def _write(name: str | Path = "rec.edf", *, labels: Sequence[str] = TUH_LABELS, sfreq: float = 250,
               duration: float = 30, signals: np.ndarray | None = None, **kwargs) -> Path:
        assert duration <= 60, "keep synthetic EDFs small"
        if signals is not None:
            assert np.shape(signals) == (len(labels), int(round(duration * sfreq))), np.shape(signals)
        return write_edf_file(tmp_path / name, labels, sfreq, signals, duration=duration, **kwargs)

    return _write


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory):
    """A small demo archive (12 recordings of 15-25 s, seeded), shared by the index and query tests."""
    from elmsearch.datasets.demo import generate_archive

    return generate_archive(tmp_path_factory.mktemp("demo") / "archive", n_recordings=12, seed=7,
                            min_minutes=0.25, max_minutes=0.4)


@pytest.fixture(scope="session")
def demo_model_dir(demo_archive, tmp_path_factory):
    """A model trained for two epochs on ``demo_archive`` (frozen trunk: seconds on a CPU)."""
    import torch

    from elmsearch.train.trainer import TrainConfig, build_model, load_items, train

    out = tmp_path_factory.mktemp("demo_model")
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=4, max_eeg=4, max_text=4, val_fraction=0.25, seed=0,
                      freeze_eeg=True, val_max_windows=4, device="cpu")
    train(build_model("elm-5s"), load_items(demo_archive.root, 5.0, "sentence"), out, cfg, resume=False)
    return out


@pytest.fixture
def archive(demo_archive, tmp_path):
    """A private copy of the demo archive, for tests that change, add or delete its files.

    Test modules with an archive of their own (synthetic EDFs) override this fixture.
    """
    dest = tmp_path / "archive"
    shutil.copytree(demo_archive.root, dest)
    return dest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """An EEG-only MODEL_DIR: the ELM release when ``../shared`` has it, else a fresh elm-5s."""
    release = SHARED_DATA / "elm_pretrained" / "5s"
    if (release / "config_xy.yaml").is_file():
        return release
    import torch

    from elmsearch.models import create_model
    from elmsearch.models.factory import save_model

    torch.manual_seed(0)
    model = create_model("elm-5s", text_dim=384)
    model.has_text = False
    return save_model(model, tmp_path_factory.mktemp("eeg-only-model"))


@contextlib.contextmanager
def read_only_view(folder: Path, tmp_path: Path):
    """``folder`` on a read-only bind mount (as root), else with its write permissions removed."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(folder), str(target)], capture_output=True).returncode != 0:
            pytest.skip("mount --bind is not permitted here")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        try:
            yield target
        finally:
            subprocess.run(["umount", "-l", str(target)], check=False)
        return
    for dirpath, _dirnames, filenames in os.walk(folder):
        for n in filenames:
            os.chmod(os.path.join(dirpath, n), 0o400)
        os.chmod(dirpath, 0o500)
    try:
        yield folder
    finally:
        for dirpath, _, _ in os.walk(folder):
            os.chmod(dirpath, 0o700)
