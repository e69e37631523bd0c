"""ELM preprocessing: TCP bipolar montage, 0.1 Hz high-pass, 100 Hz (50 Hz low-pass), scaling, clipping.

Numpy in, numpy out: no files. Two implementations of the same recipe live here.

``elm_reference`` is the ELM authors' own path expressed with MNE: FIR band-pass
(``Raw.filter(0.1, 49)``) at the native rate, bipolar montage, volts x 1e5, clip to
+-80, ``Raw.resample(100)``. It is slow (a 33 s FIR at 500 Hz, then a power-of-two
padded FFT) and is kept as the yardstick for tests and benchmarks.

``preprocess`` is the fast path used everywhere else. It is the same linear system
reordered so that almost all work happens at 100 Hz:

1. FFT resampling of the electrodes to 100 Hz (a brick-wall at 50 Hz, as MNE's
   resampler), with odd-reflection padding and a fast FFT length. Its output grid
   is aligned with MNE's ``npad="auto"`` resampler, which sits a fraction of a
   sample away from the ideal grid.
2. The 0.1 Hz high-pass, which needs a 33 s FIR, is applied as ``x - lowpass(x)``:
   the complementary low-pass only passes < 0.15 Hz, so it is computed on 4 Hz
   block means of the odd-reflected signal (MNE's ``reflect_limited`` padding)
   and interpolated back. The FIR is MNE's own design (``create_filter``).
3. Bipolar derivations, scaling, clipping.

There is no separate 49 Hz low-pass at the defaults: ``h_freq`` is applied (MNE's
FIR at 100 Hz) only when it lies below 0.98 x the output Nyquist frequency, and 49 Hz
does not, so the resampler's brick-wall at 50 Hz is the low-pass. ELM's own FIR has
MNE's default 12.25 Hz transition band (-6 dB at 55 Hz): at a native rate of 200-500 Hz
it attenuates 49-50 Hz by at most 0.2 dB, and the resampler removes everything above
50 Hz in both paths. (For 100 Hz input ELM's filter, then with a 1 Hz transition band,
does remove 49.5-50 Hz, which this path keeps.)

Per-channel correlation with ``elm_reference`` is >= 0.998 on every EEGMAT file
(tests/test_preprocessing.py asserts it; the measured minimum over the 72 files and 20
channels is 0.99978), at about a tenth of the cost (bench/).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from fractions import Fraction
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

from elmsearch.signal.channels import TCP_CH_NAMES, TCP_ELECTRODES, TCP_PAIRS

logger = logging.getLogger(__name__)

HP_BLOCK = 25
"""Output samples per block mean of the high-pass baseline (100 Hz -> 4 Hz)."""


@dataclasses.dataclass(frozen=True)
class PreprocessingParams:
    """Serialisable preprocessing parameters, stored with every index.

    Parameters
    ----------
    l_freq : float
        High-pass edge in Hz (ELM: 0.1).
    h_freq : float
        Low-pass edge in Hz (ELM: 49). ``preprocess`` applies it only below 0.98 x the
        Nyquist frequency of ``sfreq``; at the default the resampler's brick-wall at
        ``sfreq / 2`` (50 Hz) is the low-pass (see the module docstring).
    sfreq : float
        Output sampling rate in Hz (ELM: 100).
    scale : float
        Factor applied to volts (ELM: 1e5, so one unit is 10 uV).
    clip : float
        Symmetric clipping bound after scaling (ELM: 80, i.e. +-800 uV).
    montage : str
        Only ``"tcp"`` (ELM's 20-channel longitudinal bipolar montage) for now.
    """

    l_freq: float = 0.1
    h_freq: float = 49.0
    sfreq: float = 100.0
    scale: float = 1e5
    clip: float = 80.0
    montage: str = "tcp"

    def to_dict(self) -> dict:
        """Return the parameters as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessingParams:
        """Build parameters from ``to_dict`` output, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def bipolar(electrodes: np.ndarray, pairs=TCP_PAIRS, order=TCP_ELECTRODES) -> np.ndarray:
    """Form bipolar derivations.

    Parameters
    ----------
    electrodes : array, shape (n_electrodes, n_times)
        Referential signals, rows in the order of ``order``.
    pairs : sequence of (str, str)
        Anode and cathode of each derivation.
    order : sequence of str
        Electrode name of each row of ``electrodes``.

    Returns
    -------
    array, shape (n_pairs, n_times)
    """
    index = {name: i for i, name in enumerate(order)}
    anodes = [index[a] for a, _ in pairs]
    cathodes = [index[c] for _, c in pairs]
    return electrodes[anodes] - electrodes[cathodes]


def resample_ratio(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """The resampling ratio ``sfreq_out / sfreq_in`` as ``(up, down)``, whole numbers in lowest terms."""
    fr = Fraction(sfreq_out / sfreq_in).limit_denominator(10_000)
    return fr.numerator, fr.denominator


def output_ratio(sfreq: float, params: PreprocessingParams) -> tuple[int, int]:
    """``(up, down)`` from a native rate to ``params.sfreq`` as ``preprocess`` uses it ((1, 1): no resampling)."""
    return (1, 1) if sfreq == params.sfreq else resample_ratio(sfreq, params.sfreq)


def _odd_pad(
    x: np.ndarray, n_left: int, n_right: int, edges: tuple | None = None
) -> np.ndarray:
    """Pad the last axis by odd reflection, zeros beyond the signal length (MNE reflect_limited).

    ``edges`` gives the values to reflect about (default: the first and last samples).
    """
    n = x.shape[-1]
    kl, kr = min(n_left, n - 1), min(n_right, n - 1)
    first, last = (x[..., :1], x[..., -1:]) if edges is None else edges
    parts = [
        np.zeros(x.shape[:-1] + (n_left - kl,), x.dtype),
        2 * first - x[..., kl:0:-1],
        x,
        2 * last - x[..., -2 : -kr - 2 : -1],
        np.zeros(x.shape[:-1] + (n_right - kr,), x.dtype),
    ]
    return np.concatenate(parts, axis=-1)


def _mne_grid(n_in: int, up: int, down: int) -> tuple[float, float]:
    """Affine output grid of MNE's ``npad="auto"`` FFT resampler.

    ``Raw.resample`` pads to a power of two and rounds the padded output length, so
    its output sample ``k`` sits at input position ``a + b * k`` instead of the
    ideal ``k * down / up`` (up to about half an output sample away at the ends).

    Returns
    -------
    a, b : float
        Offset and spacing, in input samples.
    """
    ratio = up / down
    min_add = min(n_in // 8, 100) * 2
    npad = 2 ** int(np.ceil(np.log2(n_in + min_add))) - n_in
    npad0 = npad // 2
    orig_len = n_in + npad
    new_len = max(int(round(ratio * orig_len)), 1)
    b = orig_len / new_len
    return int(round(ratio * npad0)) * b - npad0, b


def _span_grid(offset: int, n_out: int, n_total: int, up: int, down: int
               ) -> tuple[np.ndarray, float]:
    """Grid offsets of a span's output samples on the whole recording's MNE grid.

    Returns
    -------
    d : array, shape (n_out,)
        Position of each of the span's output samples relative to the ideal grid, in
        output samples (as in ``fft_resample`` on the whole recording).
    d_mean : float
        The mean of ``d`` over the whole recording (the exact phase shift it uses).
    """
    a, b = _mne_grid(n_total, up, down)
    n_out_total = max(int(round(n_total * up / down)), 1)
    slope = b * up / down - 1.0
    k = offset * up // down + np.arange(n_out)
    d = a * up / down + slope * k
    return d, a * up / down + slope * (n_out_total - 1) / 2


def fft_resample(
    x: np.ndarray, sfreq: float, sfreq_out: float, pad_s: float = 2.0, mne_grid: bool = True,
    *, offset: int = 0, n_total: int | None = None,
) -> np.ndarray:
    """Resample the last axis with an FFT brick-wall at the output Nyquist.

    Parameters
    ----------
    x : array, shape (n_chans, n_times)
        Signals at ``sfreq``.
    sfreq, sfreq_out : float
        Input and output sampling rates in Hz.
    pad_s : float
        Odd-reflection padding on each side, in seconds, against wrap-around.
    mne_grid : bool
        Align the output grid with ``mne.io.Raw.resample`` (default) rather than
        with the ideal grid ``k * sfreq / sfreq_out``.
    offset, n_total : int, int | None
        ``x`` is the span of native samples ``[offset, offset + n_times)`` of a
        recording ``n_total`` samples long (default: ``x`` is the whole recording).
        The output is then that recording's output samples from
        ``offset * sfreq_out / sfreq`` on, on the MNE grid of the whole recording,
        so that resampled spans match the resampled recording away from their
        edges. ``offset`` must be a whole number of output samples (a multiple of
        the resampling ratio's denominator).

    Returns
    -------
    array, shape (n_chans, round(n_times * sfreq_out / sfreq))
    """
    up, down = resample_ratio(sfreq, sfreq_out)
    n = x.shape[-1]
    n_out = max(int(round(n * up / down)), 1)
    if n_total is not None and (offset % down or offset < 0 or offset + n > n_total):
        raise ValueError(f"span [{offset}, {offset + n}) of {n_total} samples does not start on "
                         f"a whole output sample (multiple of {down}) or exceeds the recording")
    pad = -(-int(round(pad_s * sfreq)) // down) * down  # multiple of down
    total = sfft.next_fast_len(n + 2 * pad, real=True)
    while total % down:
        total = sfft.next_fast_len(total + 1, real=True)
    xp = _odd_pad(x, pad, total - n - pad)
    spec = sfft.rfft(xp, axis=-1)[..., : total * up // down // 2 + 1]
    m = total * up // down
    gain = m / total
    start = pad * up // down
    if not mne_grid:
        y = sfft.irfft(spec, m, axis=-1)[..., start : start + n_out]
    else:
        # Sample at MNE's grid, y(k + d_k) with d_k in output samples: the mean of d
        # as an exact phase shift, the small linear remainder (< 0.1 sample) by a
        # first-order Taylor step with the spectral derivative.
        if n_total is None:
            a, b = _mne_grid(n, up, down)
            k = np.arange(n_out)
            d = ((a + b * k) - k * down / up) * up / down
            d_mean = d.mean()
        else:
            d, d_mean = _span_grid(offset, n_out, n_total, up, down)
        omega = (2j * np.pi / m) * np.arange(spec.shape[-1])
        spec = spec * np.exp(omega * d_mean).astype(spec.dtype)
        y = sfft.irfft(spec, m, axis=-1)[..., start : start + n_out]
        dy = sfft.irfft(spec * omega.astype(spec.dtype), m, axis=-1)[..., start : start + n_out]
        y += (d - d_mean).astype(y.dtype) * dy
    y *= np.asarray(gain, dtype=y.dtype)
    return y



@lru_cache(maxsize=16)
def _complementary_lowpass(sfreq: float, l_freq: float) -> np.ndarray:
    """``delta - h`` for MNE's default FIR high-pass ``h`` at ``l_freq``, designed at ``sfreq``.

    The design (``mne.filter.create_filter``, which imports ``scipy.signal``: ~0.6 s) is kept
    in the machine cache per MNE version, so a query on a new file does not pay for it.
    """
    from importlib.metadata import version

    from elmsearch.cache import machine_cache_dir

    path = machine_cache_dir() / "filters" / f"hp-{sfreq!r}-{l_freq!r}-mne{version('mne')}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    import mne

    h = mne.filter.create_filter(
        None, sfreq, l_freq, None, fir_design="firwin", fir_window="hamming", verbose="error"
    )
    lp = -h
    lp[len(h) // 2] += 1.0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, lp)
        os.replace(tmp, path)
    except OSError:  # an unwritable cache only costs the design next time
        pass
    return lp


def highpass_reach_s(params: PreprocessingParams) -> float:
    """How far, in seconds, the high-pass reaches on each side of a sample (half its FIR, plus a block)."""
    fb = params.sfreq / HP_BLOCK
    return (len(_complementary_lowpass(fb, params.l_freq)) // 2 + 2) / fb


def _convolve_same(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``scipy.signal.oaconvolve(x, h[None], mode="same", axes=-1)`` by one FFT product per row."""
    n, m = x.shape[-1], len(h)
    size = sfft.next_fast_len(n + m - 1, real=True)
    full = sfft.irfft(sfft.rfft(x, size, axis=-1) * sfft.rfft(h, size), size, axis=-1)
    start = (m - 1) // 2
    return full[..., start : start + n]


def highpass(y: np.ndarray, sfreq: float, l_freq: float, edges: tuple | None = None) -> np.ndarray:
    """Zero-phase FIR high-pass equivalent to MNE's default design, at low cost.

    Parameters
    ----------
    y : array, shape (n_chans, n_times)
        Signals at ``sfreq`` (typically 100 Hz).
    sfreq : float
        Sampling rate in Hz.
    l_freq : float
        High-pass edge in Hz (MNE's default transition band is used).
    edges : tuple of arrays, shape (n_chans, 1) | None
        Values to reflect about at the start and end. When ``y`` was resampled
        from a native-rate signal, pass that signal's first and last samples:
        filtering at the native rate reflects about them, not about the
        smoothed ``y[:, 0]``, and the difference is a step the 33 s FIR smears
        over the first and last seconds.

    Returns
    -------
    array, shape (n_chans, n_times)
    """
    block = HP_BLOCK
    fb = sfreq / block
    lp = _complementary_lowpass(fb, l_freq).astype(y.dtype)
    n = y.shape[-1]
    edge = -(-(len(lp) * block) // block) * block  # filter length at sfreq, whole blocks
    yp = _odd_pad(y, edge, edge, edges)
    n_blocks = -(-yp.shape[-1] // block)
    yp = np.pad(yp, ((0, 0), (0, n_blocks * block - yp.shape[-1])), mode="edge")
    means = yp.reshape(y.shape[0], n_blocks, block).mean(axis=-1)
    base = _convolve_same(means, lp)
    centres = np.arange(n_blocks) * block + (block - 1) / 2
    t = np.arange(edge, edge + n, dtype=float)
    # Linear interpolation of a < 0.15 Hz baseline sampled at 4 Hz, all channels at once.
    pos = np.interp(t, centres, np.arange(n_blocks, dtype=float))
    i0 = np.minimum(pos.astype(int), n_blocks - 2)
    frac = (pos - i0).astype(y.dtype)
    baseline = base[:, i0] * (1 - frac) + base[:, i0 + 1] * frac
    return y - baseline


def preprocess(
    electrodes: np.ndarray, sfreq: float, params: PreprocessingParams | None = None,
    *, offset: int = 0, n_total: int | None = None,
) -> np.ndarray:
    """Apply ELM preprocessing to referential EEG (fast path).

    Parameters
    ----------
    electrodes : array, shape (17, n_times)
        Referential signals in volts, rows in ``channels.TCP_ELECTRODES`` order.
    sfreq : float
        Native sampling rate in Hz.
    params : PreprocessingParams | None
        Defaults to ELM's recipe.
    offset, n_total : int, int | None
        ``electrodes`` is the span ``[offset, offset + n_times)`` of a recording
        ``n_total`` native samples long (default: the whole recording). The output
        lies on the whole recording's output grid and matches its preprocessing
        away from the span's edges, if the span starts on a whole output sample
        that is also a whole high-pass block (``io.chunks.span_unit``). Used by
        ``elmsearch.io.chunks`` for long recordings.

    Returns
    -------
    array of float32, shape (20, n_times_out)
        TCP bipolar channels (``channels.TCP_CH_NAMES`` order) at ``params.sfreq``,
        scaled and clipped.
    """
    params = params or PreprocessingParams()
    if params.montage != "tcp":
        raise ValueError(f"unknown montage {params.montage!r}; only 'tcp' is supported")
    if params.h_freq >= params.sfreq / 2:
        logger.debug("h_freq %.1f >= Nyquist: the resampler's brick-wall is the low-pass", params.h_freq)
    x = np.asarray(electrodes, dtype=np.float32)
    if sfreq == params.sfreq:
        y = x.copy()
    elif n_total is None:
        y = fft_resample(x, sfreq, params.sfreq)
    else:
        y = fft_resample(x, sfreq, params.sfreq, offset=offset, n_total=n_total)
    if params.h_freq < params.sfreq / 2 * 0.98:
        import mne

        y = mne.filter.filter_data(y.astype(np.float64), params.sfreq, None, params.h_freq,
                                   verbose="error").astype(np.float32)
    y = highpass(y, params.sfreq, params.l_freq, edges=(x[:, :1], x[:, -1:]))
    out = bipolar(y)
    out *= params.scale
    np.clip(out, -params.clip, params.clip, out=out)
    return out.astype(np.float32)


def elm_reference(raw, params: PreprocessingParams | None = None) -> np.ndarray:
    """ELM's own preprocessing path, step by step with MNE (slow; the yardstick).

    Mirrors the ELM authors' TUEG pipeline on a loaded recording: ``Raw.filter``
    on every data channel at the native rate, channel renaming,
    ``mne.set_bipolar_reference`` to the TCP montage, scaling, clipping, and
    ``Raw.resample``. (ELM also drops the first 10 s of training recordings; that
    is a dataset choice, not preprocessing, and is not done here.)

    Parameters
    ----------
    raw : mne.io.BaseRaw
        A preloaded recording with the montage electrodes among its channels.
    params : PreprocessingParams | None
        Defaults to ELM's recipe.

    Returns
    -------
    array of float32, shape (20, n_times_out)
    """
    import mne

    from elmsearch.signal.channels import map_electrodes

    params = params or PreprocessingParams()
    raw = raw.copy().load_data()
    raw.filter(l_freq=params.l_freq, h_freq=params.h_freq, picks="all", verbose="error")
    found, _ = map_electrodes(raw.ch_names)
    raw.pick([raw.ch_names[found[e]] for e in TCP_ELECTRODES])
    raw.rename_channels({raw.ch_names[i]: e for i, e in enumerate(TCP_ELECTRODES)})
    raw.set_channel_types({e: "eeg" for e in TCP_ELECTRODES}, verbose="error")
    anodes, cathodes = zip(*TCP_PAIRS, strict=True)
    raw = mne.set_bipolar_reference(
        raw, list(anodes), list(cathodes), drop_refs=False, copy=False, verbose="error"
    )
    raw.pick(list(TCP_CH_NAMES))
    raw.apply_function(lambda x: np.clip(x * params.scale, -params.clip, params.clip),
                       picks="all", channel_wise=False)
    raw.resample(sfreq=params.sfreq, n_jobs=1, verbose="error")
    return raw.get_data().astype(np.float32)
