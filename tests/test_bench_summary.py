"""bench/run_all.py: the summary table (ratios against same-run baselines) and the rewrite of
the generated section of docs/benchmarks.md."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all():
    import run_all  # bench/ is on pytest's pythonpath (pyproject.toml)

    return run_all


def _results():
    warm = {"miss": {"p50_ms": 9.0, "p95_ms": 12.0}, "hit": {"p50_ms": 3.0},
            "filtered": {"p50_ms": 18.0, "n_allowed": 280, "path": "post-filter"},
            "selective": {"p50_ms": 30.0, "n_allowed": 3, "path": "exact from SQL"}}
    return {
        "preprocess": {"date": "2026-11-25", "table": "| t |", "groups": {"all": {
            "n": 72, "read_elm": 0.008, "read_ours": 0.004, "pre_elm": 0.1, "pre_ours": 0.005, "min_corr": 0.9998}}},
        "demo": {"date": "2026-11-25", "n_recordings": 100, "hours_per_minute": 44.5},
        "train": {"date": "2026-11-24", "windows_per_s_frozen": 9000.0, "windows_per_s_full": 90.0,
                  "frozen_over_full": 100.0, "demo_train_s": 35.0, "demo_val_R@10": 0.9,
                  "demo_untrained_val_R@10": 0.45, "n_val": 24},
        "faiss": {"date": "2026-11-25", "results": [{"n": 1000000, "kind": "ivf_sq8", "nlist": 4096, "nprobe": 4,
                                                     "recall_at_10": 0.967, "build_s": 60.0, "file_mb": 268.0,
                                                     "p50_ms": 0.12, "p95_ms": 0.15, "flat_p50_ms": 196.0,
                                                     "flat_over_index_p50": 1633.3}]},
        "index": {"date": "2026-11-25", "table": "| i |", "n_recordings": 100, "hours": 8.07,
                  "index": {"a": {"h_per_s": 0.37, "n_jobs": 1, "precision": "fp32"},
                            "b": {"h_per_s": 0.49, "n_jobs": 1, "precision": "auto"}},
                  "elm_eeg_only": {"h_per_s": 0.25}, "targets": {"h_per_s": 0.3, "ratio": 5.0}},
        "query": {"date": "2026-11-25", "results": [
            {"n": 10000, "kind": "flat_ip", "nprobe": 0, "warm": {**warm, "miss": {"p50_ms": 21.0, "p95_ms": 29.0}}},
            {"n": 1000000, "kind": "ivf_sq8", "nprobe": 4, "warm": warm}],
            "cold_cli": {"n": 1000000, "runs": 5, "new_query_median_s": 0.9, "same_query_median_s": 0.6,
                         "torch_traced_new_query_median_s": 1.8,
                         "eager_text_encoder_new_query_median_s": 5.0, "stages_text_cache_miss": {"import": 1.2}}},
    }


def test_summary_rows_pair_each_figure_with_its_baseline_and_target(run_all):
    results = {k: {**v, "_name": k} for k, v in _results().items()}
    rows = {r["what"]: r for r in run_all.summary_rows(results)}
    pre = next(r for w, r in rows.items() if w.startswith("ELM preprocessing"))
    assert pre["ratio"] == pytest.approx(20.0) and pre["baseline"] == pytest.approx(100.0)
    idx = next(r for w, r in rows.items() if w.startswith("indexing"))
    assert idx["ours"] == 0.49 and idx["ratio"] == pytest.approx(0.49 / 0.25) and idx["met"] is False
    warm = [r for w, r in rows.items() if w.startswith("text→EEG query")]
    assert [r["met"] for r in warm] == [None, True]  # the target is for the largest index only
    cold = next(r for w, r in rows.items() if w.startswith("cold"))
    assert cold["met"] is True and cold["ratio"] == pytest.approx(2.0)
    assert next(r for w, r in rows.items() if w.startswith("training with"))["date"] == "2026-11-24"


def test_the_generated_section_is_replaced_between_the_markers_only(run_all, tmp_path):
    results = {k: {**v, "_name": k} for k, v in _results().items()}
    section = run_all.markdown(run_all.summary_rows(results), results, {}, run_all.machine(), quick=True)
    assert "bench/run_all.py --quick" in section and "cores" in section and "| index | 2026-11-25 |" in section
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"intro\n{run_all.BEGIN}\nold numbers\n{run_all.END}\nafter\n")
    assert run_all.write_section(section, doc)
    text = doc.read_text()
    assert "old numbers" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert not run_all.write_section(section, doc)  # same section: unchanged
    doc.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        run_all.write_section(section, doc)
    real = run_all.BENCHMARKS_DOC.read_text()  # the file a real run rewrites has the markers
    assert real.index(run_all.BEGIN) < real.index(run_all.END)
