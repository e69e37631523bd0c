"""Tests of elmsearch.signal.preprocessing: the fast path against ELM's MNE reference, and its parts."""

from __future__ import annotations

import csv
import json

import mne
import numpy as np
import pytest

import elmsearch
from elmsearch.signal.channels import TCP_CH_NAMES, TCP_ELECTRODES
from elmsearch.signal.preprocessing import (
    PreprocessingParams,
    bipolar,
    elm_reference,
    preprocess,
)

MIN_CORR = 0.998


def _synthetic_volts(sfreq: float, duration: float, seed: int) -> np.ndarray:
    """Seeded EEG-like referential signals in volts, shape (17, n_times).

    1/f noise (20 uV std), an 8-12 Hz rhythm per electrode and a DC offset per electrode.
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration * sfreq))
    t = np.arange(n) / sfreq
    spec = np.fft.rfft(rng.normal(size=(17, n)), axis=1)
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spec[:, 0] = 0
    spec[:, 1:] /= np.sqrt(freqs[1:])
    x = np.fft.irfft(spec, n, axis=1)
    x *= 20e-6 / x.std(axis=1, keepdims=True)
    amp = rng.uniform(10e-6, 40e-6, (17, 1))
    freq = rng.uniform(8, 12, (17, 1))
    x += amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (17, 1)))
    x += rng.uniform(-500e-6, 500e-6, (17, 1))
    return x


def _raw(electrodes: np.ndarray, sfreq: float, names=TCP_ELECTRODES) -> mne.io.RawArray:
    info = mne.create_info(list(names), sfreq, "eeg")
    return mne.io.RawArray(electrodes, info, verbose="error")


def _channel_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


# ---- parameters ---------------------------------------------------------------------------------


def test_params_defaults_are_elms_recipe():
    p = PreprocessingParams()
    assert (p.l_freq, p.h_freq, p.sfreq, p.scale, p.clip, p.montage) == (
        0.1, 49.0, 100.0, 1e5, 80.0, "tcp")


def test_params_round_trip_through_json():
    p = PreprocessingParams(l_freq=0.5, h_freq=40.0, sfreq=200.0, scale=1e4, clip=50.0)
    d = json.loads(json.dumps(p.to_dict()))
    assert d == {"l_freq": 0.5, "h_freq": 40.0, "sfreq": 200.0, "scale": 1e4, "clip": 50.0,
                 "montage": "tcp"}
    assert PreprocessingParams.from_dict(d) == p
    assert PreprocessingParams.from_dict({**d, "added_later": 1}) == p
    assert PreprocessingParams.from_dict({}) == PreprocessingParams()


# ---- bipolar ------------------------------------------------------------------------------------


def test_bipolar_on_known_array():
    # row values 0, 10, 20, ... in TCP_ELECTRODES order:
    # Fp1 F7 T3 T5 O1 Fp2 F8 T4 T6 O2 C3 Cz C4 F3 P3 F4 P4
    order = ["Fp1", "F7", "T3", "T5", "O1", "Fp2", "F8", "T4", "T6", "O2",
             "C3", "Cz", "C4", "F3", "P3", "F4", "P4"]  # fmt: skip
    assert list(TCP_ELECTRODES) == order
    values = 10.0 * np.arange(17)
    electrodes = np.repeat(values[:, None], 4, axis=1)
    electrodes[:, 1] *= 2  # second sample doubled
    out = bipolar(electrodes)
    expected = [
        0 - 10, 10 - 20, 20 - 30, 30 - 40,  # Fp1-F7 F7-T3 T3-T5 T5-O1
        50 - 60, 60 - 70, 70 - 80, 80 - 90,  # Fp2-F8 F8-T4 T4-T6 T6-O2
        20 - 100, 100 - 110, 110 - 120, 120 - 70,  # T3-C3 C3-Cz Cz-C4 C4-T4
        0 - 130, 130 - 100, 100 - 140, 140 - 40,  # Fp1-F3 F3-C3 C3-P3 P3-O1
        50 - 150, 150 - 120, 120 - 160, 160 - 90,  # Fp2-F4 F4-C4 C4-P4 P4-O2
    ]
    assert out.shape == (20, 4)
    np.testing.assert_array_equal(out[:, 0], expected)
    np.testing.assert_array_equal(out[:, 1], 2 * np.asarray(expected))


def test_bipolar_custom_pairs_and_order():
    electrodes = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    out = bipolar(electrodes, pairs=[("c", "a"), ("a", "b")], order=["a", "b", "c"])
    np.testing.assert_array_equal(out, [[99.0, 198.0], [-9.0, -18.0]])


# ---- fast path against the MNE reference --------------------------------------------------------


@pytest.mark.parametrize(
    ("sfreq", "duration"), [(250, 30), (256, 30), (500, 30), (250, 62), (256, 62), (500, 62)]
)
def test_preprocess_matches_elm_reference(sfreq, duration):
    x = _synthetic_volts(sfreq, duration, seed=sfreq + duration)
    ref = elm_reference(_raw(x, sfreq))
    fast = preprocess(x, sfreq)
    assert fast.shape == ref.shape == (20, int(duration * 100))
    assert fast.dtype == np.float32
    corr = _channel_corr(fast, ref)
    assert corr.min() >= MIN_CORR, dict(zip(TCP_CH_NAMES, corr.round(5), strict=True))
    # same scale, not just the same shape
    np.testing.assert_allclose(fast.std(axis=1), ref.std(axis=1), rtol=0.02)


def test_preprocess_matches_elm_reference_with_clipping_artefact():
    sfreq = 250
    x = _synthetic_volts(sfreq, 40, seed=7)
    n = x.shape[1]
    x[0, n // 2 : n // 2 + sfreq] += 2e-3  # 2 mV, one second, on Fp1: clips Fp1-F7, Fp1-F3
    ref = elm_reference(_raw(x, sfreq))
    fast = preprocess(x, sfreq)
    assert np.abs(fast).max() == 80.0
    corr = _channel_corr(fast, ref)
    assert corr.min() >= MIN_CORR, dict(zip(TCP_CH_NAMES, corr.round(5), strict=True))


def test_elm_reference_accepts_tuh_labels_and_extra_channels():
    sfreq = 256
    x = _synthetic_volts(sfreq, 20, seed=3)
    names = [f"EEG {e.upper()}-REF" for e in TCP_ELECTRODES] + ["EEG EKG1-REF"]
    extra = np.vstack([x, np.random.default_rng(0).normal(0, 1e-3, (1, x.shape[1]))])
    ref_tuh = elm_reference(_raw(extra, sfreq, names))
    ref_plain = elm_reference(_raw(x, sfreq))
    np.testing.assert_allclose(ref_tuh, ref_plain, atol=1e-4)


def test_preprocess_at_100_hz_input():
    x = _synthetic_volts(100, 30, seed=1)
    out = preprocess(x, 100)
    assert out.shape == (20, 3000)
    corr = _channel_corr(out, elm_reference(_raw(x, 100)))
    assert corr.min() >= MIN_CORR


def test_highpass_removes_dc_offset_and_slow_drift():
    sfreq, duration = 250, 60
    rng = np.random.default_rng(0)
    t = np.arange(sfreq * duration) / sfreq
    base = 20e-6 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (17, 1)))
    offset = rng.uniform(-2e-3, 2e-3, (17, 1))  # up to +-4 mV between electrodes
    drift = rng.uniform(-300e-6, 300e-6, (17, 1)) * np.sin(
        2 * np.pi * 0.01 * t + rng.uniform(0, 2 * np.pi, (17, 1)))
    clean = preprocess(base, sfreq)
    with_dc = preprocess(base + offset, sfreq)
    with_drift = preprocess(base + offset + drift, sfreq)
    assert np.abs(bipolar(offset)).max() * 1e5 > 80  # the offset alone would clip
    np.testing.assert_allclose(with_dc, clean, atol=0.01)
    drift_units = np.ptp(bipolar(drift) * 1e5, axis=1)
    assert drift_units.max() > 30
    residual = np.abs(with_drift - clean).max(axis=1)
    assert (residual < 0.02 * drift_units + 0.01).all()
    assert np.abs(with_drift.mean(axis=1)).max() < 1.0
    # and the 10 Hz rhythm is untouched: 20 uV peak on each electrode -> up to 4 units bipolar
    assert np.abs(clean).max() > 1.0


def test_clipping_to_80():
    sfreq = 250
    t = np.arange(sfreq * 20) / sfreq
    x = np.zeros((17, t.size))
    x[TCP_ELECTRODES.index("O2")] = 2e-3 * np.sin(2 * np.pi * 5 * t)  # 2 mV = 200 units
    out = preprocess(x, sfreq)
    assert out.max() == 80.0 and out.min() == -80.0
    clipped = {TCP_CH_NAMES[i] for i in np.flatnonzero(np.abs(out).max(axis=1) == 80.0)}
    assert clipped == {"T6-O2", "P4-O2"}
    assert np.abs(out).max() <= 80.0


def _cz_sine(sfreq: float, freq: float, amp_v: float, duration: float = 30) -> np.ndarray:
    t = np.arange(int(sfreq * duration)) / sfreq
    x = np.zeros((17, t.size))
    x[TCP_ELECTRODES.index("Cz")] = amp_v * np.sin(2 * np.pi * freq * t)
    return x


def _amplitude_at(y: np.ndarray, freq: float, sfreq: float = 100.0) -> float:
    """Least-squares amplitude of a ``freq`` Hz sinusoid in ``y``."""
    t = np.arange(y.size) / sfreq
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(*coef))


def test_default_h_freq_keeps_40hz():
    x = _cz_sine(250, 40.0, 50e-6)  # 40 Hz, 5 units peak
    out = preprocess(x, 250)[TCP_CH_NAMES.index("C3-Cz"), 500:-500]
    assert _amplitude_at(out, 40.0) == pytest.approx(5.0, rel=0.05)


def test_lower_h_freq_removes_40hz():
    x = _cz_sine(250, 40.0, 50e-6)
    out = preprocess(x, 250, PreprocessingParams(h_freq=30.0))
    assert out.dtype == np.float32
    assert _amplitude_at(out[TCP_CH_NAMES.index("C3-Cz"), 500:-500], 40.0) < 0.05


def test_scale_and_clip_params():
    x = _cz_sine(250, 10.0, 50e-6)  # 5 units peak at the default scale
    core = (TCP_CH_NAMES.index("Cz-C4"), slice(500, -500))
    half = preprocess(x, 250, PreprocessingParams(scale=0.5e5))[core]
    assert np.ptp(half) == pytest.approx(5.0, rel=0.05)
    clipped = preprocess(x, 250, PreprocessingParams(clip=1.0))
    assert clipped.max() == 1.0 and clipped.min() == -1.0
    with pytest.raises(ValueError, match="montage"):
        preprocess(x, 250, PreprocessingParams(montage="average"))


# ---- EEGMAT: the acceptance test ----------------------------------------------------------------


def test_eegmat_every_file_matches_elm_reference(shared_data):
    files = sorted((shared_data / "eegmat").glob("*.edf"))
    assert len(files) == 72
    failures = []
    for fname in files:
        raw = mne.io.read_raw_edf(fname, preload=True, verbose="error")
        ref = elm_reference(raw)
        fast = elmsearch.read_recording(fname).data
        if fast.shape != ref.shape:
            failures.append(f"{fname.name}: shape {fast.shape} vs {ref.shape}")
            continue
        corr = _channel_corr(fast, ref)
        if not corr.min() >= MIN_CORR:
            worst = int(np.argmin(corr))
            failures.append(f"{fname.name}: {TCP_CH_NAMES[worst]} corr {corr[worst]:.5f}")
    assert failures == []


def _eegmat_csv(shared_data) -> dict[str, dict[str, str]]:
    with open(shared_data / "eegmat" / "subject-info.csv", newline="") as fh:
        return {row["Subject"]: row for row in csv.DictReader(fh)}


# The EDF patient fields of EEGMAT give the opposite sex to subject-info.csv's Gender column for
# every subject (except Subject00_2, whose header disagrees with Subject00_1). We assert what the
# header says, cross-checked against MNE's own header parser, and tie the header to the CSV row
# through the birth and recording years.
@pytest.mark.parametrize(
    ("name", "header_sex"),
    [("Subject00_1", "M"), ("Subject00_2", "F"), ("Subject01_1", "M"), ("Subject06_1", "F"),
     ("Subject08_2", "F"), ("Subject13_1", "F")],
)
def test_eegmat_meta_from_header(shared_data, name, header_sex):
    fname = shared_data / "eegmat" / f"{name}.edf"
    meta = elmsearch.read_recording(fname).meta
    assert meta.sex == header_sex
    mne_sex = mne.io.read_raw_edf(fname, verbose="error").info["subject_info"]["sex"]
    assert mne_sex == {"M": 1, "F": 2}[header_sex]
    row = _eegmat_csv(shared_data)[name.split("_")[0]]
    assert meta.start.year == int(row["Recording year"])
    assert meta.birthdate.year == int(row["Recording year"]) - int(row["Age"])
    assert meta.native_sfreq == 500.0
    assert meta.electrode_labels["Fp1"] == "EEG Fp1"
