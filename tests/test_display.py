"""The viewer's signal: raw spans in clinical montages, display filters, the signal API (binary and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from elmsearch.io.display import MONTAGES, DisplayError, derivations, filter_display, read_display

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS_1020 = ["EEG FP1-REF", "EEG FP2-REF", "EEG F7-REF", "EEG F3-REF", "EEG FZ-REF", "EEG F4-REF", "EEG F8-REF",
               "EEG T3-REF", "EEG C3-REF", "EEG CZ-REF", "EEG C4-REF", "EEG T4-REF", "EEG T5-REF", "EEG P3-REF",
               "EEG PZ-REF", "EEG P4-REF", "EEG T6-REF", "EEG O1-REF", "EEG O2-REF", "EEG A1-REF", "EEG A2-REF",
               "EEG EKG1-REF"]


@pytest.fixture
def sine_edf(write_edf):
    """30 s at 250 Hz: Fp1 carries a 100 µV peak-to-peak 10 Hz sine plus 40 µV of 50 Hz; the rest is flat."""
    t = np.arange(30 * 250) / 250
    x = np.zeros((len(LABELS_1020), len(t)))
    x[0] = 50 * np.sin(2 * np.pi * 10 * t) + 20 * np.sin(2 * np.pi * 50 * t)
    x[-1] = 300 * (np.sin(2 * np.pi * 1.2 * t) > 0.99)  # an ECG-like trace
    return write_edf("sine.edf", labels=LABELS_1020, signals=x)


def test_montages_from_the_table():
    every = {"Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz", "C4", "T4", "T5", "P3", "Pz", "P4", "T6",
             "O1", "O2", "A1", "A2"}
    rows, missing = derivations("bipolar", every, ["EKG"])
    names = [n for n, _ in rows]
    assert names[:5] == ["Fp1-F7", "F7-T3", "T3-T5", "T5-O1", ""] and names[-1] == "EKG" and not missing
    assert names.count("") == 5  # chains apart
    rows, missing = derivations("bipolar", every - {"F7", "F8", "Fp1", "Fp2"}, [])
    assert "Fp1-F7" in missing and "F3-C3" in [n for n, _ in rows]  # what can be drawn still is
    assert [n for n, _ in derivations("ears", every, [])[0]][:2] == ["Fp1-ears", "Fp2-ears"]
    with pytest.raises(DisplayError, match="no A1 and A2"):
        derivations("ears", every - {"A1"}, [])
    with pytest.raises(DisplayError, match="montage must be one of"):
        derivations("banana", every, [])
    assert set(MONTAGES) == {"bipolar", "transverse", "average", "cz", "ears", "recorded"}


def test_raw_values_filters_and_rate(sine_edf):
    off = read_display(sine_edf, 5, 15, "cz", lff=None, hff=None, notch=None, rate=None)
    fp1 = off.data[off.ch_names.index("Fp1-Cz")]
    assert off.sfreq == 250 and off.data.shape[1] == 2500 and off.start_s == 5.0
    assert fp1.max() - fp1.min() == pytest.approx(140, abs=4)  # 100 µV p-p sine + 40 µV p-p at 50 Hz, in µV
    notched = read_display(sine_edf, 5, 15, "cz", lff=None, hff=None, notch=50, rate=None)
    fp1 = notched.data[notched.ch_names.index("Fp1-Cz")]
    assert fp1.max() - fp1.min() == pytest.approx(100, rel=0.05)  # the 50 Hz component vanishes
    assert notched.filters == {"lff": None, "hff": None, "notch": 50}
    low = read_display(sine_edf, 5, 15, "cz", lff=None, hff=15, notch=None, rate=None)
    spec = np.abs(np.fft.rfft(low.data[low.ch_names.index("Fp1-Cz")]))
    freqs = np.fft.rfftfreq(2500, 1 / 250)
    assert spec[freqs == 50][0] < 0.01 * spec[freqs == 10][0]  # HFF 15 Hz: 50 Hz gone, 10 Hz kept
    high = read_display(sine_edf, 5, 15, "cz", lff=20, hff=None, notch=None, rate=None)
    spec = np.abs(np.fft.rfft(high.data[high.ch_names.index("Fp1-Cz")]))
    assert spec[freqs == 10][0] < 0.2 * spec[freqs == 50][0]  # LFF 20 Hz: 10 Hz attenuated
    shown = read_display(sine_edf, 5, 15)  # defaults: bipolar, LFF 1, HFF 70, display rate <= 256 Hz
    assert shown.sfreq == 250 and shown.ch_names[0] == "Fp1-F7" and shown.ch_names[-1] == "EEG EKG1-REF"
    # a span past the end stops at the end: the timebase is kept, never stretched
    tail = read_display(sine_edf, 25, 40)
    assert tail.data.shape[1] == 5 * 250 and tail.duration_s == 30
    with pytest.raises(DisplayError, match="after the end"):
        read_display(sine_edf, 31, 40)
    with pytest.raises(DisplayError, match="must be above"):
        read_display(sine_edf, 0, 10, lff=30, hff=15)


def test_filters_are_zero_phase():
    t = np.arange(2000) / 200
    x = np.sin(2 * np.pi * 5 * t)[None]
    y, applied = filter_display(x, 200.0, 1.0, 30.0, 50.0)
    assert applied == {"lff": 1.0, "hff": 30.0, "notch": 50.0}
    lag = np.argmax(np.correlate(y[0, 500:1500], x[0, 500:1500], "full")) - 999
    assert lag == 0


@pytest.mark.skipif(not (SHARED / "eegmat").is_dir(), reason="../shared/data/eegmat is absent")
def test_real_files_in_every_montage_they_support():
    f = sorted((SHARED / "eegmat").glob("*.edf"))[0]
    d = read_display(f, 10, 20)
    assert d.native_sfreq == 500 and d.sfreq == 250 and d.data.shape == (len(d.ch_names), 2500)
    assert 5 < np.median(np.ptp(d.data[[i for i, n in enumerate(d.ch_names) if n]], axis=1)) < 500  # µV scale
    for montage in ("transverse", "average", "cz", "recorded"):
        assert read_display(f, 0, 5, montage).data.shape[1] == 1250
    for f in sorted((SHARED / "mne_edf_cases").iterdir()):  # every odd file can be looked at as recorded
        d = read_display(f, 0, 2, "recorded")
        assert d.data.shape[0] >= 1 and np.isfinite(d.data).all()


def test_signal_api_binary_json_and_refused_files(write_edf, sine_edf, demo_model_dir, tmp_path):
    from conftest import synthetic_uv
    from fastapi.testclient import TestClient

    from cli.web.app import create_app
    from indexer.pipeline import index_archive
    from indexer.service import SearchService

    sine_edf.unlink()  # mostly flat: refused by the indexer's checks; an indexable one with the same Fp1
    x = synthetic_uv(len(LABELS_1020), 250, 30, seed=3)
    t = np.arange(30 * 250) / 250
    x[0] = 50 * np.sin(2 * np.pi * 10 * t) + 20 * np.sin(2 * np.pi * 50 * t)
    sine_edf = write_edf("sine.edf", labels=LABELS_1020, signals=x)
    root = sine_edf.parent
    write_edf("no_frontal.edf", labels=[x for x in LABELS_1020 if "FP" not in x and "F7" not in x])  # refused
    db = tmp_path / "idx"
    index_archive(root, db, demo_model_dir)
    svc = SearchService.open(db)
    ids = {Path(svc.index.recording_file(i)[0]).name: i for i in (1, 2)}
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        url = f"/api/recordings/{ids['sine.edf']}/signal"
        r = client.get(url, params={"start": 5, "end": 15, "montage": "recorded", "lff": "off", "hff": "off",
                                    "rate": "native"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        n = int.from_bytes(r.content[:4], "little")
        head = json.loads(r.content[4:4 + n])
        data = np.frombuffer(r.content[4 + n:], "<f4").reshape(head["shape"])
        assert head["units"] == "uV" and head["sfreq"] == 250 and head["filters"]["lff"] is None
        assert head["status"] == "indexed" and head["error"] is None
        j = client.get(url, params={"start": 5, "end": 15, "montage": "recorded", "lff": "off", "hff": "off",
                                    "rate": "native", "format": "json"}).json()
        np.testing.assert_allclose(np.array(j["data"]), data, atol=1e-3)
        fp1 = data[head["ch_names"].index("EEG FP1-REF")]
        assert np.ptp(fp1) == pytest.approx(140, abs=4)  # the file's own µV, unfiltered
        refused = client.get(f"/api/recordings/{ids['no_frontal.edf']}/signal", params={"format": "json"}).json()
        assert refused["status"] == "failed" and "Fp1" in refused["error"]  # why it is not in the index
        assert "F3-C3" in refused["ch_names"] and "Fp1-F7" in refused["missing"]
        assert client.get(url, params={"lff": "abc"}).status_code == 400
        assert client.get(url, params={"start": 100}).status_code == 400
        assert client.get(url, params={"montage": "banana"}).status_code == 422
        assert client.get("/api/recordings/99/signal").status_code == 404
