"""Training loop, MODEL_DIR, resume, patient split, zero-shot, probes, and their commands."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from elmsearch.datasets.demo import generate_archive
from elmsearch.models import load_model
from elmsearch.models.zeroshot import zero_shot
from elmsearch.train.probe import ProbeData, label_efficiency, patient_split
from elmsearch.train.trainer import TrainConfig, build_model, load_items, split_by_patient, train

TINY = TrainConfig(epochs=2, batch_size=4, max_eeg=2, max_text=3, val_fraction=0.3, seed=0, val_max_windows=4)


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
    return generate_archive(tmp_path_factory.mktemp("tiny"), n_recordings=10, seed=5,
                            min_minutes=0.25, max_minutes=0.4)


@pytest.fixture(scope="module")
def tiny_items(tiny_archive):
    return load_items(tiny_archive.root, 5.0, "sentence")


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_items, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    train(build_model("elm-5s"), tiny_items, out, TINY, resume=False)
    return out


def test_load_items_reads_windows_and_segments(tiny_items, tiny_archive):
    assert len(tiny_items) == tiny_archive.n_recordings
    it = tiny_items[0]
    assert it.windows.shape[1:] == (20, 500) and it.windows.dtype == np.float16
    assert it.segments and all(":" in s for s in it.segments)  # heading prepended
    assert not any(s.startswith(("CLINICAL HISTORY", "MEDICATIONS")) for it in tiny_items for s in it.segments)


def test_load_items_pairs_windows_with_the_events_inside_them(tiny_items, tiny_archive):
    """Window-level pairs: each event's windows (5 s) with its text, from the EDF+ annotations and the TUH file."""
    import csv

    with (tiny_archive.root / "events.csv").open() as fh:
        truth = list(csv.DictReader(fh))
    for it in tiny_items:
        mine = [r for r in truth if str(tiny_archive.root / r["path"]) == it.path]
        assert bool(it.events) == bool(mine)
        assert all(0 <= i < len(it.windows) for i, _ in it.events)
        for r in mine:
            i = int(float(r["onset_s"]) // 5)
            if i < len(it.windows):
                assert any(j == i for j, _ in it.events)
    texts = {t for it in tiny_items for _, t in it.events}
    assert "sleep spindle" in texts or "sharp wave" in texts
    assert any("spike and/or sharp wave" in t for t in texts)  # a TUH code read with its meaning


def test_event_pairs_change_training(tiny_items, tmp_path):
    from elmsearch.train.trainer import _event_loss

    model = build_model("elm-5s")
    with_events = [i for i, it in enumerate(tiny_items) if it.events]
    texts = sorted({t for it in tiny_items for _, t in it.events})
    feats = torch.from_numpy(model.text_encoder.embed(texts))
    loss = _event_loss(model, tiny_items, with_events, None, feats, {t: n for n, t in enumerate(texts)}, 4,
                       np.random.default_rng(0), torch.tensor(0.3), "cpu")
    assert loss.item() > 0 and loss.requires_grad
    outs = {}
    for w in (0.0, 0.5):
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=1, batch_size=4, max_eeg=2, max_text=3, val_fraction=0.3, seed=0,
                          val_max_windows=4, freeze_eeg=True, event_weight=w)
        m = build_model("elm-5s")
        train(m, tiny_items, tmp_path / f"w{w}", cfg, resume=False)
        outs[w] = torch.cat([p.detach().flatten() for p in m.eeg.proj.parameters()])
    assert not torch.allclose(outs[0.0], outs[0.5])


def test_load_items_skips_unusable_recordings(tiny_archive, tmp_path, caplog):
    import shutil

    root = tmp_path / "a"
    shutil.copytree(tiny_archive.root, root)
    edfs = sorted(root.rglob("*.edf"))
    edfs[0].write_bytes(edfs[0].read_bytes()[:3000])  # truncated
    for txt in edfs[1].parent.parent.glob("*.txt"):
        txt.unlink()  # no report
    items = load_items(root, 5.0, "sentence")
    paths = {i.path for i in items}
    assert str(edfs[0]) not in paths and str(edfs[1]) not in paths
    assert len(items) >= len(edfs) - 3  # a two-montage session may share the removed report
    assert "truncated" in caplog.text


def test_split_by_patient_never_shares_a_patient(tiny_items):
    for seed in range(5):
        tr, va = split_by_patient(tiny_items, 0.3, seed)
        assert tr and va
        assert not {i.patient for i in tr} & {i.patient for i in va}
        assert len(tr) + len(va) == len(tiny_items)


def test_model_dir_holds_everything(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "checkpoint.pt", "train_log.jsonl", "metrics.json",
            "split.json"} <= names
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["preprocessing"]["sfreq"] == 100.0 and cfg["eeg"]["window_seconds"] == 5.0
    assert cfg["text"]["pooling"] == "mean" and cfg["text"]["model"]
    log = [json.loads(line) for line in (tiny_model_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [-1, 0, 1]
    assert all(r["loss"] > 0 and r["windows_per_s"] > 0 for r in log[1:])
    metrics = json.loads((tiny_model_dir / "metrics.json").read_text())
    assert {"text_to_eeg", "eeg_to_text"} <= set(metrics["val"])
    model = load_model(tiny_model_dir)
    assert model.has_text and model.encode_text(["normal EEG"]).shape == (1, 256)


def test_training_is_reproducible_and_resumable(tiny_items, tmp_path):
    cfg3 = TrainConfig(**{**TINY.__dict__, "epochs": 3, "patience": 100})
    torch.manual_seed(0)
    straight = tmp_path / "straight"
    train(build_model("elm-5s"), tiny_items, straight, cfg3, resume=False)

    class Killed(Exception):
        pass

    def kill_in_epoch_2(step):
        if step["epoch"] == 2:
            raise Killed

    torch.manual_seed(0)
    resumed = tmp_path / "resumed"
    with pytest.raises(Killed):
        train(build_model("elm-5s"), tiny_items, resumed, cfg3, resume=False, on_step=kill_in_epoch_2)
    torch.manual_seed(123)  # a different init: resuming must overwrite it
    train(build_model("elm-5s"), tiny_items, resumed, cfg3, resume=True)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    epochs = [json.loads(x)["epoch"] for x in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert epochs == [-1, 0, 1, 2]


def test_init_from_release_weights(tiny_items, tmp_path):
    from pathlib import Path

    release = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "elm_pretrained" / "5s"
    if not release.is_dir():
        pytest.skip("../shared/data/elm_pretrained absent: ELM release checkpoints not available")
    model = build_model("elm-5s", init=release)
    ref = load_model(release)
    x = np.random.default_rng(0).standard_normal((2, 20, 500)).astype(np.float32)
    np.testing.assert_allclose(model.encode_eeg(x), ref.encode_eeg(x), atol=1e-6)
    with pytest.raises(Exception, match="60 s windows"):
        build_model("elm-5s", init=release.parent / "60s")
    frozen = TrainConfig(**{**TINY.__dict__, "epochs": 1, "freeze_eeg": True})
    before = {k: v.clone() for k, v in model.eeg.state_dict().items()}
    train(model, tiny_items, tmp_path / "frozen", frozen, resume=False)
    after = model.eeg.state_dict()
    trunk = [k for k in before if not k.startswith(("proj.", "spectral."))]
    head = [k for k in before if k.startswith("proj.") and before[k].is_floating_point()]
    assert trunk and head
    assert all(torch.equal(before[k], after[k].cpu()) for k in trunk), "frozen trunk must not change"
    # the spectral view (not in the release) is standardised on the training windows, once
    assert int(after["spectral.n_fit"]) == sum(len(it.windows) for it in tiny_items) - int(
        sum(len(it.windows) for it in tiny_items if it.patient in json.loads(
            (tmp_path / "frozen" / "split.json").read_text())["val"]))
    assert not torch.equal(after["spectral.std"].cpu(), torch.ones_like(after["spectral.std"].cpu()))
    assert any(not torch.equal(before[k], after[k].cpu()) for k in head), "the projection head must train"


def test_zero_shot_probabilities(tiny_model_dir):
    model = load_model(tiny_model_dir)
    prompts = ["normal EEG", "generalized 3 Hz spike and wave", "focal slowing"]
    target = model.encode_text(["generalized 3 Hz spike and wave"])[0]
    p = zero_shot(model, target, prompts, templates=("{}",))
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0, abs=1e-6)
    assert p.argmax() == 1
    both = zero_shot(model, np.stack([target, target]), prompts[::-1], templates=("{}",))
    np.testing.assert_allclose(both[0], p[::-1], atol=1e-6)
    with pytest.raises(ValueError):
        zero_shot(model, target, ["only one"])


def test_label_efficiency_curve_on_separable_embeddings():
    rng = np.random.default_rng(0)
    n = 60
    labels = np.arange(n) % 2
    patients = np.array([f"p{i // 2}" for i in range(n)])  # two recordings per patient
    embs = [rng.normal(0, 1, (5, 8)) + 2.0 * y for y in labels]
    rows = label_efficiency(ProbeData(embs, labels, patients), fractions=(0.05, 0.3, 1.0), seeds=(0, 1))
    assert [r["fraction"] for r in rows] == [0.05, 0.3, 1.0]
    assert rows[0]["n_labels"] < rows[1]["n_labels"] < rows[2]["n_labels"]
    assert rows[-1]["auroc"] > 0.95 and rows[-1]["balanced_accuracy"] > 0.9
    shuffled = label_efficiency(ProbeData(embs, rng.permutation(labels), patients), fractions=(1.0,), seeds=(0, 1))
    assert shuffled[0]["auroc"] < 0.8
    tr, te = patient_split(patients, labels, 0.3, 0)
    assert not set(patients[tr]) & set(patients[te])


def test_train_classify_probe_commands(tiny_archive, tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m"
    res = runner.invoke(app, ["train", str(tiny_archive.root), "--out", str(out), "--epochs", "1",
                              "--batch-size", "4", "--max-windows", "2", "--max-segments", "3"])
    assert res.exit_code == 0, res.output
    assert "recipe heads: up to 1 epochs" in res.output  # a small archive: heads on a frozen encoder
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["config"]["freeze_eeg"] is True
    edf = next(tiny_archive.root.rglob("*.edf"))
    prompts = ["normal EEG", "abnormal EEG with focal slowing"]
    res = runner.invoke(app, ["classify", str(edf), "--prompt", prompts[0], "--prompt", prompts[1],
                              "--model", str(tiny_model_dir), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["recording"] == str(edf)
    assert [s["prompt"] for s in doc["scores"]] == prompts
    assert sum(s["probability"] for s in doc["scores"]) == pytest.approx(1.0, abs=1e-4)
    res = runner.invoke(app, ["classify", str(edf), "-p", "a", "-p", "b", "--model", str(tmp_path / "none")])
    assert res.exit_code == 2 and "does not exist" in res.output  # a usage error, caught while parsing
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["classify", str(edf), "-p", "a", "-p", "b", "--model", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "not a model folder" in res.output


def _two_class_labels(archive, fname):
    """A label column that every patient with two or more recordings has both values of.

    Whatever patients a split holds out, its training and test recordings then both hold
    both classes (patients with one recording are left unlabelled).
    """
    by_patient: dict[str, list[dict]] = {}
    for row in archive.rows:
        by_patient.setdefault(row["subject"], []).append(row)
    lines, n = ["path,label"], {0: 0, 1: 0}
    for rows in by_patient.values():
        for i, row in enumerate(sorted(rows, key=lambda r: r["path"])):
            y = "" if len(rows) < 2 else str(i % 2)
            lines.append(f"{row['path']},{y}")
            if y:
                n[int(y)] += 1
    fname.write_text("\n".join(lines) + "\n")
    return n


def test_probe_command_gives_a_curve(tiny_archive, tiny_model_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    n = _two_class_labels(tiny_archive, labels)
    assert n[0] >= 3 and n[1] >= 3, n  # several patients, each with both classes
    res = CliRunner().invoke(app, ["probe", str(tiny_archive.root), "--labels", str(labels), "--column", "label",
                                   "--model", str(tiny_model_dir), "--fractions", "0.5,1", "--seeds", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["column"] == "label"
    assert [p["fraction"] for p in doc["points"]] == [0.5, 1.0]
    for point in doc["points"]:
        assert point["n_seeds"] == 2, point  # no split was skipped for lack of a class
        assert 2 <= point["n_labels"] <= n[0] + n[1]
        for key in ("auroc", "balanced_accuracy"):
            assert 0.0 <= point[key] <= 1.0, point
            assert 0.0 <= point[f"{key}_sd"] <= 1.0, point
    assert doc["points"][0]["n_labels"] < doc["points"][1]["n_labels"]


def test_recipes_and_their_choice():
    from elmsearch.errors import ElmsearchError
    from elmsearch.train.trainer import RECIPES, SMALL_ARCHIVE, choose_recipe, recipe_config

    assert choose_recipe(SMALL_ARCHIVE - 1, True) == choose_recipe(10, False) == "heads"
    assert choose_recipe(SMALL_ARCHIVE, True) == "finetune" and choose_recipe(SMALL_ARCHIVE, False) == "full"
    cfg = recipe_config("heads", seed=3, lr=None, epochs=2)
    assert (cfg.freeze_eeg, cfg.epochs, cfg.lr, cfg.seed) == (True, 2, RECIPES["heads"]["lr"], 3)
    ft = recipe_config("finetune")
    assert not ft.freeze_eeg and ft.freeze_eeg_epochs > 0 and ft.lr < cfg.lr
    with pytest.raises(ElmsearchError, match="unknown recipe"):
        recipe_config("nope")
