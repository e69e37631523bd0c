"""Tests of elmsearch.io (meta, recording, windowed): reading EDFs into ELM's 20-channel 100 Hz representation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from conftest import TUH_LABELS, synthetic_uv

from elmsearch.errors import (
    MissingChannelError,
    RecordingError,
    TooShortError,
    UnsupportedFileError,
)
from elmsearch.io.recording import PreprocessedRecording, make_windows
from elmsearch.io.windowed import read_recording
from elmsearch.signal.channels import STANDARD_1020, TCP_CH_NAMES, tuh_channel_name
from elmsearch.signal.preprocessing import PreprocessingParams

NEW_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}


def _labels(spell) -> list[str]:
    return [spell(e) for e in STANDARD_1020] + ["EEG EKG1-REF"]


def test_read_synthetic_tuh(write_edf):
    path = write_edf(duration=30, sfreq=250)
    rec = read_recording(path)
    assert isinstance(rec, PreprocessedRecording)
    assert rec.data.shape == (20, 3000)
    assert rec.data.dtype == np.float32
    assert np.abs(rec.data).max() <= 80
    assert rec.data.std() > 0.5  # ~10-30 uV signals are 1-3 units, not zeros
    assert rec.ch_names == TCP_CH_NAMES
    assert rec.sfreq == 100
    assert rec.n_times == 3000 and rec.duration == 30.0
    assert rec.params == PreprocessingParams()
    m = rec.meta
    assert m.fname == str(path)
    assert (m.subject, m.sex, m.age) == ("aaaaaaab", "F", 53.0)
    assert m.birthdate == dt.date(1961, 1, 1)
    assert m.start == dt.datetime(2015, 3, 4, 10, 20, 30)
    assert not m.date_suspect
    assert m.duration == 30.0
    assert m.native_sfreq == 250.0
    assert m.n_chans_native == 22
    assert m.electrode_labels["Fp1"] == "EEG FP1-REF"
    assert m.electrode_labels["Cz"] == "EEG CZ-REF"
    assert len(m.electrode_labels) == 17


def test_meta_fractional_age_and_suspect_date(write_edf):
    path = write_edf(duration=10, patient="aaaaaaac M 01-JAN-2014 aaaaaaac Age:0.5",
                     startdate=dt.date(2000, 1, 1))
    m = read_recording(path).meta
    assert (m.subject, m.sex, m.age) == ("aaaaaaac", "M", 0.5)
    assert m.start.date() == dt.date(2000, 1, 1)
    assert m.date_suspect


def _fit_10hz(y: np.ndarray, sfreq: float = 100.0) -> tuple[float, float]:
    """Least-squares amplitude and phase (rad) of a 10 Hz sine in ``y``."""
    t = np.arange(y.size) / sfreq
    basis = np.stack([np.sin(2 * np.pi * 10 * t), np.cos(2 * np.pi * 10 * t)], axis=1)
    (a, b), *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(a, b)), float(np.arctan2(b, a))


def test_sine_at_anode_goes_to_the_right_bipolar_channel(write_edf):
    sfreq, duration, amp_uv = 250, 30, 50.0
    n = sfreq * duration
    t = np.arange(n) / sfreq
    signals = np.random.default_rng(1).normal(0.0, 0.5, size=(len(TUH_LABELS), n))
    # F7 is the anode of F7-T3 and the cathode of Fp1-F7; nothing else uses it.
    signals[TUH_LABELS.index("EEG F7-REF")] += amp_uv * np.sin(2 * np.pi * 10 * t)
    rec = read_recording(write_edf(signals=signals, duration=duration, sfreq=sfreq))
    core = slice(500, -500)  # away from the filter edges
    expected_units = amp_uv * 1e-6 * 1e5  # 5.0
    anode = rec.data[TCP_CH_NAMES.index("F7-T3"), core]
    cathode = rec.data[TCP_CH_NAMES.index("Fp1-F7"), core]
    amp, phase = _fit_10hz(anode)
    assert amp == pytest.approx(expected_units, rel=0.02)
    # positive sign: in phase with the sine written (MNE's resampling grid is a fraction
    # of a sample off, so allow some phase lag)
    assert abs(phase) < np.deg2rad(30)
    amp_c, phase_c = _fit_10hz(cathode)
    assert amp_c == pytest.approx(expected_units, rel=0.02)
    assert abs(abs(phase_c) - np.pi) < np.deg2rad(30)
    assert np.corrcoef(cathode, anode)[0, 1] < -0.99
    others = [i for i, name in enumerate(TCP_CH_NAMES) if "F7" not in name.split("-")]
    assert len(others) == 18
    for i in others:
        amp_o, _ = _fit_10hz(rec.data[i, core])
        assert amp_o < 0.05, TCP_CH_NAMES[i]


@pytest.mark.parametrize(
    "spell",
    [
        lambda e: tuh_channel_name(e, "LE"),
        lambda e: f"EEG {e}",
        lambda e: e,
        lambda e: tuh_channel_name(NEW_NAMES.get(e, e)),
    ],
    ids=["tuh-le", "eeg-fp1", "bare", "t7-t8-p7-p8"],
)
def test_label_spellings_give_identical_data(write_edf, spell):
    reference = read_recording(write_edf("ref.edf", duration=20, seed=3))
    other = read_recording(write_edf("other.edf", labels=_labels(spell), duration=20, seed=3))
    assert other.meta.electrode_labels["Fp1"] == spell("Fp1")
    assert other.meta.electrode_labels["T3"] == spell("T3")
    np.testing.assert_array_equal(other.data, reference.data)


def test_electrode_order_does_not_matter(write_edf):
    signals = synthetic_uv(len(TUH_LABELS), 250, 20, seed=4)
    order = np.random.default_rng(0).permutation(len(TUH_LABELS))
    reference = read_recording(write_edf("a.edf", signals=signals, duration=20))
    shuffled = read_recording(write_edf(
        "b.edf", labels=[TUH_LABELS[i] for i in order], signals=signals[order], duration=20))
    np.testing.assert_array_equal(shuffled.data, reference.data)


def test_missing_electrode(write_edf):
    labels = [lab for lab in TUH_LABELS if lab != "EEG O2-REF"]
    path = write_edf(labels=labels, duration=10)
    with pytest.raises(MissingChannelError) as info:
        read_recording(path)
    assert info.value.missing == ["O2"]
    assert "O2" in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_no_eeg_electrodes_at_all(write_edf):
    path = write_edf(labels=["EEG EKG1-REF", "PHOTIC-REF"], duration=10)
    with pytest.raises(MissingChannelError, match="no 10-20 scalp EEG electrodes") as info:
        read_recording(path)
    assert len(info.value.missing) == 17


def test_duplicated_electrode(write_edf):
    path = write_edf(labels=list(TUH_LABELS) + ["EEG FP1-LE"], duration=10)
    with pytest.raises(UnsupportedFileError, match="Fp1 appears more than once") as info:
        read_recording(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_duplicate_of_unused_electrode_is_fine(write_edf):
    # Fz is not in the TCP montage: a second Fz must not refuse the file
    rec = read_recording(write_edf(labels=list(TUH_LABELS) + ["EEG FZ-LE"], duration=10))
    assert rec.data.shape == (20, 1000)


def test_too_short(write_edf):
    path = write_edf(duration=3)
    with pytest.raises(TooShortError, match="3.0 s long") as info:
        read_recording(path)
    assert str(path) in str(info.value)
    rec = read_recording(path, min_duration=2.0)
    assert rec.data.shape == (20, 300)


def test_sampling_rate_below_100_hz(write_edf):
    path = write_edf(sfreq=64, duration=10)
    with pytest.raises(UnsupportedFileError, match="64 Hz") as info:
        read_recording(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("sfreq", "n_times"), [(100, 1000), (200, 1000), (256, 1000),
                                                (500, 1000)])
def test_output_length_at_several_rates(write_edf, sfreq, n_times):
    rec = read_recording(write_edf(sfreq=sfreq, duration=10))
    assert rec.data.shape == (20, n_times)
    assert rec.meta.native_sfreq == sfreq


# ---- windows ------------------------------------------------------------------------------------


def test_make_windows_5s(write_edf):
    rec = read_recording(write_edf(duration=32))
    windows = make_windows(rec, 5.0)
    assert windows.shape == (6, 20, 500)
    for i in range(6):
        np.testing.assert_array_equal(windows[i], rec.data[:, i * 500 : (i + 1) * 500])
    assert not windows.flags.writeable
    with pytest.raises(TooShortError, match="60 s window"):
        make_windows(rec, 60.0)


def test_make_windows_60s(write_edf):
    rec = read_recording(write_edf(duration=60, sfreq=200))
    windows = make_windows(rec, 60.0)
    assert windows.shape == (1, 20, 6000)
    np.testing.assert_array_equal(windows[0], rec.data)
    assert make_windows(rec, 5.0).shape == (12, 20, 500)


def test_make_windows_on_array():
    data = np.arange(3 * 1250, dtype=np.float32).reshape(3, 1250)
    windows = make_windows(data, 5.0)
    assert windows.shape == (2, 3, 500)
    np.testing.assert_array_equal(windows[1], data[:, 500:1000])
    windows = make_windows(data, 1.0, sfreq=250)
    assert windows.shape == (5, 3, 250)
    np.testing.assert_array_equal(windows.transpose(1, 0, 2).reshape(3, -1), data)
    with pytest.raises(TooShortError, match="<array>"):
        make_windows(data, 20.0)
    with pytest.raises(ValueError):
        make_windows(data, 0.0)


# ---- real files with odd layouts ---------------------------------------------------------------

MNE_CASES_REFUSED = {
    "duplicate_channel_labels.edf": MissingChannelError,
    "test.bdf": TooShortError,
    "test.edf": MissingChannelError,
    "test_stim_channel.edf": MissingChannelError,
    "test_uneven_samp.edf": MissingChannelError,
}


def test_mne_case_stim_channel_edf_is_read(shared_data):
    rec = read_recording(shared_data / "mne_edf_cases" / "test_edf_stim_channel.edf")
    assert rec.data.shape[0] == 20
    assert rec.data.shape[1] in (959, 960)
    assert rec.meta.native_sfreq == 128.0
    assert rec.data.dtype == np.float32
    assert np.isfinite(rec.data).all()
    assert rec.data.std() > 0


@pytest.mark.parametrize(("name", "error"), sorted(MNE_CASES_REFUSED.items()))
def test_mne_cases_refused_with_one_line_reason(shared_data, name, error):
    path = shared_data / "mne_edf_cases" / name
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    assert type(info.value) is error
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert len(info.value.reason) > 10


def test_mne_cases_are_all_covered(shared_data):
    names = {p.name for p in (shared_data / "mne_edf_cases").iterdir()}
    assert names == set(MNE_CASES_REFUSED) | {"test_edf_stim_channel.edf"}
