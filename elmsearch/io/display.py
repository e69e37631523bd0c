"""The EEG as a neurophysiologist reads it: a span of the raw signal in a clinical montage, filtered for display.

Not the model's input (``io.windowed``: 100 Hz, 0.1 Hz high-pass, clipped) but the file's own
samples, read at their native rate through MNE (any file MNE opens, also one refused for the
index because a montage electrode is missing), in microvolts:

- **montages** (``MONTAGES``, a table read by every caller): longitudinal bipolar (the double
  banana, chains separated), transverse bipolar, and referential to the average, to Cz and to
  linked ears (where A1 and A2 exist); each derivation the file lacks an electrode for is left
  out, and ECG/EOG/EMG channels are appended as recorded;
- **filters** as a clinical reader sets them (``lff`` low-frequency filter, ``hff``
  high-frequency filter, ``notch`` 50/60 Hz), zero-phase (forward-backward Butterworth
  second-order sections, ``scipy.signal.sosfiltfilt``) on the span and a margin on each side,
  so the drawn span has no edge transient;
- a **display rate** (``rate``): the samples decimated by an integer factor with an
  anti-aliasing filter to at most ``DISPLAY_RATE`` Hz (a screen shows fewer points than that in
  a 10 s page), or the native rate.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import TYPE_CHECKING

from elmsearch._lazy import lazy_module
from elmsearch.signal.channels import STANDARD_1020, normalize_channel_name

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # on first use: `elmsearch show` never computes

DISPLAY_RATE = 256.0  # Hz at most, unless the native rate is asked for
MAX_DISPLAY_SPAN_S = 600.0
MARGIN_S = 2.0  # read on each side of the span for the filters (a 0.3 Hz LFF settles in ~2 s)
LFF_CHOICES = (0.1, 0.3, 0.5, 1.0, 5.0)
HFF_CHOICES = (15.0, 30.0, 35.0, 70.0)
NOTCH_CHOICES = (50.0, 60.0)

_CHAINS = {
    "bipolar": (  # longitudinal (double banana): left/right temporal, left/right parasagittal, central
        ("Fp1", "F7", "T3", "T5", "O1"), ("Fp2", "F8", "T4", "T6", "O2"), ("Fp1", "F3", "C3", "P3", "O1"),
        ("Fp2", "F4", "C4", "P4", "O2"), ("Fz", "Cz", "Pz")),
    "transverse": (
        ("F7", "Fp1", "Fp2", "F8"), ("F7", "F3", "Fz", "F4", "F8"), ("A1", "T3", "C3", "Cz", "C4", "T4", "A2"),
        ("T5", "P3", "Pz", "P4", "T6"), ("T5", "O1", "O2", "T6")),
}
_REFERENTIAL = {"average": "average of the scalp electrodes", "cz": "Cz", "ears": "linked ears (A1+A2)/2"}
MONTAGES = {"bipolar": "longitudinal bipolar (double banana)", "transverse": "transverse bipolar",
            **{k: f"referential: {v}" for k, v in _REFERENTIAL.items()},
            "recorded": "every channel as recorded (files whose labels are not 10-20 names)"}
"""Montage name → what it is (the API's ``montage`` values)."""

_EXTRA = ("ECG", "EKG", "EOG", "EMG", "LOC", "ROC", "RESP")


class DisplayError(ValueError):
    """A display request that cannot be met (bad span, filter or montage), one line."""


@dataclasses.dataclass
class DisplaySignal:
    """A span of a recording as drawn.

    Attributes
    ----------
    data : array of float32, shape (n_chans, n_times)
        Microvolts.
    sfreq : float
        Samples per second of ``data``.
    ch_names : list of str
        Derivation names (``"Fp1-F7"``, ``"Fp1-avg"``, ``"ECG"``), in drawing order; ``""`` marks
        a gap between chains (a row of zeros that is not drawn).
    start_s : float
        Time of the first sample, seconds from the start of the recording.
    duration_s : float
        The recording's duration.
    montage : str
    filters : dict
        ``{"lff": Hz or None, "hff": Hz or None, "notch": Hz or None}`` as applied.
    native_sfreq : float
    missing : list of str
        Derivations of the montage left out because the file lacks an electrode.
    """

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    start_s: float
    duration_s: float
    montage: str
    filters: dict
    native_sfreq: float
    missing: list[str]

    def header(self) -> dict:
        """JSON-ready description of ``data`` (the API's header)."""
        return {"ch_names": self.ch_names, "sfreq": self.sfreq, "n_times": int(self.data.shape[1]),
                "start_s": round(self.start_s, 6), "duration_s": self.duration_s, "montage": self.montage,
                "montage_description": MONTAGES[self.montage], "units": "uV", "filters": self.filters,
                "native_sfreq": self.native_sfreq, "missing": self.missing, "dtype": "float32",
                "byte_order": "little", "shape": list(self.data.shape)}


def derivations(montage: str, electrodes, extra: list[str]) -> tuple[list[tuple[str, object]], list[str]]:
    """The derivations of a montage over the electrodes a file has.

    Returns
    -------
    rows : list of (name, spec)
        ``spec`` is ``(a, b)`` (``a - b``), ``(a, "avg" | "Cz" | "ears")`` or ``("", None)`` (a gap
        between chains) or ``(channel, None)`` (an extra channel as recorded).
    missing : list of str
        Derivations left out.
    """
    if montage not in MONTAGES:
        raise DisplayError(f"montage must be one of {', '.join(MONTAGES)}, got {montage!r}")
    rows: list[tuple[str, object]] = []
    missing: list[str] = []
    if montage in _CHAINS:
        for chain in _CHAINS[montage]:
            added = False
            for a, b in zip(chain, chain[1:], strict=False):
                if a in electrodes and b in electrodes:
                    rows.append((f"{a}-{b}", (a, b)))
                    added = True
                else:
                    missing.append(f"{a}-{b}")
            if added:
                rows.append(("", None))
    elif montage == "recorded":
        rows += [(name, (name, None)) for name in electrodes]
    else:
        ref = {"average": "avg", "cz": "Cz", "ears": "ears"}[montage]
        electrodes = set(electrodes)
        if ref == "Cz" and "Cz" not in electrodes:
            raise DisplayError("this recording has no Cz: use another montage")
        if ref == "ears" and not {"A1", "A2"} <= electrodes:
            raise DisplayError("this recording has no A1 and A2 (ears): use another montage")
        for e in STANDARD_1020:
            if e in electrodes and e not in ({"Cz"} if ref == "Cz" else {"A1", "A2"} if ref == "ears" else set()):
                rows.append((f"{e}-{ref}", (e, ref)))
        rows.append(("", None))
    rows += [(name, (name, None)) for name in extra]
    while rows and rows[-1][0] == "":
        rows.pop()
    return rows, missing


def _check(start_s: float, end_s: float, lff, hff, notch) -> None:
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or start_s < 0 or end_s <= start_s:
        raise DisplayError(f"span {start_s:g}-{end_s:g} s: the end must come after a start of 0 or more")
    if end_s - start_s > MAX_DISPLAY_SPAN_S:
        raise DisplayError(f"span of {end_s - start_s:g} s: at most {MAX_DISPLAY_SPAN_S:g} s at a time")
    if lff is not None and not (0 < lff < 100):
        raise DisplayError(f"lff {lff:g} Hz: expected a low-frequency filter between 0 and 100 Hz, or off")
    if hff is not None and not (0 < hff):
        raise DisplayError(f"hff {hff:g} Hz: expected a positive high-frequency filter, or off")
    if lff is not None and hff is not None and hff <= lff:
        raise DisplayError(f"hff {hff:g} Hz must be above lff {lff:g} Hz")
    if notch is not None and notch not in NOTCH_CHOICES:
        raise DisplayError(f"notch {notch:g} Hz: expected 50, 60 or off")


def filter_display(x: np.ndarray, sfreq: float, lff: float | None, hff: float | None, notch: float | None
                   ) -> tuple[np.ndarray, dict]:
    """Zero-phase display filters on ``x`` (shape (n_chans, n_times), any units), as applied.

    Filters at or above the Nyquist frequency are skipped (and reported as off).
    """
    from scipy.signal import butter, iirnotch, sosfiltfilt, tf2sos

    nyq = sfreq / 2
    applied = {"lff": None, "hff": None, "notch": None}
    y = np.asarray(x, np.float64)
    if y.shape[1] < 16:
        return y.astype(np.float32), applied
    if lff is not None and lff < nyq:
        y = sosfiltfilt(butter(2, lff, "highpass", fs=sfreq, output="sos"), y, axis=1)
        applied["lff"] = lff
    if hff is not None and hff < nyq * 0.98:
        y = sosfiltfilt(butter(4, hff, "lowpass", fs=sfreq, output="sos"), y, axis=1)
        applied["hff"] = hff
    if notch is not None and notch < nyq * 0.98:
        b, a = iirnotch(notch, 30.0, fs=sfreq)
        y = sosfiltfilt(tf2sos(b, a), y, axis=1)
        applied["notch"] = notch
    return y.astype(np.float32), applied


def read_display(fname: str | os.PathLike, start_s: float, end_s: float, montage: str = "bipolar",
                 lff: float | None = 1.0, hff: float | None = 70.0, notch: float | None = None,
                 rate: float | None = DISPLAY_RATE, raw=None) -> DisplaySignal:
    """Seconds ``[start_s, end_s)`` of a recording in a montage, filtered for display, in microvolts.

    Parameters
    ----------
    fname : path-like
        Any recording MNE reads (EDF/BDF, BrainVision, EEGLAB).
    start_s, end_s : float
        The span; an end past the recording stops at its end (the span is not stretched).
    montage : str
        A key of ``MONTAGES``.
    lff, hff : float | None
        Low- and high-frequency filters in Hz, or None (off).
    notch : float | None
        50 or 60 Hz, or None.
    rate : float | None
        Display rate at most (Hz); None: the native rate.
    raw : mne.io.BaseRaw | None
        The recording already opened (``io.source.open_raw``).

    Raises
    ------
    DisplayError
        A bad span, filter or montage, or no channel of the montage in the file.
    RecordingError
        The file cannot be opened.
    """
    from scipy.signal import resample_poly

    from elmsearch.io.source import open_raw

    _check(start_s, end_s, lff, hff, notch)
    raw = raw if raw is not None else open_raw(fname)
    sfreq = float(raw.info["sfreq"])
    duration = raw.n_times / sfreq
    if start_s >= duration:
        raise DisplayError(f"span starts at {start_s:g} s, after the end of the recording ({duration:g} s)")
    end_s = min(end_s, duration)
    names = list(raw.ch_names)
    electrodes: dict[str, int] = {}
    extra: list[str] = []
    types = raw.get_channel_types()
    for i, label in enumerate(names):
        if types[i] == "stim" or "annotation" in label.lower():
            continue
        if montage == "recorded":  # every channel under its own label, in file order
            electrodes.setdefault(label, i)
            continue
        e = normalize_channel_name(label)
        if e is not None:
            electrodes.setdefault(e, i)
        elif any(tag in label.upper() for tag in _EXTRA):
            extra.append(label)
    rows, missing = derivations(montage, list(electrodes), extra)
    if not any(name for name, _ in rows):
        raise DisplayError(f"none of the {montage} montage's derivations can be made from this recording's channels "
                           "(their labels are not 10-20 names): use montage=recorded")
    factor = int(math.ceil(sfreq / rate)) if rate is not None and sfreq > rate else 1
    margin = MARGIN_S if (lff is not None or hff is not None or notch is not None or factor > 1) else 0.0
    a = max(int(math.floor((start_s - margin) * sfreq)) // factor * factor, 0)
    b = min(int(math.ceil((end_s + margin) * sfreq)), raw.n_times)
    picks = sorted(set(electrodes.values()) | {names.index(x) for x in extra})
    block = raw.get_data(picks=picks, start=a, stop=b) * 1e6  # volts -> microvolts
    row_of = {p: n for n, p in enumerate(picks)}
    sig = {e: block[row_of[i]] for e, i in electrodes.items()}
    sig.update({x: block[row_of[names.index(x)]] for x in extra})
    scalp = [e for e in electrodes if e not in ("A1", "A2")]
    refs = {"avg": np.mean([sig[e] for e in scalp], 0) if scalp else np.zeros(b - a),
            "Cz": sig.get("Cz"), "ears": (sig["A1"] + sig["A2"]) / 2 if {"A1", "A2"} <= set(sig) else None}
    out = np.zeros((len(rows), b - a))
    for n, (_name, spec) in enumerate(rows):
        if spec is None:
            continue
        first, second = spec
        out[n] = sig[first] - (refs[second] if second in refs else sig[second] if second else 0.0)
    data, applied = filter_display(out, sfreq, lff, hff, notch)
    if factor > 1:  # anti-aliased decimation of the block with its margins: no edge effect in the span
        data = resample_poly(data, 1, factor, axis=1).astype(np.float32)
    out_rate = sfreq / factor
    lo = int(round(start_s * out_rate)) - a // factor
    hi = lo + int(round((end_s - start_s) * out_rate))
    data = data[:, max(lo, 0):min(hi, data.shape[1])]
    return DisplaySignal(np.ascontiguousarray(data, np.float32), out_rate, [name for name, _ in rows],
                         (a // factor + max(lo, 0)) / out_rate, duration, montage, applied, sfreq, missing)
