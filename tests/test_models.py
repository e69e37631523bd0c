"""Model registry, the ELM EEG encoder and its released checkpoints, text side, pooling."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elmsearch.errors import ElmsearchError
from elmsearch.models import (
    AttentionPool,
    EEGResNet,
    FrozenTextEncoder,
    NoTextModelError,
    config_hash,
    create_model,
    get_config,
    list_models,
    load_model,
    save_model,
)

RELEASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "elm_pretrained"


def _release(window: str) -> Path:
    path = RELEASE / window
    if not (path / "model_0_checkpoint.pt").is_file():
        pytest.skip(f"../shared/data/elm_pretrained/{window} absent: ELM release checkpoints not available")
    return path


def test_registry_lists_elm_configs():
    assert {"elm-5s", "elm-60s"} <= set(list_models())
    with pytest.raises(ElmsearchError, match="unknown model"):
        get_config("nope")


@pytest.mark.parametrize("name", list_models())
def test_typed_config_gives_back_the_json_it_was_read_from(name):
    """config.json, meta.json and config_hash depend on to_dict: same keys, order, nulls, unknown keys."""
    import json

    from elmsearch.models.config import ModelCfg

    raw = get_config(name)
    raw["eeg"]["spectral"] = None  # a null stays a null
    del raw["learn_temperature"]  # an absent key stays absent
    raw["lab_note"] = {"kept": True}  # an unknown key is kept, in its place
    cfg = ModelCfg.from_dict(raw)
    assert json.dumps(cfg.to_dict()) == json.dumps(raw)
    assert cfg.eeg.spectral is None and cfg.eeg.n_times == round(raw["eeg"]["window_seconds"] * raw["eeg"]["sfreq"])
    cfg.similar = {"representation": "spectral"}  # set later: appended, as a dict assignment would
    assert list(cfg.to_dict()) == [*raw, "similar"] and cfg.similar_representation == "embedding"


def test_add_model_config_registers_a_json_file(tmp_path):
    import json

    from elmsearch.models.factory import _registry, add_model_config

    cfg = {**get_config("elm-5s"), "name": "my-elm-5s", "description": "a lab's own"}
    (tmp_path / "mine.json").write_text(json.dumps(cfg))
    try:
        assert add_model_config(tmp_path / "mine.json") == "my-elm-5s" and "my-elm-5s" in list_models()
        assert create_model("my-elm-5s").config.description == "a lab's own"
        get_config("my-elm-5s")["eeg"]["window_seconds"] = 1.0  # a copy: the registry keeps its own
        assert get_config("my-elm-5s")["eeg"]["window_seconds"] == cfg["eeg"]["window_seconds"]
    finally:
        _registry().pop("my-elm-5s", None)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ElmsearchError, match="bad.json"):
        add_model_config(tmp_path / "bad.json")


@pytest.mark.parametrize("name", list_models())
def test_every_registered_config_builds_and_encodes(name):
    torch.manual_seed(0)
    model = create_model(name)
    cfg = model.config.eeg
    n_times = int(cfg.window_seconds * cfg.sfreq)
    emb = model.encode_eeg(np.random.default_rng(0).standard_normal((3, 20, n_times)).astype(np.float32))
    assert emb.shape == (3, 256) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    raw = model.encode_eeg(np.zeros((2, 20, n_times), np.float32), normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)


def test_encoder_checks_its_input_shape():
    model = EEGResNet(n_times=500)
    with pytest.raises(ValueError, match=r"\(batch, 20, 500\)"):
        model(torch.zeros(2, 20, 400))
    with pytest.raises(ValueError):
        model(torch.zeros(2, 19, 500))


# ---- an independent forward pass, straight from the release config and tensors ---------------
def _functional_forward(state: dict, x: torch.Tensor, pools: list[int], kernels: list[int]) -> torch.Tensor:
    def bn(h, prefix):
        return F.batch_norm(h, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state.get(f"{prefix}.weight"), state.get(f"{prefix}.bias"), False, 0.0, 1e-5)

    def multiscale(h, prefix):
        outs = []
        for i, k in enumerate(kernels):
            hp = F.pad(h, (k // 2, (k - 1) // 2), mode="reflect")
            outs.append(F.conv1d(hp, state[f"{prefix}.{i}.1.weight"], state[f"{prefix}.{i}.1.bias"]))
        return torch.cat(outs, 1)

    h = F.elu(bn(multiscale(x, "conv1_layers"), "bn1"))
    for b, pool in enumerate(pools):
        p = f"res_blocks.{b}"
        out = F.elu(bn(multiscale(h, f"{p}.conv1_layers"), f"{p}.bn1"))
        out = bn(multiscale(out, f"{p}.conv2_layers"), f"{p}.bn2")
        skip = torch.cat([F.conv1d(h, state[f"{p}.stream_conv_layers.{i}.weight"],
                                   state[f"{p}.stream_conv_layers.{i}.bias"]) for i in range(len(kernels))], 1)
        h = F.max_pool1d(out + bn(skip, f"{p}.stream_bn"), pool)
    h = h.mean(-1)
    h = F.elu(bn(F.linear(h, state["proj.0.weight"], state["proj.0.bias"]), "proj.1"))
    return F.linear(h, state["proj.3.weight"])


@pytest.mark.parametrize("window", ["5s", "60s"])
def test_release_checkpoint_loads_strictly_and_matches_independent_forward(window):
    import yaml

    path = _release(window)
    model = load_model(path)
    assert model.has_text is False
    cfg = yaml.safe_load((path / "config_xy.yaml").read_text())["model"]
    n_times = int(cfg["n_time_samples"])
    assert model.n_times == n_times
    state = torch.load(path / "model_0_checkpoint.pt", map_location="cpu", weights_only=True)
    assert len(state) == 151
    x = torch.from_numpy(np.random.default_rng(42).standard_normal((4, 20, n_times)).astype(np.float32))
    ours = model.encode_eeg(x.numpy(), normalize=False)
    theirs = _functional_forward(state, x, [int(p) for p in cfg["encoder_pool_size"]],
                                 [int(p[0]) for p in cfg["encoder_conv1_params"]]).numpy()
    assert ours.shape == (4, 256)
    assert np.abs(ours - theirs).max() <= 1e-5
    with pytest.raises(NoTextModelError, match="EEG weights only"):
        model.encode_text(["normal EEG"])


def test_release_checkpoint_with_a_wrong_tensor_is_refused(tmp_path):
    path = _release("5s")
    state = torch.load(path / "model_0_checkpoint.pt", map_location="cpu", weights_only=True)
    state["proj.3.weight"] = torch.zeros(128, 512)
    torch.save(state, tmp_path / "model_0_checkpoint.pt")
    (tmp_path / "config_xy.yaml").write_text((path / "config_xy.yaml").read_text())
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model(tmp_path)


def test_load_model_rejects_other_folders(tmp_path):
    with pytest.raises(ElmsearchError, match="not a model folder"):
        load_model(tmp_path)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = create_model("elm-5s")
    save_model(model, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    again = load_model(tmp_path / "m")
    x = np.random.default_rng(1).standard_normal((2, 20, 500)).astype(np.float32)
    np.testing.assert_array_equal(model.encode_eeg(x), again.encode_eeg(x))
    assert config_hash(model) == config_hash(again)
    torch.manual_seed(2)
    assert config_hash(create_model("elm-5s")) != config_hash(model)


def test_text_side_uses_packaged_encoder_and_caches(tmp_path):
    enc = FrozenTextEncoder(cache_dir=tmp_path)
    texts = ["generalized 3 Hz spike and wave", "normal EEG", "normal EEG"]
    a = enc.embed(texts)
    assert a.shape == (3, enc.dim) and enc.dim == 384
    np.testing.assert_array_equal(a[1], a[2])
    assert not np.allclose(a[0], a[1])
    cache = next(tmp_path.glob("text-*.sqlite"))
    import sqlite3

    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT COUNT(*) FROM emb").fetchone()[0] == 2
    b = FrozenTextEncoder(cache_dir=tmp_path)
    b._encode = None  # a cache hit must not run the model
    np.testing.assert_array_equal(b.embed(texts[:2]), a[:2])


@pytest.mark.parametrize("pooling,max_length", [("mean", 128), ("cls", 16)])
def test_compiled_text_side_gives_the_eager_vectors(tmp_path, pooling, max_length):
    """The query-time ONNX language model and fast tokenizer (no transformers) reproduce the eager model."""
    from elmsearch.models.compiled import QueryModel, _export_text_lm

    eager = FrozenTextEncoder(pooling=pooling, max_length=max_length)
    eager.fast_tokenizer().save(str(tmp_path / "tokenizer.json"))
    _export_text_lm(eager, tmp_path / "lm.onnx")
    meta = {"files": {"tokenizer": str(tmp_path / "tokenizer.json"), "text_lm": str(tmp_path / "lm.onnx")},
            "text": {"pooling": pooling, "dim": eager.dim}}
    fast = QueryModel.__new__(QueryModel)  # only its text side: no heads, no EEG graph
    fast.meta, fast._text = meta, None
    texts = ["left temporal sharp waves", "Ünïcödé électro-encéphalogramme", "", "spike " * 300,
             "Impression: abnormal EEG with frequent generalized polyspikes in sleep."]
    np.testing.assert_allclose(fast._features(texts), eager._encode(texts), atol=1e-5)
    np.testing.assert_allclose(fast._features(texts[:1]), eager._encode(texts[:1]), atol=1e-5)


def test_text_pooling_is_configuration(tmp_path):
    mean = FrozenTextEncoder(pooling="mean").embed(["focal slowing over the left temporal region"])
    cls = FrozenTextEncoder(pooling="cls", max_length=80).embed(["focal slowing over the left temporal region"])
    assert mean.shape == cls.shape and not np.allclose(mean, cls)
    with pytest.raises(ValueError, match="pooling"):
        FrozenTextEncoder(pooling="max")


def test_text_model_must_be_a_local_folder(tmp_path):
    with pytest.raises(ElmsearchError, match="never downloads"):
        FrozenTextEncoder(tmp_path / "ncbi" / "MedCPT-Query-Encoder")


def test_any_local_hf_folder_works(tmp_path):
    """A copy of the packaged model in another folder is a 'local Hugging Face folder'."""
    import shutil

    from elmsearch.models import resolve_text_model

    src = resolve_text_model(None)
    dst = tmp_path / "my-clinical-bert"
    shutil.copytree(src, dst)
    model = create_model("elm-5s", text_model=dst)
    assert model.config.text.model == str(dst)
    assert model.encode_text(["spike"]).shape == (1, 256)


def test_attention_pool_weights_and_mask():
    torch.manual_seed(0)
    pool = AttentionPool(8, 4)
    z = torch.randn(2, 5, 8)
    w = pool.weights(z)
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    mask = torch.tensor([[True, True, False, False, False]] * 2)
    wm = pool.weights(z, mask)
    assert torch.all(wm[:, 2:] == 0)
    pooled = pool(z[:1, :2])
    torch.testing.assert_close(pool(z, mask)[:1], pooled)


def test_mean_pool_fallback_for_eeg_only_models():
    path = _release("5s")
    model = load_model(path)
    emb = np.random.default_rng(0).standard_normal((6, 256)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rec = model.pool_windows(emb, "attention")  # EEG-only: attention untrained -> mean
    mean = emb.mean(0) / np.linalg.norm(emb.mean(0))
    np.testing.assert_allclose(rec, mean, atol=1e-6)


def test_zero_shot_from_the_windows_finds_what_pooling_dilutes(demo_model_dir):
    """One window like a finding among many like the background: the minutes see it, pooling does not."""
    from elmsearch.models import load_model
    from elmsearch.models.zeroshot import prompt_embeddings, zero_shot, zero_shot_windows

    model = load_model(demo_model_dir)
    prompts = ["normal EEG", "generalized 3 Hz spike and wave discharges", "diffuse slowing"]
    p = prompt_embeddings(model, prompts)
    windows = np.stack([p[0]] * 19 + [p[1]])
    pooled = windows.mean(0) / np.linalg.norm(windows.mean(0))
    from_pool = zero_shot(model, pooled, prompts)
    from_windows = zero_shot_windows(model, windows, prompts)
    assert from_windows.shape == (3,) and np.all((from_windows >= 0) & (from_windows <= 1))
    # each window classified (the softmax over the prompts), then each finding's best window, the
    # background's worst: it must hold throughout
    logits = windows @ p.T / model.temperature
    per_window = np.exp(logits - logits.max(1, keepdims=True))
    per_window /= per_window.sum(1, keepdims=True)
    np.testing.assert_allclose(from_windows[1:], per_window[:, 1:].max(0), rtol=1e-5)
    assert from_windows[0] == pytest.approx(per_window[:, 0].min(), rel=1e-5)
    assert from_windows[1] > from_pool[1] + 0.05 and from_windows[1] > from_windows[2]
    # two prompts: the scores are exclusive and sum to 1, at any percentile
    for q in (100, 90, 50):
        two = zero_shot_windows(model, windows, prompts[:2], percentile=q)
        assert two.sum() == pytest.approx(1.0, abs=1e-6)
    # a recording of background alone: the finding stays low
    calm = zero_shot_windows(model, np.stack([p[0]] * 20), prompts[:2])
    assert calm[1] < from_windows[1] and calm[0] > calm[1]
    # half the windows are not enough for an intermittent finding
    median = zero_shot_windows(model, windows, prompts[:2], percentile=50)
    assert median[0] > median[1]
    with pytest.raises(ValueError, match="percentile"):
        zero_shot_windows(model, windows, prompts, percentile=101)
    with pytest.raises(ValueError, match="two prompts"):
        zero_shot_windows(model, windows, prompts[:1])


def test_classify_recording_names_the_window_behind_each_score(demo_model_dir):
    """The spike-and-wave window is the one behind the finding's score, wherever it lies."""
    from elmsearch.models import load_model
    from elmsearch.models.zeroshot import classify_recording, prompt_embeddings, zero_shot, zero_shot_windows

    model = load_model(demo_model_dir)
    prompts = ["normal EEG", "generalized 3 Hz spike and wave discharges"]
    p = prompt_embeddings(model, prompts)
    for at in (0, 7, 19):
        windows = np.stack([p[0]] * 20)
        windows[at] = p[1]
        pooled = windows.mean(0) / np.linalg.norm(windows.mean(0))
        spans = [(5.0 * i, 5.0 * i + 5) for i in range(20)]
        res = classify_recording(model, pooled, windows, spans, prompts)
        assert res.spans[1] == (5.0 * at, 5.0 * at + 5) and res.spans[0] == res.spans[1]
        np.testing.assert_allclose(res.probabilities, zero_shot(model, pooled, prompts), rtol=1e-5)
        np.testing.assert_allclose(res.minutes, zero_shot_windows(model, windows, prompts), rtol=1e-5)
        assert res.percentile == 100
    with pytest.raises(ValueError, match="spans"):
        classify_recording(model, pooled, windows, spans[:3], prompts)
