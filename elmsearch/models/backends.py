"""Compiled inference backends for the frozen EEG encoder: ONNX Runtime and OpenVINO.

Training stays in torch; these only run ``model.eeg`` forward for inference. The encoder
is exported once per machine with ``torch.onnx.export`` (dynamic batch axis) and the
artefacts live in ``$ELMSEARCH_CACHE_DIR/eeg-backends`` (default ``~/.cache/elmsearch``,
see ``elmsearch.cache.machine_cache_dir``), keyed by ``config_hash(model)`` + backend name
+ backend version + precision, written atomically with mode 0600:

- ``{hash}-torch{version}.onnx``: the export (what both backends read);
- ``{hash}-onnxruntime{version}-fp32.onnx``: ONNX Runtime's optimised graph;
- ``{hash}-openvino{version}-{precision}.xml/.bin``: the OpenVINO IR;
- ``{hash}.json``: per artefact its SHA-256 and its check against torch, and the ``auto``
  choice per (precision, threads, installed engines and their versions).

When a backend is built it is checked against torch fp32 on a fixed seeded batch (64
random windows clipped to +-80, like real input): every row's cosine must be at least
``MIN_COSINE``, else it is discarded with one warning and torch is used. A cache file
that does not match its recorded SHA-256, or does not load, is rebuilt once; if that
fails too, torch is used. ``auto`` measures each verified backend on a few batches, in
``AUTO_ROUNDS`` interleaved rounds keeping each engine's best (a busy spell slows a round, not
an engine), and records the fastest; installing, removing or upgrading an engine changes the
record's key (``engines_key``), so ``auto`` measures again.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import time
import warnings
import weakref
from pathlib import Path

import numpy as np

from elmsearch.cache import machine_cache_dir
from elmsearch.models.identity import config_hash, resolve_precision

# torch is imported where used: a query served by the compiled query model never imports it
# (elmsearch.models.compiled reads this cache).

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
MIN_COSINE = 0.9999
VERIFY_WINDOWS = 64
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_counters = {"export": 0, "build": 0}  # exports and backend builds in this process (tests)
_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(name, precision, threads): ...}


def cache_folder() -> Path:
    """Folder of the per-machine compiled EEG encoders."""
    return machine_cache_dir() / "eeg-backends"


def installed() -> list[str]:
    """Backends usable here: torch always, the others when their package imports."""
    return ["torch"] + [n for n, pkg in _PACKAGES.items() if importlib.util.find_spec(pkg) is not None]


def engines_key() -> str:
    """The installed engines and their versions, as read from package metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name, pkg in {"torch": "torch", **_PACKAGES}.items():
        try:
            parts.append(f"{name}={version(pkg)}")
        except PackageNotFoundError:
            continue
    return ",".join(parts)


def backend_version(name: str) -> str:
    """Version of a backend's package."""
    if name == "torch":
        import torch

        return torch.__version__.split("+")[0]
    if name == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    import openvino

    return openvino.__version__.split("-")[0]


def verify_windows(n_chans: int, n_times: int, n: int = VERIFY_WINDOWS, seed: int = 0) -> np.ndarray:
    """The fixed check batch: seeded random windows clipped to +-80, shape (n, n_chans, n_times).

    Gaussian with standard deviation 3, three times that of real preprocessed EEG (volts x 1e5:
    about 1 on EEGMAT), so bfloat16 is checked on larger inputs than it meets in practice.
    """
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal((n, n_chans, n_times)) * 3.0, -80, 80).astype(np.float32)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``, shape (n,)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def torch_fp32(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Eager torch fp32 embeddings (unnormalised), the reference, shape (n, 256)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return np.concatenate([model.eeg(torch.as_tensor(x[i : i + batch_size], device=model.device))
                                   .float().cpu().numpy() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


# ---- files -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _atomic(path: Path):
    """Yield a temporary name beside ``path``; on success make it 0600 and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_record(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def _update_record(path: Path, update) -> dict:
    rec = _read_record(path)
    update(rec)
    with _atomic(path) as tmp:
        tmp.write_text(json.dumps(rec, indent=1, sort_keys=True))
    return rec


def export_onnx(model, path: Path) -> Path:
    """Export ``model.eeg`` (eval, fp32, CPU) to ONNX with a dynamic batch axis, atomically."""
    import torch

    eeg = copy.deepcopy(model.eeg).float().cpu().eval()
    x = torch.zeros(2, eeg_n_chans(model), model.n_times)
    kwargs = dict(input_names=["windows"], output_names=["emb"],
                  dynamic_axes={"windows": {0: "n"}, "emb": {0: "n"}})
    with _atomic(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if importlib.util.find_spec("onnxscript") is not None:  # the default (dynamo) exporter
            try:
                torch.onnx.export(eeg, (x,), str(tmp), **kwargs)
            except Exception as e:  # noqa: BLE001 - the TorchScript exporter is the fallback
                logger.info("dynamo ONNX export failed (%s); using the TorchScript exporter", e)
                torch.onnx.export(eeg, (x,), str(tmp), dynamo=False, opset_version=17, **kwargs)
        else:
            torch.onnx.export(eeg, (x,), str(tmp), dynamo=False, opset_version=17, **kwargs)
    _counters["export"] += 1
    return path


def eeg_n_chans(model) -> int:
    """Input channels of the EEG encoder."""
    return int(model.config.eeg.n_chans)


# ---- encoders --------------------------------------------------------------------------------
class Encoder:
    """One way of running the EEG encoder forward.

    Attributes
    ----------
    name : str
        ``torch``, ``onnxruntime`` or ``openvino``.
    precision : str
        ``fp32`` or ``bf16`` (what the backend computes in).
    threads : int
        Intra-op threads.
    min_cosine : float | None
        Lowest per-row cosine to torch fp32 on the check batch (None for torch).
    """

    def __init__(self, name: str, precision: str, threads: int, min_cosine: float | None = None):
        self.name, self.precision, self.threads, self.min_cosine = name, precision, threads, min_cosine

    @property
    def engine(self) -> str:
        """Engine and precision in at most 8 characters, e.g. ``ort-fp32`` (stored by an index run)."""
        short = {"torch": "", "onnxruntime": "ort-", "openvino": "ov-"}[self.name]
        return f"{short}{self.precision}"

    def __repr__(self) -> str:
        return f"Encoder({self.name}, {self.precision}, threads={self.threads})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Unnormalised embeddings of windows, float32, shape (n, 256)."""
        raise NotImplementedError


class TorchEncoder(Encoder):
    """Eager torch (``ELMModel.encode_eeg`` runs it itself; this one serves benchmarks)."""

    def __init__(self, model, precision: str, threads: int):
        super().__init__("torch", precision, threads)
        self._model = weakref.ref(model)  # memoised encoders must not keep their model alive

    def __call__(self, x):  # noqa: D102
        import torch

        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self._model().eeg(torch.as_tensor(x)).float().numpy()


class OrtEncoder(Encoder):
    """ONNX Runtime, CPU execution provider."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        super().__init__("onnxruntime", "fp32", threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):  # noqa: D102
        return self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})[0]


class OpenVinoEncoder(Encoder):
    """OpenVINO on the CPU plugin with an inference precision hint (``f32`` or ``bf16``)."""

    def __init__(self, path: Path, precision: str, threads: int):
        import openvino

        super().__init__("openvino", precision, threads)
        core = openvino.Core()
        self.compiled = core.compile_model(
            core.read_model(str(path)), "CPU",
            {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
             "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x):  # noqa: D102
        self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(self.request.get_output_tensor(0).data, np.float32)


# ---- building ---------------------------------------------------------------------------------
def _onnx(model, key: str, folder: Path) -> Path:
    path = folder / f"{key}-torch{backend_version('torch')}.onnx"
    if not path.is_file():
        export_onnx(model, path)
    return path


def _artefact(name: str, precision: str, key: str, folder: Path) -> Path:
    suffix = ".xml" if name == "openvino" else ".onnx"
    return folder / f"{key}-{name}{backend_version(name)}-{precision}{suffix}"


def _write_artefact(model, name: str, precision: str, key: str, folder: Path, path: Path) -> None:
    src = _onnx(model, key, folder)
    if name == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        with _atomic(path) as tmp:
            so.optimized_model_filepath = str(tmp)
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    else:
        import openvino

        ov_model = openvino.Core().read_model(str(src))
        with tempfile.TemporaryDirectory(dir=folder, prefix=".ov-") as tmp:
            xml = Path(tmp) / path.name
            openvino.save_model(ov_model, str(xml), compress_to_fp16=False)
            for p in (xml.with_suffix(".bin"), xml):  # weights first: an .xml is never without its .bin
                os.chmod(p, 0o600)
                os.replace(p, path.with_suffix(p.suffix))


def _open(name: str, path: Path, precision: str, threads: int) -> Encoder:
    return OrtEncoder(path, threads) if name == "onnxruntime" else OpenVinoEncoder(path, precision, threads)


def _files(path: Path) -> list[Path]:
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def _digest(path: Path) -> str:
    return "+".join(_sha256(p) for p in _files(path))


def _check(model, enc: Encoder) -> float:
    x = verify_windows(eeg_n_chans(model), model.n_times)
    ref = torch_fp32(model, x)
    got = np.concatenate([enc(x[i : i + 32]) for i in range(0, len(x), 32)])
    return float(row_cosine(ref, got).min()) if np.isfinite(got).all() else float("nan")


def build(model, name: str, precision: str = "fp32", threads: int | None = None) -> Encoder | None:
    """A verified compiled encoder, from the cache or built now; None when it cannot be had.

    Parameters
    ----------
    model : ELMModel
    name : {"onnxruntime", "openvino"}
    precision : {"fp32", "bf16"}
        ONNX Runtime always computes in fp32; OpenVINO takes it as its inference precision hint.
    threads : int | None
        Intra-op threads (default: torch's current setting).

    Returns
    -------
    Encoder | None
        None (after one logged warning when it is new) if the package is missing, the
        export or compile fails, or the result is further than ``MIN_COSINE`` from torch fp32.
    """
    if name not in _PACKAGES or name not in installed():
        return None
    if name == "onnxruntime":
        precision = "fp32"
    threads = int(threads or _torch_threads())
    folder = cache_folder()
    key = config_hash(model)
    record_path = folder / f"{key}.json"
    path = _artefact(name, precision, key, folder)
    entry = path.name
    rec = _read_record(record_path).get("artefacts", {}).get(entry)
    if rec is not None and not rec.get("ok"):
        logger.info("EEG encoder backend %s/%s failed its check on this machine earlier (%s); using torch",
                    name, precision, rec.get("reason", "?"))
        return None
    for attempt in range(2):
        try:
            fresh = rec is None or attempt > 0 or not all(p.is_file() for p in _files(path))
            if not fresh and _digest(path) != rec.get("sha256"):
                raise ValueError("cache file does not match its recorded SHA-256")
            if fresh:
                _write_artefact(model, name, precision, key, folder, path)
                _counters["build"] += 1
            enc = _open(name, path, precision, threads)
            if fresh:
                enc.min_cosine = _check(model, enc)
                ok = enc.min_cosine >= MIN_COSINE
                reason = None if ok else f"min cosine to torch fp32 {enc.min_cosine:.6f} < {MIN_COSINE}"
                digest = _digest(path)

                def put(r, ok=ok, reason=reason, digest=digest, cos=enc.min_cosine):
                    r.setdefault("artefacts", {})[entry] = {
                        "ok": ok, "sha256": digest, "min_cosine": None if np.isnan(cos) else cos,
                        "reason": reason, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

                _update_record(record_path, put)
                if not ok:
                    logger.warning("EEG encoder backend %s/%s discarded: %s; using torch", name, precision, reason)
                    return None
            else:
                enc.min_cosine = rec.get("min_cosine")
            return enc
        except Exception as e:  # noqa: BLE001 - any failure means torch, never a crash
            for p in _files(path):
                with contextlib.suppress(OSError):
                    p.unlink()
            if attempt == 0 and rec is not None:
                logger.info("EEG encoder backend %s/%s: cache unusable (%s); rebuilding", name, precision, e)
                continue
            logger.warning("EEG encoder backend %s/%s unavailable (%s: %s); using torch",
                           name, precision, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
    return None


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


AUTO_ROUNDS = 3  # interleaved measurements of every engine by ``choose_auto``; each keeps its best


def throughput(enc, x: np.ndarray, batch_size: int = 32, repeats: int = 1) -> float:
    """Windows per second of ``enc`` over ``x`` in batches (after one warm-up batch)."""
    enc(x[:batch_size])
    t0 = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(x), batch_size):
            enc(x[i : i + batch_size])
    return repeats * len(x) / (time.perf_counter() - t0)


def choose_auto(model, precision: str = "fp32", threads: int | None = None) -> Encoder:
    """The fastest verified backend on this machine (measured once, then read from the cache).

    With ``precision="bf16"`` the fp32 variants compete too (they are at least as accurate):
    on a CPU whose bfloat16 is slow, fp32 wins.
    """
    precision = resolve_precision(precision)
    threads = int(threads or _torch_threads())
    record_path = cache_folder() / f"{config_hash(model)}.json"
    slot = f"{precision}-{threads}t-{engines_key()}"  # a new engine, or a new version of one: measured again
    choice = _read_record(record_path).get("auto", {}).get(slot)
    precisions = ["fp32", "bf16"] if precision == "bf16" else ["fp32"]
    candidates = {f"torch/{p}": TorchEncoder(model, p, threads) for p in precisions}
    for name in _PACKAGES:
        for p in precisions if name == "openvino" else ["fp32"]:
            if choice is None or choice == f"{name}/{p}":
                enc = build(model, name, p, threads)
                if enc is not None:
                    candidates[f"{name}/{p}"] = enc
    if choice in candidates:
        return candidates[choice]
    if model.device.type != "cpu":
        return candidates[f"torch/{precision}"]
    x = verify_windows(eeg_n_chans(model), model.n_times, n=96, seed=1)
    speed = {}
    import torch

    with torch.no_grad():
        prev = model.training
        model.eval()
        try:  # interleaved rounds, the best of each: a busy spell slows one round, not one engine
            for _ in range(AUTO_ROUNDS):
                for key, enc in candidates.items():
                    speed[key] = max(speed.get(key, 0.0), throughput(enc, x))
        finally:
            model.train(prev)
    best = max(speed, key=speed.get)
    logger.info("EEG encoder backend auto (%s, %d threads): %s (%s windows/s)", precision, threads, best,
                ", ".join(f"{k} {v:.0f}" for k, v in speed.items()))

    def put(r):
        r.setdefault("auto", {})[slot] = best
        r.setdefault("speed", {})[slot] = {k: round(v, 1) for k, v in speed.items()}

    _update_record(record_path, put)
    return candidates[best]


def get_encoder(model, name: str = "torch", precision: str = "fp32", threads: int | None = None) -> Encoder:
    """The encoder ``ELMModel.encode_eeg`` runs: ``name`` if it verifies here, else torch.

    Parameters
    ----------
    model : ELMModel
    name : {"auto", "torch", "onnxruntime", "openvino"}
        ``auto``: the fastest verified backend on this machine for ``precision``.
    precision : {"fp32", "bf16", "auto"}
        Numeric precision asked for (see ``ELMModel.encode_eeg``).
    threads : int | None
        Intra-op threads (default: torch's current setting).

    Returns
    -------
    Encoder
        Memoised on the model per (name, precision, threads) until its weights change.
    """
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"backend must be auto, torch, onnxruntime or openvino, got {name!r}")
    precision = resolve_precision("fp32" if precision == "auto" and model.device.type != "cpu" else precision)
    threads = int(threads or _torch_threads())
    if name == "torch" or model.device.type != "cpu":
        return TorchEncoder(model, precision, threads)
    stamp = tuple((t.data_ptr(), t._version) for t in model.eeg.state_dict(keep_vars=True).values())
    memo = _memo.setdefault(model, {})
    k = (name, precision, threads)
    if k in memo and memo[k][0] == stamp:
        return memo[k][1]
    if name == "auto":
        enc = choose_auto(model, precision, threads)
    else:
        enc = build(model, name, precision, threads)
        if enc is None and name == "openvino" and precision == "bf16":
            enc = build(model, name, "fp32", threads)
        enc = enc or TorchEncoder(model, precision, threads)
    memo[k] = (stamp, enc)
    return enc
