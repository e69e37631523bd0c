"""EEG pictures of a span: reading it in microvolts, the stacked traces and the spectrogram as PNG."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TUH_LABELS
from PIL import Image

import elmsearch.io.chunks as chunks
from elmsearch.io.windowed import WindowedRecording, read_recording
from elmsearch.signal.channels import TCP_CH_NAMES, tuh_channel_name
from elmsearch.viz import plots
from elmsearch.viz.plots import read_span, spectrogram_arrays, spectrogram_png, trace_spacing, waveform_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_SIGNATURE
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def _amplitude(x: np.ndarray, sfreq: float, freq: float) -> np.ndarray:
    """Least-squares amplitude of a sine at ``freq`` in each row of ``x``."""
    t = np.arange(x.shape[-1]) / sfreq
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.T, rcond=None)
    return np.hypot(coef[0], coef[1])


def _sine(n_chans: int, sfreq: float, duration: float, freq: float, amp: float, noise: float = 1.0,
          seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(duration * sfreq))) / sfreq
    return amp * np.sin(2 * np.pi * freq * t) + rng.normal(0, noise, (n_chans, len(t)))


# ---- reading ------------------------------------------------------------------------------------


def test_read_span_shape_names_and_rate(write_edf):
    path = write_edf(duration=30)
    data, sfreq, ch_names = read_span(path, 2.5, 12.5)
    assert data.shape == (20, round((12.5 - 2.5) * 100))
    assert data.dtype == np.float32
    assert sfreq == 100.0
    assert ch_names == TCP_CH_NAMES


def test_read_span_is_the_indexed_recording_in_microvolts(write_edf):
    path = write_edf(duration=30)
    rec = read_recording(path)  # units of 10 uV (scale 1e5 on volts)
    data, _, _ = read_span(path, 4.0, 9.0)
    np.testing.assert_allclose(data, rec.data[:, 400:900] * 10.0, rtol=1e-5, atol=1e-4)


def test_a_sine_on_one_electrode_shows_at_its_amplitude_in_its_bipolar_channels(write_edf):
    sfreq, duration, amp = 250.0, 30.0, 40.0
    signals = _sine(len(TUH_LABELS), sfreq, duration, 7.0, 0.0, noise=2.0)
    cz = TUH_LABELS.index(tuh_channel_name("Cz"))
    signals[cz] += amp * np.sin(2 * np.pi * 7.0 * np.arange(signals.shape[1]) / sfreq)
    path = write_edf(signals=signals, sfreq=sfreq, duration=duration)
    data, sfreq_out, ch_names = read_span(path, 10.0, 20.0)
    got = dict(zip(ch_names, _amplitude(data, sfreq_out, 7.0), strict=True))
    for name in ("C3-Cz", "Cz-C4"):  # Cz is the cathode of one and the anode of the other
        assert got[name] == pytest.approx(amp, rel=0.1), got
    others = [v for k, v in got.items() if "Cz" not in k]
    assert max(others) < 0.1 * amp, got


def test_a_long_recording_is_read_around_the_span_only(write_edf, monkeypatch):
    path = write_edf(duration=60, sfreq=256)
    ranges = []
    real_read = WindowedRecording.read_span

    def spying_read(self, start, stop):
        ranges.append((start, stop))
        return real_read(self, start, stop)

    monkeypatch.setattr(WindowedRecording, "read_span", spying_read)
    margin = chunks.min_overlap_s()
    data, _, _ = read_span(path, 28.13, 33.13, margin_s=margin)  # margin's start is off the span grid
    (start, stop), = ranges
    assert 0 < start <= (28.13 - margin) * 256 and (33.13 + margin) * 256 - 1 <= stop < 60 * 256
    whole = read_recording(path).data[:, 2813:3313] * 10.0
    assert data.shape == whole.shape
    rms = np.sqrt(np.mean(whole**2))
    assert np.abs(data - whole).max() < 0.02 * rms  # same grid and filter, up to resampler leakage
    assert min(np.corrcoef(a, b)[0, 1] for a, b in zip(data, whole, strict=True)) > 0.9999


def test_span_is_clamped_to_the_recording(write_edf):
    path = write_edf(duration=30)
    tail, _, _ = read_span(path, 25.0, 40.0)
    assert tail.shape == (20, 500)
    head, _, _ = read_span(path, -3.0, 2.0)
    first, _, _ = read_span(path, 0.0, 2.0)
    np.testing.assert_array_equal(head, first)


@pytest.mark.parametrize(("start", "end", "match"), [
    (5.0, 5.0, "empty span"),
    (6.0, 5.0, "empty span"),
    (0.0, 60.5, "longer than the 60 s limit"),
    (30.0, 40.0, "after the end of the recording"),
    (float("nan"), 5.0, "not finite"),
])
def test_bad_spans_are_refused_in_one_line(write_edf, start, end, match):
    path = write_edf(duration=30)
    with pytest.raises(ValueError, match=match) as err:
        read_span(path, start, end)
    assert "\n" not in str(err.value)


def test_a_sixty_second_span_is_allowed(write_edf):
    data, _, _ = read_span(write_edf(duration=60, sfreq=200), 0.0, 60.0)
    assert data.shape == (20, 6000)


# ---- drawing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1100, 520), (333, 271)])
def test_pngs_have_the_requested_pixels(size):
    data = _sine(20, 100.0, 10.0, 10.0, 30.0, noise=10.0)
    width, height = size
    wave = waveform_png(data, 100.0, TCP_CH_NAMES, 12.0, title="rec 12-22 s", width_px=width, height_px=height)
    spec = spectrogram_png(data, 100.0, 12.0, title="rec 12-22 s", width_px=width, height_px=height)
    for png in (wave, spec):
        assert _decode(png).shape == (height, width)


@pytest.mark.parametrize("moving", [0, 19])
def test_traces_run_top_to_bottom_in_channel_order(moving):
    data = np.zeros((20, 1000))
    data[moving] = 45.0 * np.sin(2 * np.pi * 3.0 * np.arange(1000) / 100.0)  # the others are flat lines
    img = _decode(waveform_png(data, 100.0, TCP_CH_NAMES, width_px=800, height_px=500))
    dark = (img[:, 120:700] < 128).mean(axis=1)  # between the labels and the scale bar
    full = np.flatnonzero(dark >= 0.5)  # the 19 flat traces, then the time axis
    assert len(full) == 20
    flat, axis = full[:-1], full[-1]
    sine = np.flatnonzero((dark > 0.005) & (dark < 0.5))
    sine = sine[sine < axis]
    if moving == 0:
        assert np.median(sine) < flat.min()
    else:
        assert np.median(sine) > flat.max()


def test_waveform_refuses_a_wrong_number_of_names():
    with pytest.raises(ValueError, match="channel names"):
        waveform_png(np.zeros((20, 100)), 100.0, TCP_CH_NAMES[:19])


@pytest.mark.parametrize(("std", "expected"), [(10.0, 100.0), (30.0, 200.0), (2.0, 20.0), (0.0, 100.0)])
def test_trace_spacing_is_a_round_value_from_the_robust_amplitude(std, expected):
    data = np.random.default_rng(1).normal(0, std, (20, 2000))
    data[3, 100] = 1e4  # one spike does not change it
    assert trace_spacing(data) == expected


@pytest.mark.parametrize("duration", [2.0, 10.0, 60.0])
def test_spectrogram_peaks_at_a_sine_frequency(duration):
    data = _sine(20, 100.0, duration, 10.0, 20.0, noise=5.0)
    freqs, times, power_db = spectrogram_arrays(data, 100.0, start_s=30.0)
    assert power_db.shape == (len(freqs), len(times)) and len(times) >= 10
    assert freqs[0] == 0.0 and freqs[-1] == 50.0
    assert 30.0 < times[0] < times[-1] < 30.0 + duration
    peak = freqs[np.argmax(np.median(power_db, axis=1))]
    assert peak == pytest.approx(10.0, abs=0.3)
    assert np.all(power_db[np.argmax(np.median(power_db, axis=1))] > np.median(power_db) + 10)


# ---- integration and layering -------------------------------------------------------------------


def test_a_real_recording_span(shared_data):
    path = shared_data / "eegmat" / "Subject00_1.edf"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    data, sfreq, ch_names = read_span(path, 80.0, 90.0)  # 182 s file: read around the span
    assert data.shape == (20, 1000) and ch_names == TCP_CH_NAMES
    whole = read_recording(path).data[:, 8000:9000] * 10.0
    assert np.abs(data - whole).max() < 0.01 * np.sqrt(np.mean(whole**2))
    assert 2.0 < np.median(data.std(axis=1)) < 100.0  # scalp EEG, microvolts
    assert _decode(waveform_png(data, sfreq, ch_names, 80.0, title=path.name)).shape == (520, 1100)


def test_core_layering_and_cheap_import():
    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"db", "indexer", "cli"}
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "matplotlib.pyplot" not in modules and "matplotlib" not in modules  # no pyplot, no matplotlib.use
    code = "import sys, elmsearch.viz.plots; print(sorted({'matplotlib', 'scipy', 'mne'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
