from __future__ import annotations

import numpy as np
import pytest

from elmsearch.io.recording import make_windows
from elmsearch.signal.bandpower import CLASSIC_BANDS, band_feature_names, band_power
from elmsearch.signal.channels import TCP_CH_NAMES

SFREQ = 100.0
N_CHANS = len(TCP_CH_NAMES)


@pytest.fixture
def windows() -> np.ndarray:
    """Four 5 s windows of 20-channel noise (std 0.1), a 10 Hz sine on channel 3, channel 7 flat zero."""
    rng = np.random.default_rng(0)
    n_times = int(20 * SFREQ)
    t = np.arange(n_times) / SFREQ
    data = 0.1 * rng.standard_normal((N_CHANS, n_times))
    data[3] += 2.0 * np.sin(2 * np.pi * 10.0 * t)
    data[7] = 0.0
    return make_windows(data, seconds=5.0, sfreq=SFREQ)


def test_shapes_and_dtype(windows):
    feats = band_power(windows, SFREQ)
    assert windows.shape == (4, N_CHANS, 500)
    assert feats.shape == (4, N_CHANS * len(CLASSIC_BANDS)) == (4, 80)
    assert feats.dtype == np.float32
    names = band_feature_names(TCP_CH_NAMES)
    assert len(names) == 80 and names[0] == f"{TCP_CH_NAMES[0]} delta" and names[7] == f"{TCP_CH_NAMES[1]} beta"


def test_alpha_sine_dominates_its_channel(windows):
    feats = band_power(windows, SFREQ).reshape(4, N_CHANS, len(CLASSIC_BANDS))
    alpha = list(CLASSIC_BANDS).index("alpha")
    assert (feats[:, 3].argmax(axis=1) == alpha).all()
    # and that channel's alpha stands far above a noise channel's
    assert (feats[:, 3, alpha] > feats[:, 0, alpha] + 2).all()


def test_flat_channel_is_finite(windows):
    feats = band_power(windows, SFREQ, eps=1e-10)
    assert np.isfinite(feats).all()
    flat = feats.reshape(4, N_CHANS, len(CLASSIC_BANDS))[:, 7]
    np.testing.assert_allclose(flat, -10.0, atol=1e-3)
    assert np.isfinite(band_power(np.zeros((2, N_CHANS, 200)), SFREQ)).all()


def test_band_power_matches_variance_of_white_noise():
    # white noise of variance 1: band power is about the band's share of the 0-50 Hz spectrum
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 6000))
    feats = band_power(x, SFREQ, bands={"all": (0.0, 50.0), "beta": (13.0, 30.0)})
    np.testing.assert_allclose(10 ** feats[:, 0], 1.0, rtol=0.1)
    np.testing.assert_allclose(10 ** feats[:, 1], 17 / 50, rtol=0.15)


def test_short_windows_and_errors():
    x = np.random.default_rng(2).standard_normal((3, 2, 150))  # 1.5 s: segment shortened to the window
    assert band_power(x, SFREQ).shape == (3, 8)
    assert band_power(np.zeros((0, 2, 150)), SFREQ).shape == (0, 8)
    with pytest.raises(ValueError, match="shape"):
        band_power(x[0], SFREQ)
    with pytest.raises(ValueError, match="no frequency bin"):
        band_power(x[:, :, :20], SFREQ)  # 5 Hz resolution: nothing in 1-4 Hz
    with pytest.raises(ValueError, match="Nyquist"):
        band_power(x, SFREQ, bands={"gamma": (60.0, 90.0)})


@pytest.mark.parametrize("nperseg", [64, 199, 200, 500])
def test_welch_in_numpy_equals_scipy(nperseg):
    from scipy.signal import welch as scipy_welch

    from elmsearch.signal.bandpower import welch

    x = np.random.default_rng(0).normal(size=(3, 4, 500))
    f_ref, p_ref = scipy_welch(x, fs=100, nperseg=nperseg, axis=-1)
    f, p = welch(x, 100, nperseg)
    np.testing.assert_allclose(f, f_ref)
    np.testing.assert_allclose(p, p_ref, rtol=1e-10, atol=1e-15)


def test_bandpower_profile_is_absolute_then_relative_log_power():
    from elmsearch.signal.bandpower import PROFILE_BANDS, band_power, bandpower_profile

    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 20, 500))
    t = np.arange(500) / 100
    w[:, 3] += 5 * np.sin(2 * np.pi * 10 * t)  # alpha on channel 3
    prof = bandpower_profile(w, 100.0, index=np.array([0, 2, 4]))
    nb = len(PROFILE_BANDS)
    assert prof.shape == (2 * 20 * nb,) and prof.dtype == np.float32
    lp = band_power(w[[0, 2, 4]], 100.0, PROFILE_BANDS).reshape(3, 20, nb)
    np.testing.assert_allclose(prof[: 20 * nb], lp.mean(0).ravel(), rtol=1e-5)
    rel = prof[20 * nb :].reshape(20, nb)
    assert np.all(rel <= 0) and rel[3, 2] > -0.05  # channel 3: nearly all its power in alpha
    with pytest.raises(ValueError, match="at least one window"):
        bandpower_profile(w, 100.0, index=np.array([], np.int64))
