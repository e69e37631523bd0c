"""Tests of elmsearch.io.chunks and io.windowed: long recordings preprocessed in chunks match the whole file."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import scipy.signal as ss
from edfio import Edf, EdfSignal, Recording

from elmsearch.errors import TooShortError
from elmsearch.io.chunks import (
    iter_windows_chunked,
    min_overlap_s,
    n_times_out,
    plan_chunks,
    preprocess_chunked,
    span_unit,
)
from elmsearch.io.recording import make_windows
from elmsearch.io.windowed import WindowedRecording, read_recording
from elmsearch.signal.channels import TCP_ELECTRODES, tuh_channel_name
from elmsearch.signal.preprocessing import PreprocessingParams, preprocess, resample_ratio

MIN_CORR = 0.9999
EDGE = 2000  # output samples (20 s) left out at each end of the recording


def _long_volts(sfreq: float, duration: float, seed: int) -> np.ndarray:
    """Seeded EEG-like referential signals in volts, shape (17, n_times).

    Pink-ish noise (20 uV std), an 8-12 Hz rhythm and a 1-3 Hz rhythm per electrode,
    a slow drift (periods of minutes, 100 uV), a DC offset per electrode and 50 Hz line noise.
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration * sfreq))
    t = np.arange(n) / sfreq
    white = rng.normal(size=(17, n)).astype(np.float32)
    # sum of leaky integrators: about 1/f between 0.5 Hz and sfreq / 4
    x = white.copy()
    for fc in (0.5, 2.0, 8.0):
        a = np.exp(-2 * np.pi * fc / sfreq)
        x += ss.lfilter([1 - a], [1, -a], white, axis=1).astype(np.float32) * np.sqrt(sfreq / fc) / 4
    x = x.astype(np.float64)
    x *= 20e-6 / x.std(axis=1, keepdims=True)
    for lo, hi, amp in ((8, 12, 30e-6), (1, 3, 20e-6)):
        f = rng.uniform(lo, hi, (17, 1))
        x += rng.uniform(0.3, 1.0, (17, 1)) * amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (17, 1)))
    period = rng.uniform(120, 900, (17, 1))
    x += 100e-6 * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3, (17, 1)))
    x += rng.uniform(-500e-6, 500e-6, (17, 1))
    x += 5e-6 * np.sin(2 * np.pi * 50.0 * t)
    return x


def _channel_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def _reader(x: np.ndarray, calls: list | None = None):
    def read(start: int, stop: int) -> np.ndarray:
        if calls is not None:
            calls.append((start, stop))
        return x[:, start:stop]

    return read


# ---- chunked == whole file ----------------------------------------------------------------------


@pytest.mark.parametrize(("sfreq", "duration"), [
    (250.0, 1800.0), (256.0, 2400.0 + 3.7), (500.0, 1500.0 + 0.02), (1000.0, 1500.0),
    (128.0, 1700.0), (400.0, 1600.0), (100.0, 1800.0 + 1.23),
])
def test_chunked_matches_whole_file(sfreq, duration):
    x = _long_volts(sfreq, duration, seed=int(sfreq))
    whole = preprocess(x, sfreq)
    calls = []
    blocks = list(preprocess_chunked(_reader(x, calls), x.shape[1], sfreq, chunk_s=300, overlap_s=60))
    assert len(blocks) >= 5
    # bounded reads: never more than a chunk and two overlaps
    assert max(stop - start for start, stop in calls) <= (300 * 1.25 + 120) * sfreq + 1
    chunked = np.concatenate(blocks, axis=1)
    assert chunked.shape == whole.shape
    assert chunked.dtype == np.float32
    corr = _channel_corr(whole[:, EDGE:-EDGE], chunked[:, EDGE:-EDGE])
    assert corr.min() >= MIN_CORR, corr.min()
    # and sample by sample, well below the signal's scale (units of 10 uV, std ~3)
    rms = whole[:, EDGE:-EDGE].std()
    assert np.abs(whole - chunked)[:, EDGE:-EDGE].max() < 0.02 * rms
    assert _channel_corr(whole, chunked).min() >= MIN_CORR  # the edges too, over the whole length


@pytest.mark.parametrize(("sfreq", "window_s"), [(256.0, 5.0), (500.0, 60.0), (1000.0, 5.0)])
def test_chunked_windows_match_make_windows(sfreq, window_s):
    x = _long_volts(sfreq, 1200.0 + 7.1, seed=3)
    expected = make_windows(preprocess(x, sfreq), window_s)
    got = list(iter_windows_chunked(_reader(x), x.shape[1], sfreq, window_s, chunk_s=300, overlap_s=60))
    firsts = [first for first, _ in got]
    sizes = [len(w) for _, w in got]
    assert firsts == list(np.cumsum([0] + sizes[:-1]))
    assert all(first * window_s % 300 == 0 for first in firsts)  # cores start on chunk boundaries
    windows = np.concatenate([w for _, w in got])
    assert windows.shape == expected.shape
    assert all(w.flags.c_contiguous and w.dtype == np.float32 for _, w in got)
    edge = int(np.ceil(20 / window_s))
    inner = slice(edge, len(expected) - edge)
    np.testing.assert_allclose(windows[inner], expected[inner], atol=0.05)
    corr = _channel_corr(windows.reshape(-1, windows.shape[-1]), expected.reshape(-1, windows.shape[-1]))
    assert corr.min() >= 0.999


def test_short_recording_is_one_chunk_and_exact():
    sfreq = 256.0
    x = _long_volts(sfreq, 370.0, seed=1)
    chunks = plan_chunks(x.shape[1], sfreq, chunk_s=300)
    assert len(chunks) == 1
    blocks = list(preprocess_chunked(_reader(x), x.shape[1], sfreq, chunk_s=300))
    assert len(blocks) == 1
    np.testing.assert_array_equal(blocks[0], preprocess(x, sfreq))


def test_span_of_whole_recording_matches_preprocess():
    sfreq = 500.0
    x = _long_volts(sfreq, 120.0, seed=2)
    a = preprocess(x, sfreq)
    b = preprocess(x, sfreq, offset=0, n_total=x.shape[1])
    np.testing.assert_allclose(a, b, atol=1e-4)


# ---- the plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sfreq", [100.0, 128.0, 199.8, 200.0, 250.0, 256.0, 400.0, 500.0, 512.0,
                                   1000.0, 1024.0, 333.0])
@pytest.mark.parametrize("window_s", [None, 5.0, 60.0])
def test_plan_chunks_tile_on_whole_samples(sfreq, window_s):
    params = PreprocessingParams()
    n_times = int(3.3 * 3600 * sfreq) + 17
    chunks = plan_chunks(n_times, sfreq, params, chunk_s=1800, overlap_s=60, window_s=window_s)
    up, down = (1, 1) if sfreq == params.sfreq else resample_ratio(sfreq, params.sfreq)
    n_out = n_times_out(n_times, sfreq, params)
    assert chunks[0].out_start == 0 and chunks[-1].out_stop == n_out
    assert chunks[0].read_start == 0 and chunks[-1].read_stop == n_times
    w = 1 if window_s is None else int(window_s * params.sfreq)
    for prev, c in zip(chunks, chunks[1:], strict=False):
        assert prev.out_stop == c.out_start
    for c in chunks:
        assert c.out_start % w == 0
        assert c.read_start * up % down == 0 and c.read_start * up // down == c.out_read_start
        assert c.out_read_start % 25 == 0  # whole 4 Hz high-pass blocks
        assert c.out_start - c.out_read_start >= 60 * params.sfreq or c.out_read_start == 0
        assert c.read_stop == n_times or (c.read_stop * up / down - c.out_stop) >= 60 * params.sfreq
        core_s = (c.out_stop - c.out_start) / params.sfreq
        assert core_s <= 1800 * 1.25 + 60
    assert len(chunks) >= 5
    native, out = span_unit(sfreq, params, window_s)
    assert native * up == out * down


def test_plan_rejects_short_overlap_and_odd_windows():
    assert 16 < min_overlap_s() < 30
    with pytest.raises(ValueError, match="overlap"):
        plan_chunks(10_000_000, 256.0, overlap_s=10)
    with pytest.raises(ValueError, match="whole number"):
        span_unit(256.0, window_s=0.005)


def test_iter_windows_too_short():
    x = np.zeros((17, 256 * 3))
    with pytest.raises(TooShortError, match="shorter than one 5 s window"):
        iter_windows_chunked(_reader(x), x.shape[1], 256.0, 5.0)


# ---- through an EDF file ------------------------------------------------------------------------


def _write_long_edf(path, x_volts: np.ndarray, sfreq: float):
    signals = [
        EdfSignal(row * 1e6, sfreq, label=tuh_channel_name(e), physical_dimension="uV",
                  physical_range=(-3000.0, 3000.0))
        for e, row in zip(TCP_ELECTRODES, x_volts, strict=True)
    ]
    Edf(signals, recording=Recording(startdate=dt.date(2015, 3, 4)), starttime=dt.time(10, 20, 30)).write(path)
    return path


def test_windowed_recording_in_chunks_matches_read_recording(tmp_path):
    sfreq = 256.0
    x = _long_volts(sfreq, 20 * 60.0, seed=7)
    fname = _write_long_edf(tmp_path / "long.edf", x, sfreq)
    rec = read_recording(fname)
    expected = make_windows(rec, 5.0)
    chunked = WindowedRecording(fname, window_s=5.0, chunk_s=240, overlap_s=60)
    assert chunked.meta == rec.meta
    got = [(first, w) for first, w, _ in chunked.iter_windows()]
    assert len(got) >= 4
    windows = np.concatenate([w for _, w in got])
    assert [first for first, _ in got] == [i * 48 for i in range(len(got))]
    assert windows.shape == expected.shape
    np.testing.assert_allclose(windows[4:-4], expected[4:-4], atol=0.05)
    corr = _channel_corr(windows.transpose(1, 0, 2).reshape(20, -1),
                         np.asarray(expected).transpose(1, 0, 2).reshape(20, -1))
    assert corr.min() >= MIN_CORR


def test_windowed_recording_too_short(write_edf):
    fname = write_edf(duration=30)
    with pytest.raises(TooShortError):
        WindowedRecording(fname, window_s=60.0)
    with pytest.raises(TooShortError):  # the header is long enough, but not one window
        WindowedRecording(fname, window_s=60.0, min_duration=5.0).iter_windows()


def test_the_indexer_embeds_a_long_recording_chunk_by_chunk_as_the_whole_file(tmp_path, demo_model_dir, monkeypatch):
    """Long recordings go through chunks and a memory-mapped file; embeddings match whole-file processing."""
    from sqlalchemy import select

    import indexer.pipeline as pipeline
    from db import Window, from_blob
    from elmsearch.models import load_model
    from elmsearch.models.embedding import embed_recording
    from indexer.store import IndexStore

    sfreq = 256.0
    x = _long_volts(sfreq, 20 * 60.0, seed=11)
    x[3, int(300 * sfreq) : int(330 * sfreq)] = 0.0  # no electrode is dead throughout: still indexed
    archive = tmp_path / "archive"
    archive.mkdir()
    fname = _write_long_edf(archive / "long.edf", x, sfreq)
    monkeypatch.setattr(pipeline, "LONG_RECORDING_S", 600.0)  # 20 min counts as long here
    monkeypatch.setattr(pipeline, "SPILL_CHUNK_S", 240.0)  # five chunks
    summary = pipeline.index_archive(archive, tmp_path / "idx", demo_model_dir, precision="fp32")
    assert summary.added == 1 and summary.failed == 0
    assert not (tmp_path / "idx" / "tmp").exists()  # the memory-mapped windows are gone
    with IndexStore.open(tmp_path / "idx").session() as s:
        rows = s.execute(select(Window.ordinal, Window.emb).order_by(Window.ordinal)).all()
    got = np.stack([from_blob(e) for _, e in rows])
    whole = embed_recording(load_model(demo_model_dir), fname)
    assert [o for o, _ in rows] == whole.window_index.tolist() and len(rows) == 240
    cos = (got * whole.window_emb).sum(axis=1)
    assert cos[4:-4].min() >= 0.9999 and cos.min() >= 0.999

    # a query on a new long file reads it through the same chunked path, windows on disk
    import elmsearch.models.embedding as embedding

    monkeypatch.setattr(embedding, "LONG_RECORDING_S", 600.0)
    spilled = embedding.embed_recording(load_model(demo_model_dir), fname)
    np.testing.assert_array_equal(spilled.window_index, whole.window_index)
    np.testing.assert_allclose(spilled.window_emb, whole.window_emb, atol=1e-5)


def test_a_long_recording_with_an_electrode_dead_throughout_is_refused(tmp_path, demo_model_dir, monkeypatch):
    import indexer.pipeline as pipeline

    sfreq = 128.0
    x = _long_volts(sfreq, 12 * 60.0, seed=2)
    x[5] = 0.0  # one electrode flat in every chunk
    archive = tmp_path / "archive"
    archive.mkdir()
    _write_long_edf(archive / "long.edf", x, sfreq)
    monkeypatch.setattr(pipeline, "LONG_RECORDING_S", 300.0)
    monkeypatch.setattr(pipeline, "SPILL_CHUNK_S", 240.0)
    summary = pipeline.index_archive(archive, tmp_path / "idx", demo_model_dir)
    assert summary.failed == 1
    assert f"flat: {tuh_channel_name(TCP_ELECTRODES[5])}" in summary.failures[0]["reason"]
