"""A deterministic generator of TUH-style demo archives whose EEG carries its reports' findings.

``generate_archive`` writes, from a seed alone, a TUH EEG v2 layout
(``edf/NNN/SUBJECT/sSSS_YYYY_MM_DD/01_tcp_ar|02_tcp_le/SUBJECT_sSSS_tTTT.edf``) with
250 Hz EDFs (TUH channel names and patient fields), one TUH-style report per session,
the same reports as a JSON-lines side file, and a ground-truth sidecar ``labels.csv``.

The signals are built per electrode in microvolts so that the TCP bipolar montage
shows what a neurophysiologist would look for:

- background: spatially correlated 1/f noise;
- posterior dominant rhythm (PDR) at the labelled frequency, occipital maximum,
  waxing and waning, blocked while the eyes are open;
- diffuse slowing (2-6 Hz everywhere, slower PDR); focal polymorphic delta over a region;
- generalized 3 Hz spike-and-wave bursts, frontally maximal;
- focal sharp waves over a region (phase reversal in the bipolar chain);
- sleep: spindles (12-14 Hz, central) and vertex waves (Cz), PDR attenuated;
- artifacts: eye blinks (Fp1/Fp2), muscle bursts (20-70 Hz, temporal/frontal).

Synthesis (``synthesize_eeg``) is pure numpy; ``write_recording`` and
``generate_archive`` do the I/O.

Generator versions: 1 writes the signals alone; 2 (the default) writes the same signals with
the events the generator put in them, as technologists mark them: an EDF+ annotation signal
(``EVENT_TEXT``: "spike and wave", "sharp wave", "sleep spindle", "vertex wave", "eye blink",
"muscle artifact", "eyes open"), a TUH-style ``.csv`` label file beside each EDF (the codes of
``EVENT_TUH_CODE``), and an ``events.csv`` ground truth in the archive's root. Both versions
draw the same random numbers, so a seed gives the same EEG under either; version 1 keeps the
bytes (and the numbers measured on them) of archives made before events.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import logging
import os
from pathlib import Path

import numpy as np

from elmsearch.signal.channels import STANDARD_1020, tuh_channel_name

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2
VERSIONS = (1, 2)

# The events synthesize_eeg puts in the EEG: kind -> the annotation text a technologist would type
EVENT_TEXT = {"spike_wave": "spike and wave", "sharp_wave": "sharp wave", "spindle": "sleep spindle",
              "vertex_wave": "vertex wave", "eye_blink": "eye blink", "muscle": "muscle artifact",
              "eyes_open": "eyes open"}
# and the TUH label code of those the TUH vocabulary has (elmsearch.archive.tuh_labels)
EVENT_TUH_CODE = {"spike_wave": "spsw", "sharp_wave": "spsw", "eye_blink": "eybl", "muscle": "musc"}

# Approximate scalp positions (x: left -> right, y: back -> front), 10-20 system.
_POS = {
    "Fp1": (-0.3, 0.95), "Fp2": (0.3, 0.95), "F7": (-0.8, 0.6), "F3": (-0.4, 0.55), "Fz": (0.0, 0.5),
    "F4": (0.4, 0.55), "F8": (0.8, 0.6), "T3": (-1.0, 0.0), "C3": (-0.5, 0.0), "Cz": (0.0, 0.0),
    "C4": (0.5, 0.0), "T4": (1.0, 0.0), "T5": (-0.8, -0.6), "P3": (-0.4, -0.55), "Pz": (0.0, -0.5),
    "P4": (0.4, -0.55), "T6": (0.8, -0.6), "O1": (-0.3, -0.95), "O2": (0.3, -0.95),
    "A1": (-1.2, -0.1), "A2": (1.2, -0.1),
}  # fmt: skip
ELECTRODES: tuple[str, ...] = STANDARD_1020
_XY = np.array([_POS[e] for e in ELECTRODES])

# Regions: centre on the scalp and the electrodes a report would name.
REGIONS: dict[str, tuple[float, float]] = {
    "left temporal": (-0.95, -0.1), "right temporal": (0.95, -0.1),
    "left frontal": (-0.5, 0.65), "right frontal": (0.5, 0.65),
    "left parietal": (-0.45, -0.55), "right parietal": (0.45, -0.55),
    "left frontotemporal": (-0.85, 0.35), "right frontotemporal": (0.85, 0.35),
}  # fmt: skip


def _weights(center: tuple[float, float], width: float) -> np.ndarray:
    d2 = ((_XY - np.asarray(center)) ** 2).sum(1)
    return np.exp(-d2 / (2 * width**2))


W_POSTERIOR = _weights((0.0, -0.95), 0.45)
W_FRONTAL = np.clip(0.35 + 0.65 * (_XY[:, 1] + 1) / 2, 0, 1)
W_CENTRAL = _weights((0.0, 0.0), 0.45)
W_VERTEX = _weights((0.0, 0.0), 0.3)
W_EYES = _weights((0.0, 1.05), 0.35)
W_MUSCLE = np.clip(np.abs(_XY[:, 0]) - 0.55, 0, None) * 2
for _i, _e in enumerate(ELECTRODES):
    if _e in ("A1", "A2"):
        W_EYES[_i] = W_MUSCLE[_i] = 0.0


@dataclasses.dataclass(frozen=True)
class Findings:
    """Ground truth of one recording (what its report states).

    Attributes
    ----------
    pdr_hz : float | None
        Posterior dominant rhythm frequency (None: no organised PDR).
    diffuse_slowing : bool
    focal_slowing : str | None
        Region name from ``REGIONS``.
    spike_wave : bool
        Generalized 3 Hz spike-and-wave bursts.
    focal_sharp : str | None
        Region of focal sharp waves.
    sleep : bool
        Drowsiness and stage II sleep (spindles, vertex waves).
    eye_blinks, muscle : bool
        Artifacts.
    """

    pdr_hz: float | None = 10.0
    diffuse_slowing: bool = False
    focal_slowing: str | None = None
    spike_wave: bool = False
    focal_sharp: str | None = None
    sleep: bool = False
    eye_blinks: bool = True
    muscle: bool = False

    @property
    def normal(self) -> bool:
        """No abnormality."""
        return not (self.diffuse_slowing or self.focal_slowing or self.spike_wave or self.focal_sharp)


# ---- signal synthesis ----------------------------------------------------------------------
def _band_noise(rng, n_chans: int, n_times: int, sfreq: float, lo: float, hi: float,
                pink: bool = False) -> np.ndarray:
    """Noise with a flat (or 1/f) spectrum between ``lo`` and ``hi`` Hz, unit std per row."""
    spec = rng.standard_normal((n_chans, n_times // 2 + 1)) + 1j * rng.standard_normal((n_chans, n_times // 2 + 1))
    f = np.fft.rfftfreq(n_times, 1 / sfreq)
    gain = ((f >= lo) & (f <= hi)).astype(float)
    if pink:
        gain /= np.maximum(f, max(lo, 1.0))  # 1/f^2 power, as scalp EEG above a few Hz
    x = np.fft.irfft(spec * gain, n_times)
    return x / (x.std(axis=1, keepdims=True) + 1e-12)


def _slow_envelope(rng, n_times: int, sfreq: float, cutoff: float = 0.2) -> np.ndarray:
    env = _band_noise(rng, 1, n_times, sfreq, 0.0, cutoff)[0]
    return np.clip(0.75 + 0.35 * env, 0.15, 1.6)


def _events(rng, duration: float, per_minute: float, min_gap: float = 1.0, at_least: int = 0) -> np.ndarray:
    """Poisson event times in seconds, at least ``min_gap`` apart (and ``at_least`` of them)."""
    n = max(rng.poisson(per_minute * duration / 60), at_least)
    t = np.sort(rng.uniform(0.5, max(duration - 0.5, 0.6), n))
    keep = np.concatenate([[True], np.diff(t) > min_gap]) if n else np.zeros(0, bool)
    return t[keep]


def _add_waveform(x: np.ndarray, weights: np.ndarray, wave: np.ndarray, onset: int) -> None:
    end = min(onset + len(wave), x.shape[1])
    if onset >= end or onset < 0:
        return
    x[:, onset:end] += weights[:, None] * wave[None, : end - onset]


def synthesize_eeg(findings: Findings, duration: float, sfreq: float, rng: np.random.Generator,
                   events: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Referential EEG carrying ``findings``.

    Parameters
    ----------
    findings : Findings
    duration : float
        Seconds.
    sfreq : float
        Hz.
    rng : numpy.random.Generator
    events : list | None
        When given, ``(onset_s, duration_s, kind)`` of every event put in the EEG is appended
        (kinds of ``EVENT_TEXT``); the random numbers drawn are the same either way.

    Returns
    -------
    eeg : array, shape (21, n_times)
        Microvolts, rows in ``ELECTRODES`` order.
    ekg : array, shape (n_times,)
        An ECG trace in microvolts.
    """
    n = int(round(duration * sfreq))
    t = np.arange(n) / sfreq
    n_ch = len(ELECTRODES)
    # background: spatially smooth 1/f sources + local noise
    sources = _band_noise(rng, 6, n, sfreq, 0.5, 45.0, pink=True)
    centers = rng.uniform(-1, 1, (6, 2))
    mix = np.stack([_weights(tuple(c), 0.7) for c in centers], axis=1)  # (n_ch, 6)
    x = 12.0 * (mix @ sources) / np.sqrt(mix.sum(1, keepdims=True) + 1e-9)
    x += 5.0 * _band_noise(rng, n_ch, n, sfreq, 0.5, 45.0, pink=True)

    sleep_start = duration * rng.uniform(0.45, 0.65) if findings.sleep else duration
    awake = (t < sleep_start).astype(float)
    # eyes open in a few segments: PDR blocked, blinks happen then
    eyes_open = np.zeros(n)
    marked = events if events is not None else []
    for t0 in _events(rng, min(duration, sleep_start), 1.5, min_gap=8.0):
        d_open = rng.uniform(3, 6)
        eyes_open[int(t0 * sfreq) : int((t0 + d_open) * sfreq)] = 1.0
        marked.append((float(t0), float(min(d_open, sleep_start - t0, duration - t0)), "eyes_open"))
    eyes_open *= awake

    if findings.pdr_hz:
        f_inst = findings.pdr_hz + 0.15 * _band_noise(rng, 1, n, sfreq, 0.0, 0.3)[0]
        phase = 2 * np.pi * np.cumsum(f_inst) / sfreq
        amp = 45.0 * (0.6 if findings.diffuse_slowing else 1.0)
        pdr = amp * _slow_envelope(rng, n, sfreq) * np.sin(phase)
        gate = awake * (1 - 0.85 * eyes_open) + (1 - awake) * 0.15
        x += W_POSTERIOR[:, None] * (pdr * gate)[None, :]
        # a little lateral phase offset between hemispheres
        x[[ELECTRODES.index("O2"), ELECTRODES.index("P4"), ELECTRODES.index("T6")]] *= 0.95
    if findings.diffuse_slowing:
        x += 28.0 * _band_noise(rng, 1, n, sfreq, 2.0, 6.0)[0][None, :] * (0.7 + 0.3 * W_FRONTAL[:, None])
        x += 10.0 * _band_noise(rng, n_ch, n, sfreq, 2.0, 6.0)
    if findings.focal_slowing:
        w = _weights(REGIONS[findings.focal_slowing], 0.35)
        x += 55.0 * w[:, None] * _band_noise(rng, 1, n, sfreq, 1.0, 3.0)
    if findings.spike_wave:
        for t0 in _events(rng, duration, rng.uniform(1.0, 3.0), min_gap=10.0, at_least=1):
            burst = rng.uniform(2.0, 8.0)
            f_sw = rng.uniform(2.7, 3.3)
            n_cycles = int(burst * f_sw)
            period = 1 / f_sw
            tt = np.arange(int(period * sfreq)) / sfreq
            spike = -170.0 * np.exp(-0.5 * ((tt - 0.04) / 0.015) ** 2)
            wave = -110.0 * np.sin(np.pi * np.clip((tt - 0.09) / (period - 0.1), 0, 1))
            cycle = spike + wave + 40.0 * np.exp(-0.5 * ((tt - 0.075) / 0.02) ** 2)
            train = np.tile(cycle, n_cycles)
            _add_waveform(x, 0.45 + 0.55 * W_FRONTAL, train, int(t0 * sfreq))
            marked.append((float(t0), float(min(len(train) / sfreq, duration - t0)), "spike_wave"))
    if findings.focal_sharp:
        w = _weights(REGIONS[findings.focal_sharp], 0.3)
        for t0 in _events(rng, duration, rng.uniform(3.0, 8.0), min_gap=2.0, at_least=2):
            width = rng.uniform(0.07, 0.2)
            tt = np.arange(int((width + 0.3) * sfreq)) / sfreq
            sharp = -rng.uniform(90, 150) * np.exp(-0.5 * ((tt - width / 2) / (width / 5)) ** 2)
            sharp += 35.0 * np.exp(-0.5 * ((tt - width - 0.08) / 0.06) ** 2)  # after-going slow wave
            _add_waveform(x, w, sharp, int(t0 * sfreq))
            marked.append((float(t0), float(min(width + 0.3, duration - t0)), "sharp_wave"))
    if findings.sleep:
        for t0 in _events(rng, duration - sleep_start, 6.0, min_gap=3.0, at_least=2) + sleep_start:
            d = rng.uniform(0.6, 1.6)
            tt = np.arange(int(d * sfreq)) / sfreq
            spindle = 30.0 * np.sin(2 * np.pi * rng.uniform(12.0, 14.0) * tt) * np.sin(np.pi * tt / d) ** 2
            _add_waveform(x, W_CENTRAL, spindle, int(t0 * sfreq))
            marked.append((float(t0), float(min(d, duration - t0)), "spindle"))
        for t0 in _events(rng, duration - sleep_start, 4.0, min_gap=4.0, at_least=1) + sleep_start:
            tt = np.arange(int(0.5 * sfreq)) / sfreq
            vertex = -110.0 * np.exp(-0.5 * ((tt - 0.1) / 0.04) ** 2) + 40 * np.exp(-0.5 * ((tt - 0.25) / 0.07) ** 2)
            _add_waveform(x, W_VERTEX, vertex, int(t0 * sfreq))
            marked.append((float(t0), float(min(0.5, duration - t0)), "vertex_wave"))
        x += 15.0 * (1 - awake)[None, :] * _band_noise(rng, 1, n, sfreq, 0.5, 3.0)
    if findings.eye_blinks:
        open_times = np.flatnonzero(np.diff(eyes_open, prepend=0) > 0) / sfreq
        blinks = np.concatenate([_events(rng, min(duration, sleep_start), 6.0, min_gap=2.0), open_times])
        for t0 in blinks:
            tt = np.arange(int(0.6 * sfreq)) / sfreq
            blink = rng.uniform(100, 200) * np.exp(-0.5 * ((tt - 0.2) / 0.07) ** 2)
            _add_waveform(x, W_EYES, blink, int(t0 * sfreq))
            marked.append((float(t0), float(min(0.6, duration - t0)), "eye_blink"))
    if findings.muscle:
        for t0 in _events(rng, min(duration, sleep_start), 3.0, min_gap=5.0):
            d = rng.uniform(1.0, 4.0)
            m = int(d * sfreq)
            burst = 45.0 * _band_noise(rng, 1, m, sfreq, 20.0, min(70.0, sfreq / 2 - 1))[0]
            side = np.where(_XY[:, 0] < 0, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
            _add_waveform(x, W_MUSCLE * side, burst * np.hanning(m), int(t0 * sfreq))
            marked.append((float(t0), float(min(d, duration - t0)), "muscle"))
    # ECG
    hr = rng.uniform(60, 90) / 60
    beat_phase = (t * hr) % 1.0
    ekg = 600.0 * np.exp(-0.5 * ((beat_phase - 0.3) / 0.012) ** 2)
    ekg -= 80 * np.exp(-0.5 * ((beat_phase - 0.55) / 0.05) ** 2)
    ekg += 10.0 * rng.standard_normal(n)
    x += 3.0 * np.outer(np.where(_XY[:, 0] < 0, 1.0, 0.6), ekg / 600)  # small ECG artifact
    marked.sort()
    return x, ekg


# ---- findings and reports ------------------------------------------------------------------
_HISTORY = ["seizures", "a first unprovoked seizure", "altered mental status", "syncope versus seizure",
            "headaches", "episodes of staring", "confusion", "memory difficulties", "spells of unresponsiveness",
            "a history of epilepsy", "dizziness", "new onset seizure"]
_MEDS = ["Keppra", "Dilantin", "Depakote", "Lamictal", "Topamax", "Lipitor", "aspirin", "Tegretol",
         "Vimpat", "Ativan"]


def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def random_findings(rng: np.random.Generator, age: float) -> Findings:
    """Findings for a session: about half normal, abnormal ones with one or more findings."""
    if age < 3:
        normal_pdr = rng.uniform(5.0, 6.5)
    elif age < 8:
        normal_pdr = rng.uniform(7.0, 8.5)
    else:
        normal_pdr = rng.uniform(8.5, 11.0)
    normal_pdr = round(normal_pdr * 2) / 2
    sleep = bool(rng.random() < 0.4)
    blinks, muscle = bool(rng.random() < 0.75), bool(rng.random() < 0.4)
    if rng.random() < 0.5:
        return Findings(pdr_hz=normal_pdr, sleep=sleep, eye_blinks=blinks, muscle=muscle)
    kinds = [k for k in ("diffuse", "focal", "spike_wave", "sharp") if rng.random() < 0.35]
    if not kinds:
        kinds = [_choice(rng, ["diffuse", "focal", "spike_wave", "sharp"])]
    diffuse = "diffuse" in kinds
    pdr = round(rng.uniform(5.0, 7.5) * 2) / 2 if diffuse else normal_pdr
    if diffuse and rng.random() < 0.2:
        pdr = None
    regions = list(REGIONS)
    return Findings(
        pdr_hz=pdr, diffuse_slowing=diffuse,
        focal_slowing=_choice(rng, regions) if "focal" in kinds else None,
        spike_wave="spike_wave" in kinds,
        focal_sharp=_choice(rng, regions) if "sharp" in kinds else None,
        sleep=sleep, eye_blinks=blinks, muscle=muscle,
    )


# How a report states each finding: (Findings attribute, wordings); ``{region}`` is the
# attribute's value for regional findings.
_FINDING_WORDINGS = (
    ("diffuse_slowing", ["There is diffuse theta and delta slowing of the background.",
                         "Generalized slowing in the theta and delta range is present throughout.",
                         "The record shows diffuse polymorphic slowing."]),
    ("focal_slowing", ["There is focal delta slowing over the {region} region.",
                       "Intermittent polymorphic delta activity is seen in the {region} region.",
                       "Focal slowing is noted over the {region} head region."]),
    ("spike_wave", ["Brief bursts of generalized 3 Hz spike and wave activity are seen.",
                    "There are bursts of generalized 3 Hz spike-and-wave discharges, maximal frontally.",
                    "Generalized spike and wave complexes at 3 Hz occur in runs of several seconds."]),
    ("focal_sharp", ["Sharp waves are noted in the {region} region.",
                     "Focal sharp waves are seen over the {region} region with phase reversal.",
                     "Intermittent {region} sharp waves are recorded."]),
    ("sleep", ["Drowsiness and stage II sleep with spindles and vertex waves are recorded.",
               "The patient enters stage II sleep with sleep spindles and vertex waves.",
               "Sleep is characterized by vertex waves and symmetric spindles."]),
)

# The impression's reason for each abnormal finding, in the order above, and its clinical
# correlation, in this order.
_IMPRESSION = {"diffuse_slowing": "Diffuse slowing of the background", "focal_slowing": "Focal slowing, {region}",
               "spike_wave": "Generalized 3 Hz spike and wave discharges", "focal_sharp": "Focal sharp waves, {region}"}
_CORRELATION = {
    "spike_wave": "The generalized spike and wave is consistent with a generalized epilepsy.",
    "focal_sharp": "The sharp waves suggest a potentially epileptogenic focus in the {region} region.",
    "focal_slowing": "The focal slowing suggests focal cerebral dysfunction in the {region} region.",
    "diffuse_slowing": "Diffuse slowing is consistent with an encephalopathy, which is nonspecific as to cause.",
}


def write_report(f: Findings, age: float, sex: str, rng: np.random.Generator, montage_note: str = "") -> str:
    """A TUH-style report stating ``f`` in varied wording."""
    who = {"M": _choice(rng, ["man", "male"]), "F": _choice(rng, ["woman", "female"])}[sex]
    if age < 18:
        who = {"M": "boy", "F": "girl"}[sex]
    age_txt = f"{int(age)} year old" if age >= 1 else f"{int(round(age * 12))} month old"
    history = f"{age_txt.capitalize()} {who} with {_choice(rng, _HISTORY)}."
    meds = ", ".join(sorted({_choice(rng, _MEDS) for _ in range(int(rng.integers(0, 3)))})) or "None."
    intro = _choice(rng, [
        "Digital video EEG was performed using the standard 10-20 system of electrode placement "
        "with one channel of EKG.",
        "Routine EEG was recorded in the laboratory using standard 10-20 electrode placement.",
        "This is a routine digital EEG with photic stimulation and hyperventilation.",
    ]) + montage_note
    desc = []
    if f.pdr_hz:
        pdr_s = f"{f.pdr_hz:g} Hz"
        if f.diffuse_slowing:
            desc.append(_choice(rng, [
                f"The background is slow with a {pdr_s} posterior dominant rhythm.",
                f"The posterior dominant rhythm is slow at {pdr_s}.",
                f"In wakefulness the background is poorly organized with a {pdr_s} PDR.",
            ]))
        else:
            desc.append(_choice(rng, [
                f"In wakefulness there is a {pdr_s} posterior dominant rhythm which is reactive to eye opening.",
                f"The background includes a well-formed {pdr_s} alpha rhythm, maximal posteriorly.",
                f"The posterior dominant rhythm is {pdr_s}, symmetric and reactive.",
                f"A {pdr_s} posterior dominant rhythm is seen with eyes closed.",
            ]))
    else:
        desc.append("There is no well-organized posterior dominant rhythm.")
    for finding, wordings in _FINDING_WORDINGS:  # one random choice per finding present, in this order
        value = getattr(f, finding)
        if value:
            desc.append(_choice(rng, wordings).format(region=value))
    if not f.sleep:
        desc.append(_choice(rng, ["The patient remains awake.", "Sleep is not recorded.", ""]))
    artifacts = [a for a, present in (("eye blink", f.eye_blinks), ("muscle", f.muscle)) if present]
    if artifacts:
        desc.append(_choice(rng, [f"{' and '.join(artifacts).capitalize()} artifact is present.",
                                  f"There is {' and '.join(artifacts)} artifact."]))
    hr = f"{int(rng.integers(60, 91))} bpm"
    if f.normal:
        impression = _choice(rng, ["Normal EEG.", "Normal awake and asleep EEG." if f.sleep else "Normal awake EEG.",
                                   "This is a normal EEG."])
        correlation = _choice(rng, ["No epileptiform features were seen. A normal EEG does not exclude epilepsy.",
                                    "This is a normal EEG for age.",
                                    "No focal or epileptiform abnormalities are present."])
    else:
        present = {finding: getattr(f, finding) for finding in _IMPRESSION if getattr(f, finding)}
        reasons = [_IMPRESSION[finding].format(region=value) for finding, value in present.items()]
        impression = "Abnormal EEG due to:\n" + "\n".join(f"{i}. {r}." for i, r in enumerate(reasons, 1))
        correlation = " ".join(_CORRELATION[finding].format(region=present[finding])
                               for finding in _CORRELATION if finding in present)
    sections = [("CLINICAL HISTORY", history), ("MEDICATIONS", meds), ("INTRODUCTION", intro),
                ("DESCRIPTION OF THE RECORD", " ".join(d for d in desc if d))]
    if rng.random() < 0.6:
        sections.append(("HR", hr))
    sections += [("IMPRESSION", impression), ("CLINICAL CORRELATION", correlation)]
    return "\n\n".join(f"{h}: {b}" for h, b in sections) + "\n"


# ---- archive -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DemoArchive:
    """What ``generate_archive`` made.

    Attributes
    ----------
    root : Path
    n_recordings : int
    hours : float
        Hours of EEG.
    labels_path, reports_path : Path
        Ground-truth sidecar (CSV) and reports side file (JSON lines).
    rows : list of dict
        The sidecar rows.
    """

    root: Path
    n_recordings: int
    hours: float
    labels_path: Path
    reports_path: Path
    rows: list[dict]


LABEL_COLUMNS = ("path", "subject", "session", "montage", "token", "date", "age", "sex", "duration_s",
                 "normal", "abnormal", "pdr_hz", "diffuse_slowing", "focal_slowing", "focal_slowing_region",
                 "spike_wave", "focal_sharp", "focal_sharp_region", "sleep", "eye_blinks", "muscle")


def _subject_id(rng) -> str:
    return "".join(chr(97 + int(v)) for v in rng.integers(0, 26, 8))


def write_recording(fname: Path, eeg_uv: np.ndarray, ekg_uv: np.ndarray, sfreq: float, reference: str,
                    subject: str, sex: str, birthdate: dt.date, age: int, start: dt.datetime,
                    events: list | None = None) -> None:
    """Write a TUH-style EDF (channels ``EEG FP1-REF``..., patient field with ``Age:NN``).

    ``events``: ``(onset_s, duration_s, kind)`` written as an EDF+ annotation signal (``EVENT_TEXT``).
    """
    from edfio import Edf, EdfAnnotation, EdfSignal, Patient, Recording

    signals = [
        EdfSignal(np.clip(eeg_uv[i], -2999.0, 2999.0), sfreq, label=tuh_channel_name(e, reference),
                  physical_dimension="uV", physical_range=(-3000.0, 3000.0), transducer_type="Ag-AgCl electrode")
        for i, e in enumerate(ELECTRODES)
    ]
    signals.append(EdfSignal(np.clip(ekg_uv, -2999.0, 2999.0), sfreq, label=f"EEG EKG1-{reference}",
                             physical_dimension="uV", physical_range=(-3000.0, 3000.0)))
    edf = Edf(signals, patient=Patient(code=subject, sex=sex, birthdate=birthdate, name=subject,
                                       additional=(f"Age:{age}",)),
              recording=Recording(startdate=start.date()), starttime=start.time(), data_record_duration=1.0,
              annotations=[EdfAnnotation(round(t, 3), round(d, 3), EVENT_TEXT[k]) for t, d, k in events]
              if events else None)
    fname.parent.mkdir(parents=True, exist_ok=True)
    tmp = fname.with_name(f".{fname.name}.tmp")
    edf.write(tmp)
    os.replace(tmp, fname)


def _write_tuh_labels(fname: Path, bname: str, duration: float, events: list) -> None:
    """A TUH-style ``.csv`` label file (``TERM`` rows) of the events the TUH vocabulary has a code for."""
    lines = ["# version = csv_v1.0.0", f"# bname = {bname}", f"# duration = {duration:.2f} secs", "#",
             "channel,start_time,stop_time,label,confidence"]
    lines += [f"TERM,{t:.4f},{t + d:.4f},{EVENT_TUH_CODE[k]},1.0000" for t, d, k in events if k in EVENT_TUH_CODE]
    fname.write_text("\n".join(lines) + "\n")


def plan_archive(n_recordings: int, seed: int, min_minutes: float, max_minutes: float,
                 recordings_per_patient: tuple[int, int] = (1, 4)) -> list[dict]:
    """Decide every recording (patient, session, montage, date, findings, report) from the seed.

    The same plan for every generator version (version 2 adds the events, not other numbers).
    """
    rng = np.random.default_rng([seed, 1])
    plan: list[dict] = []
    used: set[str] = set()
    while len(plan) < n_recordings:
        subject = _subject_id(rng)
        if subject in used:
            continue
        used.add(subject)
        sex = _choice(rng, ["M", "F"])
        birth = dt.date(int(rng.integers(1930, 2016)), int(rng.integers(1, 13)), 1)
        n_sessions = int(rng.integers(recordings_per_patient[0], recordings_per_patient[1] + 1))
        day = dt.date(max(2003, birth.year + 1), 1, 1) + dt.timedelta(days=int(rng.integers(0, 3000)))
        day = min(day, dt.date(2019, 6, 1))
        base: Findings | None = None
        for s in range(1, n_sessions + 1):
            if len(plan) >= n_recordings:
                break
            age = max((day - birth).days / 365.25, 0.5)
            findings = random_findings(rng, age)
            if base is not None and rng.random() < 0.5:  # patients tend to keep their findings
                findings = dataclasses.replace(base, sleep=findings.sleep, muscle=findings.muscle)
            base = findings
            start = dt.datetime(day.year, day.month, day.day, int(rng.integers(8, 17)), int(rng.integers(0, 60)))
            montages = ["01_tcp_ar"] if rng.random() < 0.75 else ["02_tcp_le"]
            if rng.random() < 0.15 and len(plan) + 1 < n_recordings:
                montages = ["01_tcp_ar", "02_tcp_le"]
            report = write_report(findings, age, sex, rng)
            session = f"s{s:03d}"
            for token, montage in enumerate(montages):
                plan.append(dict(
                    subject=subject, sex=sex, birthdate=birth, age=int(age), session=session, montage=montage,
                    token=f"t{token:03d}", start=start + dt.timedelta(minutes=15 * token), findings=findings,
                    report=report, minutes=float(np.exp(rng.uniform(np.log(min_minutes), np.log(max_minutes)))),
                    signal_seed=int(rng.integers(2**31)),
                ))
            day += dt.timedelta(days=int(rng.integers(30, 900)))
            day = min(day, dt.date(2019, 12, 31))
    return plan[:n_recordings]


def generate_archive(root: str | os.PathLike, n_recordings: int = 100, seed: int = 0, min_minutes: float = 2.0,
                     max_minutes: float = 10.0, sfreq: float = 250.0,
                     recordings_per_patient: tuple[int, int] = (1, 4), version: int = GENERATOR_VERSION
                     ) -> DemoArchive:
    """Write a TUH-style demo archive (idempotent: an existing complete one is reused).

    Parameters
    ----------
    root : path-like
        Archive folder.
    n_recordings : int
        EDF files to write.
    seed : int
        Everything is a function of the seed (same seed -> byte-identical files).
    min_minutes, max_minutes : float
        Recording durations are log-uniform in this range (mean 5 min for 2-10 min).
    sfreq : float
        Sampling rate of the EDFs.
    recordings_per_patient : (int, int)
        Sessions per patient, inclusive range.
    version : int
        Generator version (``VERSIONS``): 2 writes the events (see the module notes), 1 the
        files of archives made before events, byte for byte.

    Returns
    -------
    DemoArchive
    """
    if version not in VERSIONS:
        raise ValueError(f"generator version must be one of {VERSIONS}, got {version!r}")
    root = Path(root)
    params = dict(n_recordings=n_recordings, seed=seed, min_minutes=min_minutes, max_minutes=max_minutes,
                  sfreq=sfreq, recordings_per_patient=list(recordings_per_patient), version=version)
    manifest = root / "demo_manifest.json"
    labels_path, reports_path = root / "labels.csv", root / "reports.jsonl"
    if manifest.is_file():
        done = json.loads(manifest.read_text())
        if done.get("params") == params and labels_path.is_file():
            with labels_path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            if all((root / r["path"]).is_file() for r in rows):
                logger.info("%s: demo archive already complete, reused", root)
                return DemoArchive(root, len(rows), float(done["hours"]), labels_path, reports_path, rows)
    plan = plan_archive(n_recordings, seed, min_minutes, max_minutes, recordings_per_patient)
    rows, reports, truth = [], {}, []
    for item in plan:
        f: Findings = item["findings"]
        sess_dir = (root / "edf" / item["subject"][:3] / item["subject"]
                    / f"{item['session']}_{item['start']:%Y_%m_%d}")
        fname = sess_dir / item["montage"] / f"{item['subject']}_{item['session']}_{item['token']}.edf"
        duration = round(item["minutes"] * 60)
        rng = np.random.default_rng(item["signal_seed"])
        events: list = []
        eeg, ekg = synthesize_eeg(f, duration, sfreq, rng, events)
        reference = "REF" if item["montage"] == "01_tcp_ar" else "LE"
        write_recording(fname, eeg, ekg, sfreq, reference, item["subject"], item["sex"], item["birthdate"],
                        item["age"], item["start"], events if version >= 2 else None)
        if version >= 2:
            _write_tuh_labels(fname.with_suffix(".csv"), fname.stem, duration, events)
            truth += [{"path": str(fname.relative_to(root)), "onset_s": round(t, 3), "duration_s": round(d, 3),
                       "kind": k} for t, d, k in events]
        report_file = sess_dir / f"{item['subject']}_{item['session']}.txt"
        if not report_file.is_file() or report_file.read_text() != item["report"]:
            report_file.write_text(item["report"])
        reports[(item["subject"], item["session"])] = item["report"]
        rows.append(dict(
            path=str(fname.relative_to(root)), subject=item["subject"], session=item["session"],
            montage=item["montage"], token=item["token"], date=item["start"].date().isoformat(), age=item["age"],
            sex=item["sex"], duration_s=duration, normal=int(f.normal), abnormal=int(not f.normal),
            pdr_hz="" if f.pdr_hz is None else f.pdr_hz, diffuse_slowing=int(f.diffuse_slowing),
            focal_slowing=int(bool(f.focal_slowing)), focal_slowing_region=f.focal_slowing or "",
            spike_wave=int(f.spike_wave), focal_sharp=int(bool(f.focal_sharp)),
            focal_sharp_region=f.focal_sharp or "", sleep=int(f.sleep), eye_blinks=int(f.eye_blinks),
            muscle=int(f.muscle)))
    with labels_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with reports_path.open("w") as fh:
        for (subject, session), text in reports.items():
            fh.write(json.dumps({"subject": subject, "session": session, "report": text}) + "\n")
    if version >= 2:
        with (root / "events.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=("path", "onset_s", "duration_s", "kind"), lineterminator="\n")
            writer.writeheader()
            writer.writerows(truth)
    hours = sum(r["duration_s"] for r in rows) / 3600
    manifest.write_text(json.dumps({"params": params, "n_recordings": len(rows), "hours": hours}, indent=1))
    return DemoArchive(root, len(rows), hours, labels_path, reports_path,
                       [{k: str(v) for k, v in r.items()} for r in rows])
