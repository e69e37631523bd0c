"""A seeded corpus of hostile EEG files, for the fuzz tests (tests/test_fuzz.py).

``build_corpus(folder)`` writes a few hundred small files into ``folder`` and returns one
``Case(path, kind, expect)`` per file:

- ``expect == "ok"``: a clean recording that must be indexed;
- ``expect == "refuse"``: a broken file that must be refused with a one-line reason;
- ``expect == "either"``: indexed or refused, both acceptable, but never a crash and
  never a non-finite vector.

``kind`` is ``"group/variant"`` (e.g. ``"n_records/-1"``); ``group_of(kind)`` gives the group.

Bases: a real EEGMAT EDF (19 10-20 electrodes + A2-A1 + ECG at 500 Hz, EDF+C with an
annotations channel, latin-1 header) cut to 20 data records, synthetic TUH-style EDFs
written with edfio (with and without an annotations channel) and a synthetic BDF. Every
mutation is a pure function of bytes; randomness comes from ``numpy.random.default_rng``
seeded per case, so the same seed always writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from conftest import PHYSICAL_RANGE_UV, SHARED_DATA, TUH_LABELS, synthetic_uv
from edfio import Bdf, BdfSignal, Edf, EdfAnnotation, EdfSignal, Recording

EXPECTS = ("ok", "refuse", "either", "skip")

# ---- EDF header layout ------------------------------------------------------------------
FIXED: dict[str, tuple[int, int]] = {
    "version": (0, 8), "patient": (8, 80), "recording": (88, 80), "startdate": (168, 8),
    "starttime": (176, 8), "header_bytes": (184, 8), "reserved": (192, 44),
    "n_records": (236, 8), "record_duration": (244, 8), "n_signals": (252, 4),
}  # fmt: skip
SIGNAL_FIELDS: tuple[tuple[str, int], ...] = (
    ("label", 16), ("transducer", 80), ("dimension", 8), ("physical_min", 8),
    ("physical_max", 8), ("digital_min", 8), ("digital_max", 8), ("prefiltering", 80),
    ("samples_per_record", 8), ("reserved", 32),
)  # fmt: skip

# EEGMMIDB (PhysioNet) 64-channel labels: dots pad the names to four characters.
PHYSIONET_64: tuple[str, ...] = (
    "Fc5.", "Fc3.", "Fc1.", "Fcz.", "Fc2.", "Fc4.", "Fc6.", "C5..", "C3..", "C1..", "Cz..",
    "C2..", "C4..", "C6..", "Cp5.", "Cp3.", "Cp1.", "Cpz.", "Cp2.", "Cp4.", "Cp6.", "Fp1.",
    "Fpz.", "Fp2.", "Af7.", "Af3.", "Afz.", "Af4.", "Af8.", "F7..", "F5..", "F3..", "F1..",
    "Fz..", "F2..", "F4..", "F6..", "F8..", "Ft7.", "Ft8.", "T7..", "T8..", "T9..", "T10.",
    "Tp7.", "Tp8.", "P7..", "P5..", "P3..", "P1..", "Pz..", "P2..", "P4..", "P6..", "P8..",
    "Po7.", "Po3.", "Poz.", "Po4.", "Po8.", "O1..", "Oz..", "O2..", "Iz..",
)  # fmt: skip
ELECTRODES_1020: tuple[str, ...] = tuple(label.split()[1].split("-")[0] for label in TUH_LABELS[:-1])


class Case(NamedTuple):
    """One corpus file: where it is, what was done to it, what the indexer must do with it."""

    path: Path
    kind: str
    expect: str


def group_of(kind: str) -> str:
    """The mutation group of a case kind (``"n_records/-1"`` -> ``"n_records"``)."""
    return kind.split("/", 1)[0]


# ---- header access (pure: bytes in, bytes out) --------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things are in one EDF/BDF file (read from its own, intact header)."""

    n_signals: int
    header_bytes: int
    samples_per_record: tuple[int, ...]
    bytes_per_sample: int
    n_records: int

    @property
    def record_bytes(self) -> int:
        """Bytes of one data record."""
        return sum(self.samples_per_record) * self.bytes_per_sample

    def signal_span(self, field: str, index: int) -> tuple[int, int]:
        """``(offset, width)`` of a per-signal header field."""
        offset = 256
        for name, width in SIGNAL_FIELDS:
            if name == field:
                return offset + index * width, width
            offset += width * self.n_signals
        raise KeyError(field)

    def sample_span(self, record: int, index: int) -> tuple[int, int]:
        """``(offset, n_bytes)`` of signal ``index`` inside data record ``record``."""
        before = sum(self.samples_per_record[:index]) * self.bytes_per_sample
        start = self.header_bytes + record * self.record_bytes + before
        return start, self.samples_per_record[index] * self.bytes_per_sample


def layout(raw: bytes) -> Layout:
    """Read the layout of an intact EDF/BDF header."""
    n = int(raw[252:256])
    lay = Layout(n, int(raw[184:192]), (), 3 if raw[:1] == b"\xff" else 2, int(raw[236:244]))
    off, width = lay.signal_span("samples_per_record", 0)
    spr = tuple(int(raw[off + i * width : off + (i + 1) * width]) for i in range(n))
    return dataclasses.replace(lay, samples_per_record=spr)


def _put(raw: bytes, offset: int, width: int, value: str | bytes) -> bytes:
    data = value.encode("latin-1") if isinstance(value, str) else value
    data = data[:width].ljust(width, b" ")
    return raw[:offset] + data + raw[offset + width :]


def set_fixed(raw: bytes, field: str, value: str | bytes) -> bytes:
    """Overwrite one field of the 256-byte fixed header (space padded, cut to width)."""
    offset, width = FIXED[field]
    return _put(raw, offset, width, value)


def get_fixed(raw: bytes, field: str) -> str:
    """One field of the fixed header, stripped."""
    offset, width = FIXED[field]
    return raw[offset : offset + width].decode("latin-1").strip()


def set_signal(raw: bytes, field: str, index: int, value: str | bytes) -> bytes:
    """Overwrite one per-signal header field of signal ``index``."""
    offset, width = layout(raw).signal_span(field, index)
    return _put(raw, offset, width, value)


def get_signals(raw: bytes, field: str) -> list[str]:
    """One per-signal field for every signal, stripped."""
    lay = layout(raw)
    out = []
    for i in range(lay.n_signals):
        offset, width = lay.signal_span(field, i)
        out.append(raw[offset : offset + width].decode("latin-1").strip())
    return out


def index_of(raw: bytes, label: str) -> int:
    """Index of the signal with this label."""
    return get_signals(raw, "label").index(label)


def fill_samples(raw: bytes, make: Callable[[int], bytes], signals: Sequence[int] | None = None) -> bytes:
    """Replace the samples of ``signals`` (all by default) in every record by ``make(n_bytes)``."""
    lay = layout(raw)
    out = bytearray(raw)
    signals = range(lay.n_signals) if signals is None else signals
    for record in range(lay.n_records):
        for index in signals:
            start, size = lay.sample_span(record, index)
            out[start : start + size] = make(size)
    return bytes(out)


def annotation_index(raw: bytes) -> int | None:
    """Index of the EDF+ annotations signal, if any."""
    labels = get_signals(raw, "label")
    return next((i for i, lab in enumerate(labels) if lab.endswith("Annotations")), None)


def non_annotation_signals(raw: bytes) -> list[int]:
    """Indices of the ordinary signals."""
    ann = annotation_index(raw)
    return [i for i in range(layout(raw).n_signals) if i != ann]


# ---- base files -------------------------------------------------------------------------
def eegmat_edf(shared: Path = SHARED_DATA, name: str = "Subject00_1.edf", n_records: int = 20) -> bytes | None:
    """A real EEGMAT EDF cut to ``n_records`` one-second data records (None when absent)."""
    src = Path(shared) / "eegmat" / name
    if not src.is_file():
        return None
    with open(src, "rb") as fh:
        head = fh.read(256)
        lay_probe = int(head[184:192])
        head += fh.read(lay_probe - 256)
        lay = layout(head)
        data = fh.read(n_records * lay.record_bytes)
    assert len(data) == n_records * lay.record_bytes, f"{src} shorter than {n_records} records"
    return set_fixed(head, "n_records", str(n_records)) + data


def synthetic_edf(
    labels: Sequence[str] = TUH_LABELS,
    *,
    sfreq: float = 250,
    duration: float = 20,
    seed: int = 0,
    signals: np.ndarray | None = None,
    annotations: bool = False,
    bdf: bool = False,
    record_duration: float | None = None,
    patient: str = "aaaaaaab F 01-JAN-1961 aaaaaaab Age:53",
) -> bytes:
    """A synthetic EDF (or BDF) in memory: seeded noise + 10 Hz in uV, TUH-style patient field.

    ``signals`` (uV, shape (n_labels, n_times)) replaces the seeded ones; ``record_duration``
    (seconds) defaults to edfio's choice.
    """
    labels = list(labels)
    if signals is None:
        signals = synthetic_uv(len(labels), sfreq, duration, seed=seed)
    sig_cls, file_cls = (BdfSignal, Bdf) if bdf else (EdfSignal, Edf)
    sigs = [sig_cls(np.asarray(row, float), sfreq, label=label, physical_dimension="uV",
                    physical_range=PHYSICAL_RANGE_UV) for label, row in zip(labels, signals, strict=True)]
    notes = [EdfAnnotation(1.0, None, "eyes closed"), EdfAnnotation(8.5, 2.0, "photic 10 Hz")] if annotations else None
    f = file_cls(sigs, recording=Recording(startdate=dt.date(2015, 3, 4)), starttime=dt.time(10, 20, 30),
                 annotations=notes, data_record_duration=record_duration)
    buf = io.BytesIO()
    f.write(buf)
    return set_fixed(buf.getvalue(), "patient", patient)


def truncate(raw: bytes, n: int) -> bytes:
    """The first ``n`` bytes."""
    return raw[:n]


def flip_bytes(raw: bytes, rng: np.random.Generator, lo: int, hi: int, n: int) -> bytes:
    """Set ``n`` random bytes in ``[lo, hi)`` to random values."""
    out = bytearray(raw)
    for pos in rng.integers(lo, hi, size=n):
        out[int(pos)] = int(rng.integers(0, 256))
    return bytes(out)


def const(pattern: bytes) -> Callable[[int], bytes]:
    """A filler repeating ``pattern``."""
    return lambda n: (pattern * (n // len(pattern) + 1))[:n]


def random_bytes(rng: np.random.Generator) -> Callable[[int], bytes]:
    """A filler of random bytes."""
    return lambda n: rng.integers(0, 256, n, dtype=np.uint8).tobytes()


# ---- the corpus ---------------------------------------------------------------------------
class _Writer:
    def __init__(self, folder: Path):
        self.folder = folder
        self.cases: list[Case] = []

    def add(self, kind: str, base: str, raw: bytes, expect: str, suffix: str = ".edf") -> None:
        assert expect in EXPECTS, expect
        safe = "".join(c if c.isalnum() or c in "-_+." else "_" for c in kind.replace("/", "__"))
        path = self.folder / f"{len(self.cases):03d}_{safe}__{base}{suffix}"
        path.write_bytes(raw)
        self.cases.append(Case(path, kind, expect))


def build_corpus(folder: str | Path, seed: int = 0, shared: Path | None = SHARED_DATA) -> list[Case]:
    """Write the hostile corpus into ``folder`` (created) and return its cases.

    Parameters
    ----------
    folder : path-like
        Where the files go (flat; names start with a running number).
    seed : int
        Seed of every random mutation.
    shared : Path | None
        The shared data folder (EEGMAT, MNE's odd EDFs); None or absent: synthetic bases only.

    Returns
    -------
    list of Case
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder)

    tuh = synthetic_edf(seed=seed)
    tuh_ann = synthetic_edf(seed=seed + 1, annotations=True)
    bdf = synthetic_edf(sfreq=256, seed=seed + 2, bdf=True)
    eegmat = eegmat_edf(shared) if shared is not None else None
    # the bases most mutations run on: the real file first, then a synthetic TUH one
    bases: dict[str, bytes] = {"eegmat": eegmat, "tuh": tuh} if eegmat is not None else {"tuh": tuh}

    # ---- good files ---------------------------------------------------------------------
    if eegmat is not None:
        w.add("good/eegmat", "eegmat", eegmat, "ok")
        other = eegmat_edf(shared, "Subject01_2.edf", n_records=25)
        if other is not None:
            w.add("good/eegmat", "eegmat01_2", other, "ok")
    w.add("good/tuh_250hz", "tuh", tuh, "ok")
    w.add("good/tuh_le_256hz", "tuh", synthetic_edf([lab.replace("-REF", "-LE") for lab in TUH_LABELS],
                                                    sfreq=256, seed=seed + 3), "ok")
    w.add("good/tuh_annotations", "tuh_ann", tuh_ann, "ok")
    w.add("good/bdf_24bit", "bdf", bdf, "ok", suffix=".bdf")
    w.add("good/record_0.5s", "tuh", synthetic_edf(sfreq=200, duration=12, seed=seed + 4, record_duration=0.5), "ok")
    physionet = synthetic_uv(64, 160, 20, seed=seed + 5)
    w.add("labels/physionet_64_dots", "physionet", synthetic_edf(PHYSIONET_64, sfreq=160, signals=physionet), "ok")
    spellings = {
        "EEG_Fp1-Ref": [f"EEG {e}-Ref" for e in ELECTRODES_1020],
        "FP1-LE": [f"{e.upper()}-LE" for e in ELECTRODES_1020],
        "lowercase_fp1": [e.lower() for e in ELECTRODES_1020],
        "EEG_T7-REF_new_names": [f"EEG {({'T3': 'T7', 'T4': 'T8', 'T5': 'P7', 'T6': 'P8'}).get(e, e).upper()}-REF"
                                 for e in ELECTRODES_1020],
    }
    for name, labels in spellings.items():
        w.add(f"labels/{name}", "tuh", synthetic_edf(labels, seed=seed + 6), "ok")

    # ---- fixed header fields ------------------------------------------------------------
    for base, raw in bases.items():
        hb = get_fixed(raw, "header_bytes")
        nr = int(get_fixed(raw, "n_records"))
        ns = int(get_fixed(raw, "n_signals"))
        variants = [
            ("header_bytes/empty", "header_bytes", "", "refuse"),
            ("header_bytes/garbage", "header_bytes", "abcdefgh", "refuse"),
            ("header_bytes/negative", "header_bytes", "-" + hb, "refuse"),
            ("header_bytes/zero", "header_bytes", "0", "refuse"),
            ("header_bytes/non_ascii", "header_bytes", "é€".encode(), "refuse"),
            ("header_bytes/huge", "header_bytes", "99999999", "refuse"),
            ("header_bytes/plus_256", "header_bytes", str(int(hb) + 256), "refuse"),
            ("n_records/-1", "n_records", "-1", "either"),  # EDF: -1 while recording; size tells
            ("n_records/zero", "n_records", "0", "refuse"),
            ("n_records/negative", "n_records", "-5", "refuse"),
            ("n_records/huge", "n_records", "99999999", "refuse"),
            ("n_records/garbage", "n_records", "twenty", "refuse"),
            ("n_records/empty", "n_records", "", "refuse"),
            ("n_records/non_ascii", "n_records", b"\xb2\xb0", "refuse"),
            ("n_records/fewer_than_data", "n_records", str(nr // 2), "either"),
            ("n_records/float", "n_records", f"{nr}.0", "either"),
            ("record_duration/zero", "record_duration", "0", "refuse"),
            ("record_duration/negative", "record_duration", "-1", "refuse"),
            ("record_duration/nan", "record_duration", "nan", "refuse"),
            ("record_duration/inf", "record_duration", "inf", "refuse"),
            ("record_duration/garbage", "record_duration", "one sec", "refuse"),
            ("record_duration/empty", "record_duration", "", "refuse"),
            ("record_duration/tiny", "record_duration", "1e-9", "either"),
            ("record_duration/huge", "record_duration", "1e9", "refuse"),  # far below 100 Hz
            ("record_duration/comma", "record_duration", "1,0", "either"),
            ("n_signals/zero", "n_signals", "0", "refuse"),
            ("n_signals/negative", "n_signals", "-1", "refuse"),
            ("n_signals/huge", "n_signals", "9999", "refuse"),
            ("n_signals/garbage", "n_signals", "xx", "refuse"),
            ("n_signals/empty", "n_signals", "", "refuse"),
            ("n_signals/one_less", "n_signals", str(ns - 1), "refuse"),
            ("n_signals/one_more", "n_signals", str(ns + 1), "refuse"),
            ("version/not_zero", "version", "1", "refuse"),
            ("version/blank", "version", "", "refuse"),
            ("startdate/garbage", "startdate", "xx.yy.zz", "either"),
            ("startdate/impossible", "startdate", "31.02.99", "either"),
            ("starttime/non_ascii", "starttime", "ü".encode() * 4, "either"),
            ("patient/utf8", "patient", "Jürgen Ñandú 王 Age:53".encode(), "either"),
            ("patient/nul_and_control", "patient", b"\x00\x01\x02 X \x1b[31m Age:\x0053\x7f", "either"),
            ("recording/latin1", "recording", "Startdate 04-MAR-2015 Clínica Año".encode("latin-1"), "either"),
        ]
        for kind, field, value, expect in variants:
            w.add(kind, base, set_fixed(raw, field, value), expect)

    # ---- EDF+ flags and annotations -------------------------------------------------------
    w.add("edfplus/C_without_annotations", "tuh", set_fixed(tuh, "reserved", "EDF+C"), "either")
    w.add("edfplus/D_without_annotations", "tuh", set_fixed(tuh, "reserved", "EDF+D"), "either")
    ann_bases = {"tuh_ann": tuh_ann, **({"eegmat": eegmat} if eegmat is not None else {})}
    for base, raw in ann_bases.items():
        w.add("edfplus/D_with_annotations", base, set_fixed(raw, "reserved", "EDF+D"), "either")
        w.add("edfplus/plain_edf_with_annotations", base, set_fixed(raw, "reserved", ""), "either")
        w.add("edfplus/unknown_flag", base, set_fixed(raw, "reserved", "EDF+X"), "either")
        ann = [annotation_index(raw)]
        tals = {
            "random": random_bytes(np.random.default_rng([seed, 10, len(w.cases)])),
            "all_ff": lambda n: b"\xff" * n,
            "all_00": lambda n: b"\x00" * n,
            "unterminated": lambda n: (b"+0\x14" + b"A" * n)[:n],
            "huge_onset": lambda n: (b"+99999999999999999999\x14\x14\x00" + b"\x00" * n)[:n],
            "bad_utf8": lambda n: (b"+0\x14\x14\x00+1\x140\x14\xc3\x28\xff\xfe\x14\x00" + b"\x00" * n)[:n],
        }
        for name, make in tals.items():
            w.add(f"annotations_broken/{name}", base, fill_samples(raw, make, ann), "either")

    # ---- per-signal ranges ----------------------------------------------------------------
    targets = [("tuh", tuh, 0, "montage")]
    if eegmat is not None:
        targets = [("eegmat", eegmat, 0, "montage"), ("eegmat", eegmat, index_of(eegmat, "ECG ECG"), "ecg"),
                   *targets]
    for base, raw, i, where in targets:
        pmin, pmax = get_signals(raw, "physical_min")[i], get_signals(raw, "physical_max")[i]
        dmin, dmax = get_signals(raw, "digital_min")[i], get_signals(raw, "digital_max")[i]
        variants = [
            ("physical/collapsed", {"physical_min": pmax}, "either"),
            ("physical/swapped", {"physical_min": pmax, "physical_max": pmin}, "either"),
            ("physical/max_1e308", {"physical_max": "1e308"}, "either"),
            ("physical/min_-1e308", {"physical_min": "-1e308"}, "either"),
            ("physical/both_1e308", {"physical_min": "-1e308", "physical_max": "1e308"}, "either"),
            ("physical/max_nan", {"physical_max": "nan"}, "refuse"),
            ("physical/max_inf", {"physical_max": "inf"}, "refuse"),
            ("physical/max_garbage", {"physical_max": "lots"}, "refuse"),
            ("physical/min_empty", {"physical_min": ""}, "refuse"),
            ("digital/collapsed", {"digital_min": dmax}, "refuse"),
            ("digital/swapped", {"digital_min": dmax, "digital_max": dmin}, "either"),
            ("digital/huge", {"digital_max": "99999999"}, "either"),
            ("digital/garbage", {"digital_min": "min"}, "refuse"),
            ("digital/empty", {"digital_max": ""}, "refuse"),
            ("digital/fractional", {"digital_max": dmax + ".5"}, "either"),
        ]
        if where == "ecg":  # a channel the montage does not use: refusing is fine, crashing is not
            variants = [(k, v, "either") for k, v, _ in variants]
        for kind, fields, expect in variants:
            out = raw
            for field, value in fields.items():
                out = set_signal(out, field, i, value)
            w.add(f"{kind}_{where}", base, out, expect)

    # ---- samples per record ---------------------------------------------------------------
    for base, raw in bases.items():
        spr = layout(raw).samples_per_record
        for kind, value in [("zero", "0"), ("negative", str(-spr[0])), ("huge", "99999999"),
                            ("garbage", "many"), ("empty", "")]:
            w.add(f"samples_per_record/{kind}", base, set_signal(raw, "samples_per_record", 0, value), "refuse")
        w.add("samples_per_record/montage_half_rate", base,
              set_signal(raw, "samples_per_record", 0, str(spr[0] // 2)), "refuse")
        w.add("samples_per_record/other_half_rate", base,
              set_signal(raw, "samples_per_record", len(non_annotation_signals(raw)) - 1, str(spr[0] // 2)),
              "either")

    # ---- labels -----------------------------------------------------------------------------
    for base, raw in bases.items():
        labels = get_signals(raw, "label")
        last = non_annotation_signals(raw)[-1]  # ECG / EKG: not in the montage
        lay = layout(raw)

        def all_labels(new: Sequence[str | bytes], raw=raw) -> bytes:
            out = raw
            for i, lab in enumerate(new):
                out = set_signal(out, "label", i, lab)
            return out

        off, width = lay.signal_span("label", 0)
        nul_padded = bytearray(raw)
        for i, lab in enumerate(labels):
            nul_padded[off + i * width : off + (i + 1) * width] = lab.encode("latin-1").ljust(width, b"\x00")
        variants = [
            ("labels/control_bytes_montage", set_signal(raw, "label", 0, b"\x07" + labels[0].encode() + b"\x1b"),
             "either"),
            ("labels/nul_inside_montage", set_signal(raw, "label", 0, labels[0].encode().replace(b" ", b"\x00")),
             "either"),
            ("labels/nul_padded_all", bytes(nul_padded), "either"),
            ("labels/latin1_other", set_signal(raw, "label", last, "ECG é°".encode("latin-1")), "either"),
            ("labels/utf8_other", set_signal(raw, "label", last, "ECG µV ✓".encode()), "either"),
            ("labels/utf8_montage", set_signal(raw, "label", 1, labels[1].encode() + "·".encode()), "either"),
            ("labels/empty_montage", set_signal(raw, "label", 0, ""), "refuse"),
            ("labels/all_empty", all_labels([""] * lay.n_signals), "refuse"),
            ("labels/all_duplicates", all_labels([labels[0]] * lay.n_signals), "refuse"),
            ("labels/one_duplicate_montage", set_signal(raw, "label", 1, labels[0]), "refuse"),
        ]
        for kind, out, expect in variants:
            w.add(kind, base, out, expect)

    # ---- data section -----------------------------------------------------------------------
    data_bases = [("tuh", tuh, None), ("tuh_ann", tuh_ann, None), ("bdf", bdf, None)]
    if eegmat is not None:
        data_bases = [("eegmat", eegmat, None), ("eegmat_keep_annotations", eegmat, non_annotation_signals(eegmat)),
                      *data_bases]
    for base, raw, signals in data_bases:
        bps = layout(raw).bytes_per_sample
        patterns = {
            "all_ff": const(b"\xff"),
            "all_00": const(b"\x00"),
            "saturated_max": const(b"\xff" * (bps - 1) + b"\x7f"),
            "saturated_min": const(b"\x00" * (bps - 1) + b"\x80"),
            "alternating_max_min": const(b"\xff" * (bps - 1) + b"\x7f" + b"\x00" * (bps - 1) + b"\x80"),
            "random": random_bytes(np.random.default_rng([seed, len(w.cases)])),
        }
        if base == "bdf":
            patterns = {k: patterns[k] for k in ("all_ff", "saturated_max", "random")}
        suffix = ".bdf" if base == "bdf" else ".edf"
        for name, make in patterns.items():
            w.add(f"data/{name}", base, fill_samples(raw, make, signals), "either", suffix=suffix)
    if eegmat is not None:
        lay = layout(eegmat)
        for k in range(3):
            r = np.random.default_rng([seed, 100 + k])
            w.add("data/bytes_flipped", "eegmat", flip_bytes(eegmat, r, lay.header_bytes, len(eegmat), 50), "either")

    # ---- truncations --------------------------------------------------------------------------
    trunc_bases = {**bases, "bdf": bdf}
    for base, raw in trunc_bases.items():
        lay = layout(raw)
        hb, rb = lay.header_bytes, lay.record_bytes
        cuts = {"zero_bytes": 0, "fixed_1": 1, "fixed_8": 8, "fixed_100": 100, "fixed_255": 255,
                "signal_headers_start": 256, "signal_headers_mid": 256 + (hb - 256) // 2,
                "signal_headers_end": hb - 1, "header_only": hb, "mid_first_record": hb + rb // 2,
                "mid_record": hb + 3 * rb + rb // 3, "record_boundary": hb + (lay.n_records // 2) * rb,
                "last_byte": len(raw) - 1}
        if base != "eegmat":
            cuts = {k: cuts[k] for k in ("zero_bytes", "fixed_100", "signal_headers_mid", "header_only",
                                         "mid_record", "last_byte")}
        suffix = ".bdf" if base == "bdf" else ".edf"
        for name, n in cuts.items():
            w.add(f"truncated/{name}", base, truncate(raw, n), "refuse", suffix=suffix)

    # ---- random header damage -------------------------------------------------------------------
    for base, raw in bases.items():
        hb = layout(raw).header_bytes
        for k in range(15):
            r = np.random.default_rng([seed, 200 + k, len(base)])
            n = int(r.integers(1, 9))
            w.add("header_flipped/random", base, flip_bytes(raw, r, 0, hb, n), "either")

    # ---- not EEG at all ---------------------------------------------------------------------------
    notes = "Patient seen for EEG.\nFindings: normal.\n" * 20
    not_eeg = {
        "text": notes.encode(),
        "png_magic": b"\x89PNG\r\n\x1a\n" + random_bytes(np.random.default_rng([seed, 300]))(2000),
        "zeros_1k": b"\x00" * 1024,
        "zeros_64k": b"\x00" * 65536,
        "random_4k": random_bytes(np.random.default_rng([seed, 301]))(4096),
        "gzip_magic": b"\x1f\x8b\x08\x00" + b"\x00" * 600,
        "edf_magic_then_text": b"0       " + notes.encode(),
        "bdf_magic_then_zeros": b"\xffBIOSEMI" + b"\x00" * 2000,
        "html": b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n" * 10,
    }
    for name, raw in not_eeg.items():
        w.add(f"not_eeg/{name}", "none", raw, "refuse")

    # ---- odd shapes -------------------------------------------------------------------------------
    for base, raw in bases.items():
        lay = layout(raw)
        two_hours = set_fixed(raw, "n_records", str(int(7200 / float(get_fixed(raw, "record_duration")))))
        w.add("shape/2h_header_1s_data", base, truncate(two_hours, lay.header_bytes + lay.record_bytes), "refuse")
    w.add("shape/short_3s", "tuh", synthetic_edf(duration=3, seed=seed + 7), "refuse")
    w.add("shape/short_4s", "tuh_ann", synthetic_edf(duration=4, seed=seed + 8, annotations=True), "refuse")
    if eegmat is not None:
        w.add("shape/short_3s", "eegmat", eegmat_edf(shared, n_records=3), "refuse")
    w.add("shape/only_non_eeg", "synthetic",
          synthetic_edf(["ECG ECG", "EMG chin", "Resp nasal", "SpO2", "EOG LOC-A2"], seed=seed + 9), "refuse")
    w.add("shape/sampled_at_64hz", "tuh", synthetic_edf(sfreq=64, seed=seed + 11), "refuse")
    flat = synthetic_uv(len(TUH_LABELS), 250, 20, seed=seed + 12)
    flat[TUH_LABELS.index("EEG O1-REF")] = 0.0
    w.add("shape/flat_montage_electrode", "tuh", synthetic_edf(signals=flat), "either")
    if eegmat is not None:
        w.add("shape/flat_montage_electrode", "eegmat",
              fill_samples(eegmat, const(b"\x00\x00"), [index_of(eegmat, "EEG O1")]), "either")
    all_flat = np.zeros((len(TUH_LABELS), 250 * 20))
    w.add("shape/all_flat", "tuh", synthetic_edf(signals=all_flat), "either")

    # ---- MNE's own odd EDF/BDF test files ---------------------------------------------------------
    mne_cases = Path(shared) / "mne_edf_cases" if shared is not None else None
    if mne_cases is not None and mne_cases.is_dir():
        for src in sorted(mne_cases.iterdir()):
            if src.suffix.lower() in (".edf", ".bdf"):
                w.add(f"mne_case/{src.stem}", "mne", src.read_bytes(), "either", suffix=src.suffix.lower())

    return w.cases
