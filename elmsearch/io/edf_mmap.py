"""The memory-mapped ``SignalSource``: chosen EDF/BDF signals, bit for bit as MNE reads them, without MNE.

``mne.io.read_raw_edf`` parses the whole header with Python per field, reads the
annotations channel, then decodes every signal of every data record it is asked for.
ELM needs 17 electrodes; here the data records are memory-mapped (int16 little-endian
for EDF, 3-byte little-endian two's complement for BDF) and only the picked signals of
the records covering ``[start, stop)`` are decoded, one vectorised slice per signal.

Values are MNE's to the last bit: per signal ``cal = (pmax - pmin) / (dmax - dmin)``,
``offset = pmin - dmin * cal``, then ``(digital * cal + offset) * unit`` in that order,
with MNE's unit table (``uV``/``µV`` 1e-6, ``mV`` 1e-3, anything else 1) and MNE's
parsing of the numeric header fields (text up to the first NUL, ``,`` read as ``.``).

The fast path is taken only where MNE's result is known: ``open_edf_reader`` returns
None (the caller reads with MNE, which then reads or refuses as it always did) for
EDF+D/BDF+D discontinuous files, picked signals slower than the file's fastest signal
(MNE resamples them), a file shorter than its header's records, more than one annotations
channel, and any header or annotation text on which MNE itself would raise (so MNE's refusal is kept, word for word).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence

import numpy as np

from elmsearch.errors import CorruptFileError
from elmsearch.io.header import EdfHeader

logger = logging.getLogger(__name__)

_TAL_LABELS = ("EDF Annotations", "BDF Annotations")
_STIM_LABELS = ("status", "trigger")
_MICROVOLT = ("\u03bcV", "\u00b5V", "\x83\xcaV", "uV")  # MNE's spellings of uV


class NotEligible(Exception):
    """The fast reader cannot promise MNE's result for this file; read it with MNE."""


def _mne_str(raw: bytes) -> str:
    return raw.decode("latin-1").split("\x00")[0]


def _mne_num(raw: bytes) -> str:
    return _mne_str(raw).replace(",", ".")


def _check_mne_fixed_fields(fixed: bytes) -> None:
    """Raise NotEligible where MNE's parsing of the patient, date and time fields raises."""
    id_info = fixed[8:88].decode("latin-1").rstrip().split(" ")
    if len(id_info) > 4 and any(tok.count("=") > 1 for tok in id_info[4:] if "=" in tok):
        raise NotEligible("patient field MNE cannot split")
    rec_info = fixed[88:168].decode("latin-1").rstrip().split(" ")
    meas_date = None
    if len(rec_info) == 5:
        try:
            meas_date = dt.datetime.strptime(rec_info[1], "%d-%b-%Y")
        except Exception:  # noqa: BLE001 -- as MNE
            meas_date = None
    if meas_date is None:
        try:
            day, month, year = (int(x) for x in fixed[168:176].decode("latin-1").split("."))
            meas_date = dt.datetime(year + 2000 if year < 85 else year + 1900, month, day)
        except Exception:  # noqa: BLE001 -- as MNE
            meas_date = None
    if meas_date is None:
        return
    try:
        hour, minute, second = (int(x) for x in fixed[176:184].decode("latin-1").split("."))
    except Exception:  # noqa: BLE001 -- as MNE
        return
    try:
        meas_date.replace(hour=hour, minute=minute, second=second, tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise NotEligible(f"start time MNE cannot read ({hour}.{minute}.{second})") from None


class EdfSignalReader:
    """Reads chosen signals of an EDF/BDF file as MNE's ``get_data`` would, from a memory map.

    Parameters
    ----------
    fname : path-like
        The file.
    header : EdfHeader
        Its header (``header.read_edf_header``).
    picks : sequence of int
        Signal indices in the header (annotation signals excluded), in output row order.

    Attributes
    ----------
    sfreq : float
        Rate of the picked signals, Hz (MNE's ``raw.info["sfreq"]`` for this file).
    n_times : int
        Samples per signal in the file (MNE's ``raw.n_times``).

    Raises
    ------
    NotEligible
        MNE's values for this file are not guaranteed here (see the module notes).
    CorruptFileError
        The file cannot be memory-mapped.
    """

    def __init__(self, fname: str | os.PathLike, header: EdfHeader, picks: Sequence[int]):
        self.fname = str(fname)
        if header.kind not in ("EDF", "BDF"):
            raise NotEligible(f"{header.kind} file")
        suffix = os.path.splitext(self.fname)[1].lower()
        if suffix != f".{header.kind.lower()}":
            raise NotEligible(f"suffix {suffix!r} (MNE refuses it)")
        n = len(header.labels)
        try:
            with open(self.fname, "rb") as fh:
                head = fh.read(256 * (n + 1))
                size = os.fstat(fh.fileno()).st_size
        except OSError as err:
            raise CorruptFileError(self.fname, f"cannot open ({err.strerror or err})") from None
        if len(head) != 256 * (n + 1):
            raise NotEligible("short header")
        self._parse(head, header, size, list(picks))
        self._check_annotations()

    def _parse(self, head: bytes, header: EdfHeader, size: int, picks: list[int]) -> None:
        n = len(header.labels)
        sig = head[256:]

        def col(offset: int, width: int) -> list[bytes]:
            base = offset * n
            return [sig[base + i * width : base + (i + 1) * width] for i in range(n)]

        try:
            if int(_mne_str(head[184:192])) != 256 * (n + 1) or int(_mne_str(head[252:256])) != n:
                raise NotEligible("header length or signal count read differently by MNE")
            int(_mne_str(head[236:244]))
            if float(_mne_str(head[244:252])) != header.record_duration:
                raise NotEligible("record duration read differently by MNE")
            pmin, pmax, dmin, dmax = (np.array([float(_mne_num(v)) for v in col(o, 8)])
                                      for o in (104, 112, 120, 128))
            spr = np.array([int(_mne_str(v)) for v in col(216, 8)])
            head[256 + 224 * n :].decode()  # MNE decodes the reserved fields as UTF-8
        except (ValueError, UnicodeDecodeError) as err:
            raise NotEligible(f"header field MNE cannot parse ({err})") from None
        _check_mne_fixed_fields(head)
        reserved = _mne_str(head[192:236]).strip()
        if reserved.startswith(("EDF+D", "BDF+D")):
            raise NotEligible(f"discontinuous ({reserved[:5]})")
        if tuple(int(s) for s in spr) != header.samples_per_record:
            raise NotEligible("samples per record read differently by MNE")
        labels = [v.strip().decode("latin-1") for v in col(0, 16)]
        tal = [i for i, lab in enumerate(labels) if lab in _TAL_LABELS]
        if len(tal) > 1:
            raise NotEligible("more than one annotations channel")
        signals = [i for i in range(n) if i not in tal]
        if not picks or any(p not in signals for p in picks):
            raise NotEligible("picks are not signals of this file")
        self.bytes_per_sample = 3 if header.kind == "BDF" else 2
        record_len = int(spr.sum())
        n_records = (size - 256 * (n + 1)) // self.bytes_per_sample // record_len
        if n_records < header.n_records or n_records <= 0:
            raise NotEligible(f"{n_records} data records in the file, {header.n_records} in the header")
        n_records = header.n_records  # records past the header's are not read (warned in header.read_edf_header)
        buf_len = int(spr[signals].max())
        if any(spr[p] != buf_len for p in picks):
            raise NotEligible("picked signals slower than the fastest signal (MNE resamples them)")
        # MNE: cal and offsets over the non-annotation signals, degenerate ranges set to 1
        with np.errstate(all="ignore"):  # absurd ranges give inf/NaN in MNE too; refused downstream
            phys = pmax - pmin
            digi = dmax - dmin
            digi[~np.isfinite(digi) | (digi == 0)] = 1
            phys[phys == 0] = 1
            cal = phys / digi
            offsets = pmin - dmin * cal
        units = [v.strip().decode("latin-1") for v in col(96, 8)]
        gains = np.array([1e-6 if u in _MICROVOLT else 1e-3 if u == "mV" else 1.0 for u in units])
        stim = [i for i in signals if labels[i].lower() in _STIM_LABELS]
        if any(p in stim for p in picks):
            raise NotEligible("a picked signal is a stim channel")
        self.picks = picks
        self.cal, self.offsets, self.gains = cal[picks], offsets[picks], gains[picks]
        self.spr = buf_len
        self.sfreq = float(buf_len * 1.0 / header.record_duration)
        self.n_records = n_records
        self.n_times = n_records * buf_len
        self.record_len = record_len
        self.data_offset = 256 * (n + 1)
        starts = np.concatenate([[0], np.cumsum(spr)])
        self.starts = [int(starts[p]) for p in picks]
        self.tal = (int(starts[tal[0]]), int(spr[tal[0]])) if tal else None

    def _map(self, rec0: int, rec1: int) -> np.ndarray:
        """Records ``[rec0, rec1)``, shape (n_records, record samples or bytes).

        Mapped per read and dropped after it, so pages of a long file read chunk by chunk do not
        stay counted in the process's resident memory.
        """
        items = self.record_len * (1 if self.bytes_per_sample == 2 else 3)
        dtype = "<i2" if self.bytes_per_sample == 2 else "u1"
        try:
            return np.memmap(self.fname, dtype=dtype, mode="r", shape=(rec1 - rec0, items),
                             offset=self.data_offset + rec0 * self.record_len * self.bytes_per_sample)
        except (OSError, ValueError) as err:
            raise CorruptFileError(self.fname, f"cannot map the data records ({err})") from None

    @staticmethod
    def _columns(mm: np.ndarray, first: int, n_samp: int, bps: int) -> np.ndarray:
        b = 1 if bps == 2 else 3  # memmap items per sample
        return mm[:, b * first : b * (first + n_samp)]

    def _check_annotations(self) -> None:
        """MNE reads the annotations channel on opening and refuses text that is not UTF-8."""
        if self.tal is None:
            return
        first, n_samp = self.tal
        mm = self._map(0, self.n_records)
        block = np.ascontiguousarray(self._columns(mm, first, n_samp, self.bytes_per_sample))
        del mm
        try:
            block.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            raise NotEligible("annotations that are not UTF-8 (MNE refuses them)") from None

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of the picked signals.

        Returns
        -------
        array of float64, shape (n_picks, stop - start)
            Volts (MNE's units), identical to ``raw.get_data(picks, start, stop)``.
        """
        stop = self.n_times if stop is None else min(int(stop), self.n_times)
        start = int(start)
        if not 0 <= start <= stop:
            raise ValueError(f"bad sample range [{start}, {stop}) for {self.n_times} samples")
        out = np.empty((len(self.picks), stop - start))
        if stop == start:
            return out
        rec0, rec1 = start // self.spr, -(-stop // self.spr)
        a, b = start - rec0 * self.spr, stop - rec0 * self.spr
        mm = self._map(rec0, rec1)
        with np.errstate(all="ignore"):  # inf/NaN from absurd ranges, as in MNE; refused downstream
            for j, first in enumerate(self.starts):
                block = self._columns(mm, first, self.spr, self.bytes_per_sample)
                if self.bytes_per_sample == 2:
                    digital = block.reshape(-1)[a:b]
                else:
                    by = np.ascontiguousarray(block).reshape(-1, 3)[a:b].astype(np.int32)
                    digital = by[:, 0] | (by[:, 1] << 8) | (by[:, 2] << 16)
                    digital <<= 8  # sign-extend bit 23
                    digital >>= 8
                np.multiply(digital, self.cal[j], out=out[j])  # MNE's order: * cal, + offset, * unit
            out += self.offsets[:, np.newaxis]
            out *= self.gains[:, np.newaxis]
        return out


def open_edf_reader(fname: str | os.PathLike, header: EdfHeader, picks: Sequence[int]
                    ) -> EdfSignalReader | None:
    """An ``EdfSignalReader``, or None when the file must be read with MNE (reason logged at DEBUG)."""
    try:
        return EdfSignalReader(fname, header, picks)
    except NotEligible as why:
        logger.debug("%s: read with MNE: %s", fname, why)
        return None

