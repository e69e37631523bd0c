"""The memory-mapped EDF/BDF reader (elmsearch/io/edf_mmap.py) against MNE, bit for bit."""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import SHARED_DATA
from fuzz_corpus import build_corpus, set_fixed, synthetic_edf

from elmsearch.errors import RecordingError
from elmsearch.io import source
from elmsearch.io.edf_mmap import EdfSignalReader, NotEligible, open_edf_reader
from elmsearch.io.header import read_edf_header
from elmsearch.io.meta import inspect_edf
from elmsearch.io.source import electrode_picks, open_raw
from elmsearch.io.windowed import WindowedRecording
from elmsearch.signal.channels import TCP_ELECTRODES

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                  reason=f"shared data absent ({SHARED_DATA}): no real EDF files")


def mne_read(fname, **kw) -> mne.io.BaseRaw:
    reader = mne.io.read_raw_bdf if str(fname).lower().endswith(".bdf") else mne.io.read_raw_edf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reader(fname, preload=True, verbose="error", **kw)


def mne_rows(header) -> list[int]:
    """Header signal index -> row in MNE's ``ch_names`` (annotation signals dropped)."""
    signals = [i for i, lab in enumerate(header.labels) if lab not in ("EDF Annotations", "BDF Annotations")]
    return signals


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float64 and a.shape == b.shape and np.array_equal(a, b)


@needs_shared
@pytest.mark.parametrize("fname", sorted((SHARED_DATA / "eegmat").glob("*.edf")), ids=lambda p: p.name)
def test_eegmat_matches_mne(fname):
    header, _, electrodes = inspect_edf(fname)
    signals = [electrodes[e] for e in TCP_ELECTRODES]
    fast = open_edf_reader(fname, header, signals)
    assert fast is not None, "an EEGMAT file (EDF+C, one rate for the EEG) must take the fast path"
    raw = mne_read(fname)
    picks = electrode_picks(raw, header, list(electrodes.values()))
    assert fast.sfreq == raw.info["sfreq"] and fast.n_times == raw.n_times
    assert same(fast.read(), raw.get_data(picks=picks))
    for start, stop in ((0, 1), (499, 501), (1234, 7777), (raw.n_times - 3, raw.n_times)):
        assert same(fast.read(start, stop), raw.get_data(picks=picks, start=start, stop=stop))


def test_eegmat_count():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data absent ({SHARED_DATA})")
    assert len(list((SHARED_DATA / "eegmat").glob("*.edf"))) == 72


@needs_shared
@pytest.mark.parametrize("name", ["duplicate_channel_labels.edf", "test.bdf", "test.edf",
                                  "test_edf_stim_channel.edf", "test_stim_channel.edf",
                                  "test_uneven_samp.edf"])
def test_mne_edf_cases(name):
    """Every signal at the file's fastest rate read as MNE does; slower ones left to MNE."""
    fname = SHARED_DATA / "mne_edf_cases" / name
    header = read_edf_header(fname)
    raw = mne_read(fname)
    signals = mne_rows(header)
    rate = max(header.samples_per_record[i] for i in signals)
    fast_ones = [i for i in signals if header.samples_per_record[i] == rate]
    stim = [i for i in signals if header.labels[i].lower() in ("status", "trigger")]
    picks = [i for i in fast_ones if i not in stim]
    fast = open_edf_reader(fname, header, picks)
    assert fast is not None, f"{name}: {picks}"
    rows = [signals.index(i) for i in picks]
    assert fast.sfreq == raw.info["sfreq"]
    assert same(fast.read(), raw.get_data(picks=rows))
    assert same(fast.read(5, 300), raw.get_data(picks=rows, start=5, stop=300))
    slow = [i for i in signals if header.samples_per_record[i] != rate]
    if slow:  # MNE resamples these: the fast reader declines
        assert open_edf_reader(fname, header, slow[:1]) is None
    for i in stim:  # MNE treats them as stim channels
        assert open_edf_reader(fname, header, [i]) is None


@pytest.mark.parametrize("bdf", [False, True], ids=["edf", "bdf"])
@pytest.mark.parametrize("annotations", [False, True], ids=["plain", "annotations"])
@pytest.mark.parametrize("record_duration", [None, 0.5, 2.0])
def test_synthetic_matches_mne(tmp_path, bdf, annotations, record_duration):
    labels = [f"EEG {e}-REF" for e in TCP_ELECTRODES] + ["EEG EKG1-REF"]
    rng = np.random.default_rng(3)
    n = int(12 * 256)
    uv = rng.uniform(-2900, 2900, size=(len(labels), n))  # the whole range, both signs
    uv[0, :10] = [-3000, 3000, 0, -1e-3, 1e-3, -2999.99, 2999.99, -1500, 1500, 0.5]
    raw_bytes = synthetic_edf(labels, sfreq=256, duration=12, signals=uv, bdf=bdf,
                              annotations=annotations, record_duration=record_duration)
    fname = tmp_path / ("x.bdf" if bdf else "x.edf")
    fname.write_bytes(raw_bytes)
    header, _, electrodes = inspect_edf(fname)
    picks = [electrodes[e] for e in TCP_ELECTRODES]
    fast = EdfSignalReader(fname, header, picks)
    raw = mne_read(fname)
    rows = electrode_picks(raw, header, list(electrodes.values()))
    assert same(fast.read(), raw.get_data(picks=rows))
    spr = header.samples_per_record[picks[0]]
    for start, stop in ((0, 0), (0, spr), (spr - 1, spr + 1), (3, 3 * spr + 7), (n - spr - 2, n)):
        assert same(fast.read(start, stop), raw.get_data(picks=rows, start=start, stop=stop))
    if bdf:  # 24-bit: negative digital values really occur
        assert (fast.read() < 0).any()


def test_declines_what_mne_alone_handles(tmp_path):
    labels = [f"EEG {e}-REF" for e in TCP_ELECTRODES]
    good = synthetic_edf(labels, sfreq=256, duration=10, annotations=True)
    fname = tmp_path / "ok.edf"
    fname.write_bytes(good)
    cases = {
        "discontinuous.edf": set_fixed(good, "reserved", "EDF+D"),
        "wrong_suffix.bdf": good,  # MNE's read_raw_edf refuses any suffix but .edf
    }
    for name, data in cases.items():
        fname = tmp_path / name
        fname.write_bytes(data)
        header = read_edf_header(fname)
        with pytest.raises(NotEligible):
            EdfSignalReader(fname, header, [0, 1])
    fname = tmp_path / "ok.edf"
    header = read_edf_header(fname)
    with pytest.raises(NotEligible, match="picks"):
        EdfSignalReader(fname, header, [len(labels)])  # the annotations channel


def test_extra_records_cut_to_the_header_in_both_readers(tmp_path):
    """Data records past the header's count are read by neither reader: both stop at the header's records."""
    labels = [f"EEG {e}-REF" for e in TCP_ELECTRODES]
    good = synthetic_edf(labels, sfreq=256, duration=10, annotations=True)
    fname = tmp_path / "extra.edf"
    fname.write_bytes(good + good[256 * (len(labels) + 2):])  # every data record again
    header = read_edf_header(fname)
    assert header.extra_records == header.n_records
    fast = EdfSignalReader(fname, header, [0, 1])
    raw = open_raw(fname, header)
    assert fast.n_times == raw.n_times == round(header.duration * fast.sfreq)
    rows = [raw.ch_names.index(header.labels[i]) for i in (0, 1)]
    assert same(fast.read(), raw.get_data(picks=rows))


def test_wired_into_the_windowed_recording(tmp_path, monkeypatch):
    labels = [f"EEG {e}-REF" for e in TCP_ELECTRODES]
    fname = tmp_path / "x.edf"
    fname.write_bytes(synthetic_edf(labels, sfreq=256, duration=20, annotations=True))
    header, _, electrodes = inspect_edf(fname)
    rec = WindowedRecording(fname)
    reference, sfreq = rec.read_span(0, rec.n_times), rec.sfreq
    raw = mne_read(fname)
    assert same(reference, raw.get_data(picks=electrode_picks(raw, header, list(electrodes.values()))))
    assert sfreq == raw.info["sfreq"]

    def no_mne(*args, **kwargs):
        raise AssertionError("MNE opened a file the fast reader handles")

    monkeypatch.setattr(source, "open_raw", no_mne)
    reader = WindowedRecording(fname)
    assert isinstance(reader.source, EdfSignalReader)
    data = reader.read_span(0, reader.n_times)
    assert same(data, reference)
    assert reader.sfreq == sfreq and reader.n_times == reference.shape[1]
    assert same(reader.read_span(100, 3000), reference[:, 100:3000])
    monkeypatch.undo()

    # EDF+D goes to MNE, with the same values as before
    fname_d = tmp_path / "d.edf"
    fname_d.write_bytes(set_fixed(fname.read_bytes(), "reserved", "EDF+D"))
    rec_d = WindowedRecording(fname_d)
    assert isinstance(rec_d.source, source.MneSource) and isinstance(rec_d.source, source.SignalSource)
    assert same(rec_d.read_span(0, rec_d.n_times), reference)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("edfread-fuzz")
    return build_corpus(root, seed=0, shared=SHARED_DATA if SHARED_DATA.is_dir() else None)


def _mne_values(fname, header, picks_of):
    try:
        raw = open_raw(fname, header)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return raw.get_data(picks=picks_of(raw)), float(raw.info["sfreq"])
    except RecordingError:
        return None, None


def _fast_values(fname, header, signals):
    """Fast reader values; None when it leaves the file to MNE."""
    reader = open_edf_reader(fname, header, signals)
    return (None, None) if reader is None else (reader.read(), reader.sfreq)


def test_fuzz_corpus_same_values_or_mne(corpus):
    """Montage electrodes of every corpus file that passes ``inspect_edf``, and every signal at
    the top rate of every file with a readable header: MNE's values exactly, or left to MNE."""
    tally = {"equal": 0, "left to MNE": 0, "no header": 0}
    problems = []
    for case in corpus:
        fname = Path(case.path)
        try:
            header = read_edf_header(fname)
        except RecordingError:
            tally["no header"] += 1
            continue
        try:
            _, _, electrodes = inspect_edf(fname)
            montage = [electrodes[e] for e in TCP_ELECTRODES]
        except RecordingError:
            montage = None
        signals = mne_rows(header)
        rate = max(header.samples_per_record[i] for i in signals)
        top = [i for i in signals if header.samples_per_record[i] == rate
               and header.labels[i].lower() not in ("status", "trigger")]
        sets = [("top-rate signals", top, lambda raw, top=top, signals=signals: [signals.index(i) for i in top])]
        if montage:
            sets.append(("montage", montage,
                         lambda raw, h=header, el=electrodes: electrode_picks(raw, h, list(el.values()))))
        for what, picks, picks_of in sets:
            if not picks:
                continue
            try:
                fast, fast_sfreq = _fast_values(fname, header, picks)
            except RecordingError as err:
                fast, fast_sfreq = err, None
            if fast is None:
                tally["left to MNE"] += 1
                continue
            ref, ref_sfreq = _mne_values(fname, header, picks_of)
            if isinstance(fast, Exception) or ref is None:
                mne_says = "refuses" if ref is None else "reads"
                problems.append(f"{case.kind} ({what}): fast {fast!s:.80} / MNE {mne_says}")
            elif not (np.array_equal(fast, ref, equal_nan=True) and fast_sfreq == ref_sfreq):
                problems.append(f"{case.kind} ({what}): values or rate differ from MNE")
            else:
                tally["equal"] += 1
    assert not problems, "\n".join(problems)
    assert tally["equal"] >= (150 if SHARED_DATA.is_dir() else 60), tally
