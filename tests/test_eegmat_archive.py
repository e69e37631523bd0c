from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from elmsearch.archive.discovery import discover, load_report_text
from elmsearch.archive.labels import read_labels
from elmsearch.datasets import eegmat as eegmat_archive
from elmsearch.text.report import parse_report

REPO = Path(__file__).resolve().parents[1]
EEGMAT = REPO.parent / "shared" / "data" / "eegmat"




def _symlinks_work(folder: Path) -> bool:
    probe = folder / ".symlink-probe"
    try:
        os.symlink(__file__, probe)
    except (OSError, NotImplementedError):
        return False
    probe.unlink()
    return True


@pytest.fixture(scope="module")
def src() -> Path:
    if not (EEGMAT / "subject-info.csv").is_file():
        pytest.skip(f"EEGMAT data absent: {EEGMAT} (PhysioNet eegmat 1.0.0, integration data) does not exist")
    return EEGMAT


@pytest.fixture(scope="module")
def built(src, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("eegmat") / "archive"
    return out, eegmat_archive.build_eegmat_archive(src, out, seed=0)


def test_discover_finds_72_recordings_each_with_its_own_report(built):
    out, summary = built
    assert summary["n_recordings"] == 72 and summary["n_subjects"] == 36 and summary["n_arithmetic"] == 36
    entries = discover(out, follow_outside=True)
    assert len(entries) == 72
    assert len({e.key for e in entries}) == 72
    assert all(e.info.layout == "tuh" and e.info.montage == "02_tcp_le" for e in entries)
    assert all(e.report_path is not None for e in entries)
    assert len({e.report_path for e in entries}) == 72
    texts = [load_report_text(e) for e in entries]
    assert all(t and "IMPRESSION:" in t for t in texts)
    assert len(set(texts)) > 36  # wording varies
    assert parse_report(texts[0]).impression


def test_reports_match_condition(built):
    out, _ = built
    by_key = {e.key: e for e in discover(out, follow_outside=True)}
    rest = load_report_text(by_key[("aaaaaa05", "s001", "02_tcp_le", "t000")])
    task = load_report_text(by_key[("aaaaaa05", "s002", "02_tcp_le", "t000")])
    assert "arithmetic" in task.lower() and "arithmetic" not in rest.lower()
    assert "eyes closed" in rest.lower()
    # age and sex from subject-info.csv (Subject05: 16, F)
    assert rest.startswith("CLINICAL HISTORY: 16 year old female") and "16 year old female" in task
    for e in by_key.values():
        text = load_report_text(e).lower()
        assert ("arithmetic" in text) == (e.info.session == "s002")


def test_labels_csv_readable(built):
    out, _ = built
    labels = read_labels(out / "labels.csv", "arithmetic", root=out)
    assert len(labels) == 72
    assert sorted(labels.values()).count(1) == 36 and sorted(labels.values()).count(0) == 36
    keys = {"/".join(e.key) for e in discover(out, follow_outside=True)}
    assert set(labels) == keys
    assert labels["aaaaaa00/s002/02_tcp_le/t000"] == 1 and labels["aaaaaa00/s001/02_tcp_le/t000"] == 0


def test_split_is_24_12_disjoint(built):
    out, summary = built
    splits = json.loads((out / "splits.json").read_text())
    train, test = set(splits["train"]), set(splits["test"])
    assert len(train) == 24 and len(test) == 12 and not train & test
    assert train | test == {e.info.subject for e in discover(out, follow_outside=True)}
    assert splits["train"] == summary["train"]
    assert len(set(splits["train_eegmat"])) == 24 and all(s.startswith("Subject") for s in splits["test_eegmat"])
    # another seed, another split
    assert eegmat_archive.split_subjects(sorted(train | test), seed=1)[0] != splits["train"]


def test_edfs_are_links_not_copies(built, src):
    out, summary = built
    if not _symlinks_work(out):
        pytest.skip("symbolic links cannot be made here")
    assert summary["link_modes"] == {"symlink": 72}
    edfs = [p for p in out.rglob("*") if p.suffix.lower() == ".edf"]
    assert len(edfs) == 72
    for p in edfs:
        assert p.is_symlink()
        assert p.resolve().parent == src.resolve()
    regular = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    assert all(p.stat().st_size < 100_000 for p in regular)  # reports, labels, json only


def test_rebuild_is_idempotent(built, src):
    out, summary = built
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.is_symlink()}
    again = eegmat_archive.build_eegmat_archive(src, out, seed=0)
    assert again == summary
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == before


def test_link_file_falls_back_to_hard_link_then_copy(tmp_path, monkeypatch):
    src = tmp_path / "a.edf"
    src.write_bytes(b"0" * 100)

    def no(*args, **kwargs):
        raise OSError("not permitted")

    monkeypatch.setattr(os, "symlink", no)
    dest = tmp_path / "out" / "b.edf"
    mode = eegmat_archive.link_file(src, dest)
    assert mode == "hardlink" and os.path.samefile(dest, src)
    assert eegmat_archive.link_file(src, dest) == "hardlink"
    monkeypatch.setattr(os, "link", no)
    dest2 = tmp_path / "out" / "c.edf"
    assert eegmat_archive.link_file(src, dest2) == "copy"
    assert dest2.read_bytes() == src.read_bytes() and not dest2.is_symlink()
    assert eegmat_archive.link_file(src, dest2) == "copy"


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="subject-info.csv"):
        eegmat_archive.build_eegmat_archive(tmp_path / "nowhere", tmp_path / "out")
