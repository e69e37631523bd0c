"""The demo archive generator: layout, determinism, and findings that are really in the EEG."""

import csv
import hashlib
import json
import re

import mne
import numpy as np
import pytest
import scipy.signal as ss

from elmsearch.datasets.demo import ELECTRODES, Findings, generate_archive, synthesize_eeg
from elmsearch.text.report import parse_report, read_reports_jsonl

TUH_PATH = re.compile(
    r"^edf/([a-z]{3})/(\1[a-z]{5})/(s\d{3})_(\d{4}_\d{2}_\d{2})/(01_tcp_ar|02_tcp_le)/\2_\3_t\d{3}\.edf$"
)
SFREQ = 250.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return generate_archive(root, n_recordings=12, seed=3, min_minutes=0.5, max_minutes=1.0)


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "demo_manifest.json"}


def test_layout_reports_and_sidecar(archive):
    root = archive.root
    edfs = sorted(str(p.relative_to(root)) for p in root.rglob("*.edf"))
    assert len(edfs) == archive.n_recordings == 12
    assert all(TUH_PATH.match(p) for p in edfs), edfs
    with archive.labels_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in rows) == edfs
    side = read_reports_jsonl(archive.reports_path)
    for r in rows:
        session_dir = (root / r["path"]).parent.parent
        txt = session_dir / f"{r['subject']}_{r['session']}.txt"
        assert txt.read_text() == side[(r["subject"], r["session"])]
        headings = [s.heading for s in parse_report(txt.read_text()).sections]
        for h in ("CLINICAL HISTORY", "MEDICATIONS", "INTRODUCTION", "DESCRIPTION OF THE RECORD",
                  "IMPRESSION", "CLINICAL CORRELATION"):
            assert h in headings
    assert len({r["subject"] for r in rows}) < len(rows)  # several sessions per patient


def test_reports_state_the_labelled_findings(archive):
    side = read_reports_jsonl(archive.reports_path)
    for r in csv.DictReader(archive.labels_path.open()):
        report = parse_report(side[(r["subject"], r["session"])])
        desc = report.section("DESCRIPTION OF THE RECORD").text
        if r["pdr_hz"]:
            assert f"{float(r['pdr_hz']):g} Hz" in desc
        assert ("spike" in desc.lower()) == (r["spike_wave"] == "1")
        assert report.impression.lower().startswith("abnormal") == (r["abnormal"] == "1")
        if r["focal_slowing_region"]:
            assert r["focal_slowing_region"] in desc


def test_edf_headers_are_tuh_style(archive):
    r = next(csv.DictReader(archive.labels_path.open()))
    fname = archive.root / r["path"]
    raw = mne.io.read_raw_edf(fname, preload=False, verbose="error")
    assert raw.info["sfreq"] == SFREQ
    ref = "REF" if r["montage"] == "01_tcp_ar" else "LE"
    assert raw.ch_names[:3] == [f"EEG FP1-{ref}", f"EEG FP2-{ref}", f"EEG F7-{ref}"]
    patient = fname.read_bytes()[8:88].decode("ascii")
    assert re.match(r"^\S{8} [MF] \d\d-[A-Z]{3}-\d{4} \S{8} Age:\d+", patient), patient
    assert patient.startswith(r["subject"]) and f"Age:{r['age']}" in patient
    assert abs(raw.n_times / SFREQ - float(r["duration_s"])) < 1


def test_deterministic_and_idempotent(archive, tmp_path):
    again = generate_archive(tmp_path / "a", n_recordings=12, seed=3, min_minutes=0.5, max_minutes=1.0)
    assert _digest(again.root) == _digest(archive.root)
    other = generate_archive(tmp_path / "b", n_recordings=12, seed=4, min_minutes=0.5, max_minutes=1.0)
    assert _digest(other.root) != _digest(archive.root)
    mtimes = {p: p.stat().st_mtime_ns for p in again.root.rglob("*.edf")}
    generate_archive(tmp_path / "a", n_recordings=12, seed=3, min_minutes=0.5, max_minutes=1.0)
    assert {p: p.stat().st_mtime_ns for p in again.root.rglob("*.edf")} == mtimes
    manifest = json.loads((again.root / "demo_manifest.json").read_text())
    assert manifest["n_recordings"] == 12


# ---- the findings are in the signal ------------------------------------------------------------
def _eeg(findings, seed=0, duration=60.0):
    return synthesize_eeg(findings, duration, SFREQ, np.random.default_rng(seed))[0]


def _psd(x, idx):
    f, p = ss.welch(x[idx], SFREQ, nperseg=int(4 * SFREQ))
    return f, p.mean(0) if p.ndim > 1 else p


def _ch(*names):
    return [ELECTRODES.index(n) for n in names]


@pytest.mark.parametrize("pdr", [6.0, 8.5, 10.5])
def test_pdr_peak_at_labelled_frequency(pdr):
    x = _eeg(Findings(pdr_hz=pdr, eye_blinks=False))
    f, p = _psd(x, _ch("O1", "O2"))
    band = (f >= 5) & (f <= 13)
    assert abs(f[band][np.argmax(p[band])] - pdr) <= 0.5
    _, pf = _psd(x, _ch("F3", "F4"))
    at = np.argmin(np.abs(f - pdr))
    assert p[at] > 3 * pf[at]  # occipital maximum


def test_focal_slowing_is_lateralised():
    x = _eeg(Findings(focal_slowing="left temporal", eye_blinks=False))
    f, left = _psd(x, _ch("T3", "T5", "F7"))
    _, right = _psd(x, _ch("T4", "T6", "F8"))
    delta = (f >= 1) & (f <= 3)
    assert left[delta].sum() > 1.5 * right[delta].sum()


def _max_window_band_power(x, lo, hi, seconds=2.0):
    n = int(seconds * SFREQ)
    windows = x[: x.shape[0], : x.shape[1] // n * n].reshape(x.shape[0], -1, n)
    f, p = ss.periodogram(windows, SFREQ, axis=-1)
    band = (f >= lo) & (f <= hi)
    return p[..., band].sum(-1).mean(0).max()


def test_spike_wave_bursts_are_frontal_3hz():
    sw = _eeg(Findings(spike_wave=True, eye_blinks=False), duration=120)
    normal = _eeg(Findings(eye_blinks=False), duration=120)
    front, back = _ch("Fz", "F3", "F4"), _ch("O1", "O2")
    burst = _max_window_band_power(sw[front], 2.5, 3.5)
    assert burst > 10 * _max_window_band_power(normal[front], 2.5, 3.5)
    assert burst > _max_window_band_power(sw[back], 2.5, 3.5)  # frontally maximal
    # spikes: steep deflections of > 100 uV at Fz that the normal record never has
    fz = _ch("Fz")[0]
    assert np.abs(np.diff(sw[fz])).max() > 3 * np.abs(np.diff(normal[fz])).max()


def test_sleep_spindles_raise_central_sigma():
    sleep = _eeg(Findings(sleep=True, eye_blinks=False), duration=120)
    awake = _eeg(Findings(eye_blinks=False), duration=120)
    f, ps = _psd(sleep, _ch("C3", "Cz", "C4"))
    _, pa = _psd(awake, _ch("C3", "Cz", "C4"))
    sigma = (f >= 12) & (f <= 14)
    assert ps[sigma].sum() > 1.5 * pa[sigma].sum()


def test_eye_blinks_are_frontopolar():
    x = _eeg(Findings(pdr_hz=None, eye_blinks=True))
    quiet = _eeg(Findings(pdr_hz=None, eye_blinks=False))
    fp, o = _ch("Fp1", "Fp2"), _ch("O1", "O2")
    assert np.ptp(x[fp]) > 2 * np.ptp(quiet[fp])
    assert np.ptp(x[o]) < 1.5 * np.ptp(quiet[o])


def test_muscle_is_high_frequency_and_temporal():
    x = _eeg(Findings(muscle=True, eye_blinks=False), duration=120)
    quiet = _eeg(Findings(eye_blinks=False), duration=120)
    f, pm = _psd(x, _ch("T3", "T4"))
    _, pq = _psd(quiet, _ch("T3", "T4"))
    hi = (f >= 25) & (f <= 60)
    assert pm[hi].sum() > 3 * pq[hi].sum()


def test_version_2_marks_its_events_and_version_1_keeps_the_signals(archive, tmp_path):
    """Version 2: an EDF+ annotation signal, a TUH .csv and events.csv of what the generator put in the EEG."""
    from elmsearch.io.events import read_events
    from elmsearch.io.header import read_header

    old = generate_archive(tmp_path / "v1", n_recordings=12, seed=3, min_minutes=0.5, max_minutes=1.0, version=1)
    with pytest.raises(ValueError, match="version"):
        generate_archive(tmp_path / "v9", n_recordings=2, seed=3, version=9)
    assert not (old.root / "events.csv").exists() and not list(old.root.rglob("*.csv_bi"))
    with (archive.root / "events.csv").open() as fh:
        truth = list(csv.DictReader(fh))
    kinds = {r["kind"] for r in truth}
    assert kinds >= {"sharp_wave", "spindle", "eye_blink"}
    assert ("spike_wave" in kinds) == any(int(r["spike_wave"]) for r in archive.rows)
    for row in archive.rows:
        new_f, old_f = archive.root / row["path"], old.root / row["path"]
        assert not any("annotations" in lab.lower() for lab in read_header(old_f).labels)
        a = mne.io.read_raw_edf(new_f, verbose="error").get_data()
        b = mne.io.read_raw_edf(old_f, verbose="error").get_data()
        np.testing.assert_array_equal(a, b)  # the same EEG under either version
        got = read_events(new_f)
        assert got.warnings == []
        mine = [r for r in truth if r["path"] == row["path"]]
        edf_events = [e for e in got.events if e.source == "edf+"]
        assert len(edf_events) == len(mine)
        np.testing.assert_allclose(sorted(e.onset for e in edf_events), sorted(float(r["onset_s"]) for r in mine),
                                   atol=2e-3)
        tuh = [e for e in got.events if e.source == "tuh-csv"]
        assert len(tuh) <= len(mine) and {e.label for e in tuh} <= {"spsw", "eybl", "musc"}
        if int(row["spike_wave"]) or int(row["focal_sharp"]):
            assert any(e.label == "spsw" and e.meaning == "spike and/or sharp wave" for e in tuh)
        if int(row["sleep"]):
            assert any(e.label == "sleep spindle" for e in edf_events)
        else:
            assert not any(e.label == "sleep spindle" for e in edf_events)
