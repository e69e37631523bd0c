"""The compiled query model: a trained model's inference twin in ONNX Runtime and numpy, no torch.

A query command spends most of its cold start importing torch (~1 s on 2 cores) and
loading the model; the frozen encoders need neither. ``write_query_model(model)`` (the
indexer calls it at the end of a run) writes, once per machine and model:

- the language model as ONNX (``torch.onnx.export``; token states, pooled in numpy), shared
  by every model with the same text encoder, and its ``tokenizers`` tokenizer configured as
  ``transformers`` configures it;
- the EEG encoder: the ONNX Runtime artefact of ``elmsearch.models.backends`` (same cache);
- the small heads in numpy (``heads.npz``): the text projection with its batch norms folded
  into the linear layers, the gated-attention MIL pooler and the temperature.

Everything is checked against the torch model when written: every probe text and every
check window must reach cosine >= ``backends.MIN_COSINE`` to torch fp32, else nothing is
kept and queries use torch. ``QueryModel.load(model_hash)`` opens it in ~0.1 s and serves
``encode_text``, ``encode_eeg`` and ``pool_windows`` like ``ELMModel``, with the same
text-feature cache (``elmsearch.models.textcache``). A file that changed since it was
written (size or modification time), or a model folder whose weights changed, makes
``load`` return None.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from elmsearch.cache import machine_cache_dir
from elmsearch.models import backends
from elmsearch.models.backends import MIN_COSINE, row_cosine, verify_windows
from elmsearch.models.config import ModelCfg
from elmsearch.models.identity import config_hash
from elmsearch.models.protocol import ModelParts
from elmsearch.models.spectral import spectral_profile
from elmsearch.models.textcache import cached_embed, open_cache

logger = logging.getLogger(__name__)

FOLDER = "query-models"  # inside machine_cache_dir()
FORMAT = 2
PROBE_TEXTS = (  # a padded batch, short, long and truncated texts check the compiled text side
    "Generalized 3 Hz spike-and-wave discharges during hyperventilation.",
    "Normal awake EEG.",
    "Impression: abnormal EEG due to intermittent left temporal slowing; clinical correlation is advised.",
    "the posterior dominant rhythm is 9 hz, reactive to eye opening " * 40,
    "",
)


def query_folder(model_hash: str) -> Path:
    """Where the compiled query model of ``model_hash`` lives."""
    return machine_cache_dir() / FOLDER / model_hash


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _weights_stamp(model_path: str | os.PathLike | None) -> dict:
    """(size, mtime) of a model folder's config and weight files: changes when the model is replaced."""
    if not model_path or not Path(model_path).is_dir():
        return {}
    return {p.name: _stamp(p) for p in sorted(Path(model_path).iterdir())
            if p.is_file() and not p.name.startswith(".")}


def _normalize(z: np.ndarray) -> np.ndarray:
    return (z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)).astype(np.float32, copy=False)


def _session(path: Path, threads: int):
    """A CPU session of an already optimised graph (both graphs here are saved optimised)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class QueryModel(ModelParts):
    """A trained model's frozen inference path without torch (see the module notes).

    Use ``QueryModel.load``. An ``EmbeddingModel`` (``elmsearch.models.protocol``), as ``ELMModel``.
    """

    backend = "onnxruntime"

    def __init__(self, folder: Path, meta: dict, cache_dir: str | os.PathLike | None = None):
        self.folder, self.meta = folder, meta
        self.config = ModelCfg.from_dict(meta["config"])
        self.has_text = bool(meta["has_text"])
        self.temperature = float(meta["temperature"])
        self.cache_dir = cache_dir
        with np.load(folder / "heads.npz") as z:
            self.heads = {k: z[k] for k in z.files}
        self._text = self._eeg = None
        self._db = open_cache(cache_dir, meta["text"]["key"]) if self.has_text else None  # file, memory or None

    @classmethod
    def load(cls, model_hash: str, model_path: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None) -> QueryModel | None:
        """The compiled query model of ``model_hash``, or None when there is no usable one.

        Parameters
        ----------
        model_hash : str
            ``config_hash`` of the model (an index manifest's ``model_hash``).
        model_path : path-like | None
            The model folder it was written from; its config and weight files must be as
            they were then (None: not checked).
        cache_dir : path-like | None
            Folder of the text-feature cache (an index's ``cache``); ``textcache.MEMORY``: an
            in-memory LRU (nothing written); None: no cache.
        """
        if not _ort_installed():
            return None
        folder = query_folder(model_hash)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            files = {name: Path(p) for name, p in meta["files"].items()}
            if meta.get("format") != FORMAT or meta.get("model_hash") != model_hash:
                return None
            files["heads"] = folder / "heads.npz"
            if any(_stamp(p) != meta["stamps"][name] for name, p in files.items()):
                logger.info("compiled query model %s: a file changed since it was written; using torch", model_hash)
                return None
            if model_path is not None and _weights_stamp(model_path) != meta["model_stamp"]:
                return None
            return cls(folder, meta, cache_dir)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # ---- text -----------------------------------------------------------------------------
    def _text_parts(self):
        if self._text is None:
            from tokenizers import Tokenizer

            files = self.meta["files"]
            self._text = (Tokenizer.from_file(files["tokenizer"]), _session(Path(files["text_lm"]), 1))
        return self._text

    def _features(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Pooled language-model features, shape (n_texts, text_dim) (what the torch encoder caches)."""
        tokenizer, session = self._text_parts()
        pooling = self.meta["text"]["pooling"]
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer.encode_batch(texts[i : i + batch_size])
            ids = np.array([e.ids for e in enc], np.int64)
            mask = np.array([e.attention_mask for e in enc], np.int64)
            states = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if pooling == "cls":
                out.append(states[:, 0])
            else:
                m = mask[..., None].astype(np.float32)
                out.append((states * m).sum(1) / np.maximum(m.sum(1), 1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.meta["text"]["dim"]), np.float32)

    def project_text(self, feats: np.ndarray) -> np.ndarray:
        """The trained projection (batch norms folded), shape (n, 256), not normalised."""
        h = self.heads
        return np.maximum(feats @ h["proj_w1"].T + h["proj_b1"], 0) @ h["proj_w2"].T + h["proj_b2"]

    def encode_text(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """Embed texts, shape (n_texts, 256), float32, like ``ELMModel.encode_text``."""
        self.require_text()
        texts = [texts] if isinstance(texts, str) else list(texts)
        feats = cached_embed(texts, self._db, self._features, int(self.meta["text"]["dim"]))
        z = self.project_text(feats.astype(np.float32))
        return _normalize(z) if normalize else z.astype(np.float32)

    # ---- EEG ------------------------------------------------------------------------------
    def encode_eeg(self, windows, normalize: bool = True, batch_size: int = 32, precision: str = "fp32",
                   backend: str | None = None) -> np.ndarray:
        """Embed EEG windows (n_windows, 20, n_times) → (n_windows, 256) with ONNX Runtime fp32.

        ``precision`` and ``backend`` are accepted for ``ELMModel.encode_eeg``'s signature;
        this model always runs its verified fp32 ONNX Runtime graph.
        """
        if self._eeg is None:
            self._eeg = _session(Path(self.meta["files"]["eeg"]), max(1, os.cpu_count() or 1))
        name = self._eeg.get_inputs()[0].name
        out = [self._eeg.run(None, {name: np.ascontiguousarray(windows[i : i + batch_size], np.float32)})[0]
               for i in range(0, len(windows), batch_size)]
        z = np.concatenate(out) if out else np.zeros((0, self.config.eeg.out_dim), np.float32)
        return _normalize(z) if normalize else z.astype(np.float32)

    def spectral_profile(self, windows, index: np.ndarray | None = None) -> np.ndarray:
        """As ``ELMModel.spectral_profile``, from the arrays in ``heads.npz``."""
        arrays = {k.removeprefix("spectral."): v for k, v in self.heads.items() if k.startswith("spectral.")}
        if not arrays:
            raise ValueError("this model's EEG encoder has no spectral view")
        return spectral_profile(windows, arrays, self.config.eeg.out_dim, index)

    def pool_windows(self, window_emb: np.ndarray, pooling: str = "attention", normalize: bool = True) -> np.ndarray:
        """Recording embedding from window embeddings, like ``ELMModel.pool_windows``."""
        z = np.asarray(window_emb, np.float32)
        if pooling == "attention" and self.has_text:
            h = self.heads
            v = np.tanh(z @ h["pool_v_w"].T + h["pool_v_b"])
            u = 1.0 / (1.0 + np.exp(-(z @ h["pool_u_w"].T + h["pool_u_b"])))
            logits = ((v * u) @ h["pool_w_w"].T)[:, 0]
            a = np.exp(logits - logits.max())
            pooled = (a / a.sum()) @ z
        elif pooling in {"attention", "mean"}:
            pooled = z.mean(0)
        else:
            raise ValueError(f"pooling must be 'attention' or 'mean', got {pooling!r}")
        return _normalize(pooled) if normalize else pooled.astype(np.float32)


def _ort_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("tokenizers") is not None


# ---- writing (needs torch) -------------------------------------------------------------------
def _heads(model) -> dict[str, np.ndarray]:
    """The projection with eval-mode batch norms folded into the linear layers, and the pooler."""
    import torch

    def fold(linear, bn):
        scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        w = linear.weight * scale[:, None]
        b = (linear.bias - bn.running_mean) * scale + shift
        return w.detach().double().numpy(), b.detach().double().numpy()

    layers = model.text_proj.layers
    w1, b1 = fold(layers[0], layers[1])
    w2, b2 = fold(layers[3], layers[4])
    p = model.pool
    out = {"proj_w1": w1, "proj_b1": b1, "proj_w2": w2, "proj_b2": b2,
           "pool_v_w": p.V.weight, "pool_v_b": p.V.bias, "pool_u_w": p.U.weight, "pool_u_b": p.U.bias,
           "pool_w_w": p.w.weight}
    if model.eeg.spectral is not None:
        from elmsearch.models.spectral_view import spectral_arrays

        out.update({f"spectral.{k}": v for k, v in spectral_arrays(model.eeg.spectral).items()})
    return {k: v if k == "spectral.shape" else
            np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32) for k, v in out.items()}


def _export_text_lm(encoder, path: Path) -> None:
    """Export the language model's token states to ONNX (dynamic batch and length), atomically."""
    import warnings

    import torch

    encoder._load()
    lm = encoder._model

    class _States(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_States().eval(), (ids, mask), tmp, dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], output_names=["states"],
                              dynamic_axes={"input_ids": {0: "n", 1: "len"}, "attention_mask": {0: "n", 1: "len"},
                                            "states": {0: "n", 1: "len"}})
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _optimised(src: Path) -> Path:
    """ONNX Runtime's optimised graph of ``src`` (``ORT_ENABLE_EXTENDED``: portable), written once.

    Loading it with optimisations off saves ~30 ms per cold query, and it runs ~10% faster.
    """
    import onnxruntime as ort

    path = src.with_name(f"{src.stem}-onnxruntime{backends.backend_version('onnxruntime')}.onnx")
    if not path.is_file():
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.log_severity_level = 3
        with backends._atomic(path) as tmp:
            so.optimized_model_filepath = str(tmp)
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return path


def write_query_model(model, model_path: str | os.PathLike | None = None) -> Path | None:
    """Write (once per machine) the compiled query model of ``model``; its folder, or None.

    Needs torch, ONNX Runtime and ``tokenizers``. Returns None (after one logged line) when
    any part cannot be exported or does not reproduce the torch model (see the module notes).
    """
    if not _ort_installed():
        return None
    key = config_hash(model)
    folder = query_folder(key)
    if QueryModel.load(key, model_path) is not None:
        return folder
    try:
        if backends.build(model, "onnxruntime", "fp32") is None:
            logger.info("compiled query model %s: the EEG encoder did not verify in ONNX Runtime", key)
            return None
        files = {"eeg": str(backends._artefact("onnxruntime", "fp32", key, backends.cache_folder()))}
        text = {}
        if model.has_text:
            te = model.text_encoder
            tokenizer = te.fast_tokenizer()
            if tokenizer is None:
                logger.info("compiled query model %s: the text model has no fast tokenizer", key)
                return None
            lm = machine_cache_dir() / f"text-{te.key}-lm-torch{backends.backend_version('torch')}.onnx"
            tok = lm.with_suffix(".tokenizer.json")
            if not (lm.is_file() and tok.is_file()):
                lm.parent.mkdir(parents=True, exist_ok=True)
                tokenizer.save(str(tok))
                os.chmod(tok, 0o600)
                _export_text_lm(te, lm)
            lm = _optimised(lm)
            files.update(text_lm=str(lm), tokenizer=str(tok))
            text = {"key": te.key, "pooling": te.pooling, "dim": te.dim, "max_length": te.max_length}
        meta = {"format": FORMAT, "model_hash": key, "config": model.config.to_dict(), "has_text": model.has_text,
                "temperature": model.temperature, "text": text, "files": files,
                "model_stamp": _weights_stamp(model_path),
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
        try:
            np.savez(tmp / "heads.npz", **_heads(model))
            meta["stamps"] = {name: _stamp(Path(p)) for name, p in files.items()}
            meta["stamps"]["heads"] = _stamp(tmp / "heads.npz")  # os.replace of the folder keeps it
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            worst = _check(model, QueryModel(tmp, meta), PROBE_TEXTS)
            if not worst >= MIN_COSINE:
                logger.warning("compiled query model %s discarded: min cosine to torch %.6f < %s; queries use torch",
                               key, worst, MIN_COSINE)
                return None
            for p in tmp.iterdir():
                os.chmod(p, 0o600)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception as err:  # noqa: BLE001 - queries fall back to torch; never a failed index run
        logger.warning("compiled query model %s not written (%s: %s); queries use torch", key,
                       type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        return None
    logger.info("compiled query model %s written to %s (min cosine to torch %.6f)", key, folder, worst)
    return folder


def _check(model, qm: QueryModel, texts) -> float:
    """Lowest cosine between ``qm`` and the torch ``model`` over probe texts, windows and pooling."""
    x = verify_windows(model.config.eeg.n_chans, model.n_times, n=16)
    worst = float(row_cosine(model.encode_eeg(x, backend="torch"), qm.encode_eeg(x)).min())
    emb = model.encode_eeg(x, backend="torch")
    for pooling in ("attention", "mean"):
        worst = min(worst, float(row_cosine(model.pool_windows(emb, pooling)[None],
                                            qm.pool_windows(emb, pooling)[None]).min()))
    if model.has_text:
        texts = list(texts)
        worst = min(worst, float(row_cosine(model.encode_text(texts), qm.encode_text(texts)).min()))
        for t in texts:  # unpadded, one at a time: how a query runs
            worst = min(worst, float(row_cosine(model.encode_text([t]), qm.encode_text([t])).min()))
    return worst
