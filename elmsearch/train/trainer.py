"""Contrastive training of the EEG-language model on an archive of EDFs with reports.

Recipe (ELM, Gijsen & Ritter 2025): for each recording sample up to ``mil.max_eeg``
windows and ``mil.max_text`` report segments; every window and segment of the same
recording is a positive; symmetric multiple-instance InfoNCE at temperature 0.3.
On top, the attention-MIL pooler is trained with a recording-level InfoNCE between
the pooled windows and the mean of the report's segments.

Validation is by patient (never the same patient in both splits); early stopping on
validation text-to-EEG mean reciprocal rank. Runs are seeded: per-epoch sampling
uses ``numpy.random.default_rng([seed, epoch])``, so a resumed run continues exactly.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from elmsearch.archive.discovery import discover, load_report_text
from elmsearch.errors import ElmsearchError, RecordingError, ReportError
from elmsearch.io.events import event_windows, read_events
from elmsearch.io.window_store import WindowStore
from elmsearch.io.windowed import WindowedRecording, WindowFile
from elmsearch.models.factory import save_model
from elmsearch.models.identity import resolve_device
from elmsearch.models.model import ELMModel
from elmsearch.signal.preprocessing import PreprocessingParams
from elmsearch.text.report import parse_report
from elmsearch.train.loss import clip_loss, mil_infonce
from elmsearch.train.metrics import retrieval_metrics, same_patient_recall

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainItem:
    """One recording ready for training.

    Attributes
    ----------
    key : str
        ``subject/session/montage/token``.
    patient : str
        Grouping for the patient-level split.
    windows : array of float16, shape (n_windows, 20, n_times), or a ``WindowFile`` of them
        (``WindowStore``): anything that gives arrays for ``windows[i:j]`` and ``windows[rows]``
    segments : list of str
        Report segments (heading prepended).
    path : str
    events : list of (int, str)
        Window-level pairs: a window index and the text of an event it lies in
        (``elmsearch.io.events``: what a technologist marked, e.g. "sleep spindle").
    """

    key: str
    patient: str
    windows: np.ndarray
    segments: list[str]
    path: str
    events: list[tuple[int, str]] = dataclasses.field(default_factory=list)


EVENT_WEIGHT = 0.5
"""Weight of the window-level event pairs beside the report MIL loss (``TrainConfig.event_weight``);
chosen on held-out demo patients (``bench/eval_events.py``; docs/benchmarks.md, "Events")."""

@dataclasses.dataclass
class TrainConfig:
    """Options of ``train``; every field is written to the training log."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_eeg: int | None = None
    max_text: int | None = None
    val_fraction: float = 0.2
    patience: int = 5
    seed: int = 0
    freeze_eeg: bool = False
    freeze_eeg_epochs: int = 0
    pool_weight: float = 0.5
    device: str = "auto"
    val_max_windows: int = 64
    event_weight: float = EVENT_WEIGHT
    max_events: int = 8
    bf16: bool = True  # on CUDA: forward passes under bfloat16 autocast (never on a CPU)
    loader_workers: int = 2  # threads that read the next batches' windows while this one trains
    prefetch: int = 2  # batches read ahead


RECIPES: dict[str, dict] = {
    # the EEG trunk frozen and run once; projections, pooler (and temperature) train: seconds on a CPU
    "heads": dict(epochs=40, batch_size=8, max_eeg=32, lr=2e-3, patience=10, freeze_eeg=True),
    # heads first, then the whole encoder at a low learning rate (early stopping on held-out patients)
    "finetune": dict(epochs=30, batch_size=8, max_eeg=16, lr=5e-4, patience=8, freeze_eeg_epochs=5),
    # every layer from the first epoch (large archives)
    "full": dict(epochs=20, batch_size=16, lr=1e-3, patience=5),
}
"""Named training recipes (``TrainConfig`` fields); ``elmsearch train --recipe``. How they
compare is measured by ``bench/cv_recipe.py`` (patient-grouped cross-validation)."""


def recipe_config(name: str = "heads", seed: int = 0, device: str = "auto", **overrides) -> TrainConfig:
    """The ``TrainConfig`` of a recipe, with ``overrides`` (fields that are not None) on top."""
    if name not in RECIPES:
        raise ElmsearchError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], "seed": seed, "device": device,
                          **{k: v for k, v in overrides.items() if v is not None}})


SMALL_ARCHIVE = 1000
"""Below this many recordings with reports, ``choose_recipe`` trains the heads only."""


def choose_recipe(n_recordings: int, init: bool) -> str:
    """The recipe ``elmsearch train --recipe auto`` uses.

    Small archives (fewer than ``SMALL_ARCHIVE`` recordings with reports) train the heads on
    a frozen encoder (``heads``), with or without released weights: on EEGMAT's 12 held-out
    subjects, fine-tuning the ELM trunk on 24 subjects lowered zero-shot AUROC from 0.722 to
    0.632 and took about 30x longer (``bench/eval_eegmat.py --recipe``; README, Quality).
    Larger archives fine-tune released weights (``finetune``) or train a new encoder (``full``);
    that threshold is a judgement, not a measurement (no large archive was at hand).
    """
    if n_recordings < SMALL_ARCHIVE:
        return "heads"
    return "finetune" if init else "full"


def demo_config(seed: int = 0, device: str = "auto") -> TrainConfig:
    """The demo's options: the ``heads`` recipe (a minute or two on 2 CPU cores).

    The randomly initialised EEG trunk stays frozen and is run once; the EEG and text
    projections, the attention pooler (and the temperature, if learnable) train.
    """
    return recipe_config("heads", seed, device)


def load_items(root: str | os.PathLike, window_seconds: float, segment_mode: str,
               reports: str | os.PathLike | None = None, params: PreprocessingParams | None = None,
               on_item: Callable[[str, bool], None] | None = None, store: WindowStore | None = None
               ) -> list[TrainItem]:
    """Read the recordings that have a report, as windows + segments (+ the windows inside their events).

    Recordings without a report, without finding segments, or that cannot be read
    are skipped with a one-line warning. With ``store`` the windows stay on disk
    (``TrainItem.windows`` is a ``WindowFile`` read a batch at a time) and a recording
    already in the store is not preprocessed again; without, they are held in memory.

    Raises
    ------
    WindowStoreFull
        The store reached its size limit.
    """
    items = []
    for entry in discover(root, reports):
        ok = False
        try:
            text = load_report_text(entry)
            segments = parse_report(text).segments(segment_mode) if text else []
            if not segments:
                logger.warning("%s: no report segments, not used for training", entry.path)
            else:
                rec = WindowedRecording(entry.path, params, window_s=window_seconds)
                if store is None:
                    windows = rec.windows()[0].astype(np.float16)
                else:
                    windows = store.windows(entry.path, (params or PreprocessingParams()).to_dict(), window_seconds,
                                            rec.windows)
                subject = entry.info.subject or rec.meta.subject or entry.path.stem
                marked = read_events(entry.path, rec.header, getattr(rec.source, "raw", None), rec.meta.duration)
                pairs = [(i, e.text) for i, e in event_windows(marked.events, len(windows), window_seconds)]
                items.append(TrainItem("/".join(entry.key), subject, windows, segments, str(entry.path), pairs))
                ok = True
        except (RecordingError, ReportError) as err:
            logger.warning("%s", err)
        if on_item:
            on_item(str(entry.path), ok)
    return items


def split_by_patient(items: list[TrainItem], val_fraction: float, seed: int
                     ) -> tuple[list[TrainItem], list[TrainItem]]:
    """Split so that no patient is in both parts (about ``val_fraction`` of patients in val)."""
    patients = sorted({it.patient for it in items})
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    n_val = int(round(len(patients) * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and len(patients) > 1:
        n_val = min(max(n_val, 1), len(patients) - 1)
    val_p = set(patients[:n_val])
    return [i for i in items if i.patient not in val_p], [i for i in items if i.patient in val_p]


def _text_features(model: ELMModel, items: list[TrainItem]) -> list[torch.Tensor]:
    feats = model.text_encoder.embed([s for it in items for s in it.segments])
    out, i = [], 0
    for it in items:
        out.append(torch.from_numpy(feats[i : i + len(it.segments)]))
        i += len(it.segments)
    return out


@torch.no_grad()
def recording_vectors(model: ELMModel, items: list[TrainItem], max_windows: int = 64, seed: int = 0,
                      trunk_feats: list[np.ndarray] | None = None) -> np.ndarray:
    """Pooled, normalised recording embeddings of ``items`` (up to ``max_windows`` seeded windows each).

    Returns
    -------
    array of float32, shape (n_items, 256)
    """
    model.eval()
    rng = np.random.default_rng(seed)
    rec = []
    for i, it in enumerate(items):
        idx = np.arange(len(it.windows))
        if len(idx) > max_windows:
            idx = np.sort(rng.choice(idx, max_windows, replace=False))
        if trunk_feats is not None:  # frozen trunk: only the projection head runs
            z = F.normalize(model.eeg.proj(torch.from_numpy(trunk_feats[i][idx]).to(model.device)), dim=-1)
            rec.append(model.pool_windows(z.cpu().numpy()))
        else:
            rec.append(model.pool_windows(model.encode_eeg(it.windows[idx].astype(np.float32))))
    return np.stack(rec)


@torch.no_grad()
def evaluate(model: ELMModel, items: list[TrainItem], text_feats: list[torch.Tensor] | None = None,
             max_windows: int = 64, seed: int = 0, trunk_feats: list[np.ndarray] | None = None) -> dict:
    """Text-to-EEG and EEG-to-text retrieval among ``items`` (one report per recording).

    Returns
    -------
    dict
        ``{"text_to_eeg": {...}, "eeg_to_text": {...}}`` with R@1/5/10 and MRR.
    """
    if not items:
        return {}
    model.eval()
    text_feats = text_feats if text_feats is not None else _text_features(model, items)
    rec = recording_vectors(model, items, max_windows, seed, trunk_feats)
    rep = []
    for tf in text_feats:
        t = F.normalize(model.project_text(tf.to(model.device)), dim=-1).mean(0)
        rep.append(F.normalize(t, dim=-1).cpu().numpy())
    sim = np.stack(rep) @ rec.T
    return {"text_to_eeg": retrieval_metrics(sim), "eeg_to_text": retrieval_metrics(sim.T)}


def choose_similar(model: ELMModel, items: list[TrainItem], max_windows: int = 64, seed: int = 0,
                   trunk_feats: list | None = None) -> dict:
    """Choose what prior-case search compares, on held-out patients; sets ``model.config.similar``.

    Candidates: the shared-space recording embedding, and (with a spectral view) the spectral
    profile. The measure is how early another recording of the same patient ranks (mean
    reciprocal rank over the held-out recordings that have one; R@5 is reported too). The
    spectral profile is chosen only when it ranks them strictly earlier; without held-out
    patients with two recordings the embedding stays. ``trunk_feats``: a frozen trunk's features
    of ``items`` (``trunk_features``), so that only the projection runs (as ``evaluate`` does);
    running the whole encoder on each recording's windows grew training's memory with the
    number of validation recordings (+210 MB at 80 of them).

    Returns
    -------
    dict
        ``{"representation", "measured": {name: {"MRR", "R@5", "n"}}}``.
    """
    patients = np.array([it.patient for it in items])
    candidates = {"embedding": recording_vectors(model, items, max_windows, seed, trunk_feats)} if items else {}
    if items and model.eeg.spectral is not None:
        candidates["spectral"] = np.stack([model.spectral_profile(it.windows) for it in items])
    measured = {name: same_patient_ranks(v, patients) for name, v in candidates.items()}
    spec, emb = measured.get("spectral"), measured.get("embedding")
    choice = "spectral" if spec and spec["n"] and spec["MRR"] > emb["MRR"] else "embedding"
    out = {"representation": choice, "measured": measured}
    model.config.similar = out
    return out


def same_patient_ranks(emb: np.ndarray, patients: np.ndarray, k: int = 5) -> dict:
    """MRR of the first other recording of the same patient, and ``same_patient_recall``'s R@k."""
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    rr = []
    for i in range(len(emb)):
        others = (patients == patients[i]) & (np.arange(len(emb)) != i)
        if others.any():
            order = np.argsort(-sim[i], kind="stable")
            rr.append(1.0 / (1 + int(np.flatnonzero(others[order])[0])))
    return {"MRR": float(np.mean(rr)) if rr else float("nan"),
            f"R@{k}": same_patient_recall(emb, patients, k)[f"R@{k}"], "n": len(rr)}


def _set_trainable(model: ELMModel, freeze_eeg: bool) -> None:
    """Freeze or unfreeze the EEG trunk (convolutions); its projection head always trains."""
    for name, p in model.eeg.named_parameters():
        p.requires_grad_(not freeze_eeg or name.startswith("proj."))


def trunk_key(model: ELMModel) -> str:
    """A digest of everything the frozen trunk's features depend on (all EEG weights but the projection)."""
    h = hashlib.sha256()
    for name, t in sorted(model.eeg.state_dict().items()):
        if not name.startswith("proj."):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


CPU_WINDOW_BATCH = 256


@torch.no_grad()
def window_batch(model: ELMModel, cap: int = 16384) -> int:
    """Windows per forward pass of the frozen trunk: 256 on a CPU; on a GPU, what half its free memory holds.

    On CUDA one pass of 256 windows measures the peak memory a window takes, and the batch is
    the multiple of 256 that fills half of the memory still free (at most ``cap``). The
    contrastive batch (recordings per step) stays the recipe's: it is part of the objective.
    """
    if model.device.type != "cuda":
        return CPU_WINDOW_BATCH
    x = torch.zeros(CPU_WINDOW_BATCH, model.config.eeg.n_chans, model.n_times, device=model.device)
    torch.cuda.reset_peak_memory_stats(model.device)
    before = torch.cuda.memory_allocated(model.device)
    model.eeg.features(x)
    per_window = max(1, (torch.cuda.max_memory_allocated(model.device) - before) // CPU_WINDOW_BATCH)
    free, _ = torch.cuda.mem_get_info(model.device)
    n = int(0.5 * free // per_window) // CPU_WINDOW_BATCH * CPU_WINDOW_BATCH
    return int(min(cap, max(CPU_WINDOW_BATCH, n)))


@torch.no_grad()
def trunk_features(model: ELMModel, items: list[TrainItem], batch_size: int | None = None,
                   store: WindowStore | None = None) -> list:
    """Pre-projection EEG features of every window, shape (n_windows, 96) per item (eval mode).

    Windows run in batches of exactly ``batch_size`` (default ``window_batch``) across recordings
    (the last one shorter): batches of one size let the allocator reuse the same memory, where a
    batch per recording (a different size each) grew the process by about 40 MB per hour of EEG.

    With ``store``, the features of items whose windows are in it are written beside them
    (``WindowStore.feature_path``) as each recording is done, and returned as ``WindowFile``s:
    only the recordings of the current batch are in memory, and a later run with the same
    trunk reads them back instead of running it.
    """
    was_training = model.training
    model.eval()
    batch_size = batch_size or window_batch(model)
    trunk = trunk_key(model) if store is not None else ""
    paths = [store.feature_path(it.windows, trunk) if store is not None and isinstance(it.windows, WindowFile)
             else None for it in items]
    out: list = [WindowFile(p) if p is not None and p.is_file() else None for p in paths]
    todo = [i for i, o in enumerate(out) if o is None]
    filled = dict.fromkeys(todo, 0)
    pending: list[tuple[int, int, int]] = []  # (item, first row, rows) gathered into the next batch

    def run() -> None:
        x = np.concatenate([items[i].windows[a : a + n] for i, a, n in pending]).astype(np.float32)
        with torch.no_grad():
            f = model.eeg.features(torch.from_numpy(x).to(model.device)).cpu().numpy()
        at = 0
        for i, a, n in pending:
            if out[i] is None:
                out[i] = np.empty((len(items[i].windows), model.eeg.feature_dim), np.float32)
            out[i][a : a + n] = f[at : at + n]
            at += n
            filled[i] += n
            if paths[i] is not None and filled[i] == len(items[i].windows):  # done: to disk, out of memory
                out[i] = store.put_features(paths[i], out[i])
        pending.clear()

    for i in todo:
        start = 0
        while start < len(items[i].windows):
            n = min(batch_size - sum(p[2] for p in pending), len(items[i].windows) - start)
            pending.append((i, start, n))
            start += n
            if sum(p[2] for p in pending) == batch_size:
                run()
    if pending:
        run()
    if store is not None and len(todo) < len(items):
        logger.info("frozen-trunk features of %d recordings read from %s", len(items) - len(todo), store.folder)
    model.train(was_training)
    return out


def distributed(device) -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` alone; under ``torchrun`` it joins the group.

    The process group is started once (NCCL on CUDA, gloo on a CPU) from torchrun's environment
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...). Every batch is split between the processes,
    each runs its share, and the gradients are averaged over the group after each backward pass,
    so every process holds the same weights; only rank 0 writes files.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        root = logging.getLogger()
        if dist.get_rank() > 0 and root.level >= logging.INFO:  # one voice (all of them with --verbose)
            root.setLevel(max(root.level, logging.WARNING))
    return dist.get_rank(), dist.get_world_size()


def _broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics) to every process, as DDP does, before a validation."""
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b, src=0)


def _average_gradients(model: torch.nn.Module, world: int) -> None:
    """Average the gradients of the trainable parameters over the process group.

    A parameter this process's batch left without a gradient counts as zero, so that every
    process reduces the same tensors in the same order.
    """
    import torch.distributed as dist

    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def train(model: ELMModel, items: list[TrainItem], out_dir: str | os.PathLike,
          cfg: TrainConfig | None = None, resume: bool = True,
          on_step: Callable[[dict], None] | None = None, store: WindowStore | None = None) -> dict:
    """Train ``model`` on ``items`` and write a MODEL_DIR.

    Parameters
    ----------
    model : ELMModel
        Freshly created or initialised from released weights.
    items : list of TrainItem
        From ``load_items``.
    out_dir : path-like
        MODEL_DIR: ``config.json`` + ``model.safetensors`` (best epoch),
        ``checkpoint.pt`` (last epoch, for resuming), ``train_log.jsonl``,
        ``metrics.json``, ``split.json``.
    cfg : TrainConfig | None
        Options.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when present.
    on_step : callable | None
        Called after every step with ``{"epoch", "step", "steps", "loss", "windows_per_s"}``.
    store : WindowStore | None
        The store the items' windows come from: a frozen trunk's features are kept beside them
        (``trunk_features``) instead of in memory.

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    cfg = cfg or TrainConfig()
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    rank, world = distributed(device)
    lead = rank == 0  # the one process that writes
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 else \
        contextlib.nullcontext()
    model.to(device)
    model.cache_dir = model.cache_dir or out / "cache"
    max_eeg = cfg.max_eeg or model.config.mil.max_eeg
    max_text = cfg.max_text or model.config.mil.max_text
    train_items, val_items = split_by_patient(items, cfg.val_fraction, cfg.seed)
    if len(train_items) < 2:
        raise ElmsearchError(f"need at least 2 training recordings with reports, found {len(train_items)}")
    if lead:
        (out / "split.json").write_text(json.dumps({
        "train": sorted({i.patient for i in train_items}), "val": sorted({i.patient for i in val_items}),
            "n_train_recordings": len(train_items), "n_val_recordings": len(val_items)}, indent=1))
    logger.info("training on %d recordings, validating on %d (%d patients), device %s%s",
                len(train_items), len(val_items), len({i.patient for i in val_items}), device,
                f", process {rank} of {world}" if world > 1 else "")
    spectral = model.eeg.spectral
    if spectral is not None and int(spectral.n_fit) == 0 and not (resume and (out / "checkpoint.pt").is_file()):
        spectral.fit([it.windows for it in train_items])
        logger.info("spectral view standardised on %d training windows", int(spectral.n_fit))
    train_feats = _text_features(model, train_items)
    val_feats = _text_features(model, val_items) if val_items else None
    event_texts = sorted({t for it in train_items for _, t in it.events}) if cfg.event_weight > 0 else []
    event_feats = torch.from_numpy(model.text_encoder.embed(event_texts)) if event_texts else None
    event_id = {t: n for n, t in enumerate(event_texts)}
    if event_texts:
        logger.info("%d window-level event pairs of %d kinds (weight %g)",
                    sum(len(it.events) for it in train_items), len(event_texts), cfg.event_weight)
    # A frozen trunk is run once: training then only touches the heads (fast on a CPU).
    train_trunk = val_trunk = None
    if cfg.freeze_eeg:
        _set_trainable(model, True)
        train_trunk = trunk_features(model, train_items, store=store)
        val_trunk = trunk_features(model, val_items, store=store) if val_items else None

    params = [p for p in model.parameters() if p.requires_grad or p is model.log_temperature]
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_items) // cfg.batch_size  # a last batch of one recording is left out alone
    steps_per_epoch += int(len(train_items) % cfg.batch_size >= (2 if world == 1 else 1))
    total_steps = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps_per_epoch)) *
        0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(1, total_steps))))
    start_epoch, best, best_epoch, bad_epochs = 0, -1.0, -1, 0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best, best_epoch, bad_epochs = float(state["best"]), int(state["best_epoch"]), int(state["bad_epochs"])
        logger.info("resuming at epoch %d (best MRR %.3f at epoch %d)", start_epoch, best, best_epoch)
    log = (out / "train_log.jsonl").open("a") if lead else open(os.devnull, "w")  # noqa: SIM115
    initial = (evaluate(model, val_items, val_feats, cfg.val_max_windows, cfg.seed, val_trunk)
               if start_epoch == 0 else None)
    if initial:
        log.write(json.dumps({"epoch": -1, "val": initial}) + "\n")
    temp = model.log_temperature
    loader = ThreadPoolExecutor(max(1, cfg.loader_workers), thread_name_prefix="elmsearch-loader")
    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        model.train()
        _set_trainable(model, cfg.freeze_eeg or epoch < cfg.freeze_eeg_epochs)
        if cfg.freeze_eeg or epoch < cfg.freeze_eeg_epochs:
            model.eeg.eval()  # frozen trunk BatchNorm statistics too
            model.eeg.proj.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(train_items))
        t_epoch, n_windows_epoch, losses = time.perf_counter(), 0, []
        batches = [order[b0 : b0 + cfg.batch_size] for b0 in range(0, len(order), cfg.batch_size)]
        if world > 1:  # this process's share of every batch: the same steps everywhere, the batch split
            batches = [b[rank::world] for b in batches]
        batches = [b for b in batches if len(b) >= 2 or world > 1]
        # which windows and segments each step uses, drawn up front (its own stream), so that the
        # loader can read the next batches' windows from disk while this one trains
        plans = _sample_batches(train_items, batches, max_eeg, max_text, np.random.default_rng([cfg.seed, epoch, 1]))
        source = train_trunk if train_trunk is not None else [it.windows for it in train_items]
        for step, (batch, plan, xs) in enumerate(_prefetched(source, batches, plans, loader, cfg.prefetch)):
            t0 = time.perf_counter()
            ts, eid, tid, sizes = [], [], [], []
            for j, (i, (w, s)) in enumerate(zip(batch, plan, strict=True)):
                ts.append(train_feats[i][s])
                eid += [j] * len(w)
                tid += [j] * len(s)
                sizes.append(len(w))
            x = torch.cat(xs).to(device)
            with autocast:
                z = model.eeg.proj(x) if train_trunk is not None else model.eeg(x)
                t = model.project_text(torch.cat(ts).to(device))
            z, t = z.float(), t.float()  # the losses in float32
            eid_t, tid_t = torch.tensor(eid, device=device), torch.tensor(tid, device=device)
            tau = temp.exp()
            loss = mil_infonce(z, t, eid_t, tid_t, tau) if len(batch) >= 2 else 0.0 * z.sum() + 0.0 * t.sum()
            if cfg.pool_weight > 0 and len(batch) >= 2:
                zn = F.normalize(z, dim=-1)
                pooled = torch.stack([model.pool(c) for c in torch.split(zn, sizes)])
                tn = F.normalize(t, dim=-1)
                rep = torch.stack([tn[tid_t == j].mean(0) for j in range(len(batch))])
                loss = loss + cfg.pool_weight * clip_loss(pooled, rep, tau)
            if event_feats is not None:
                with autocast:
                    loss = loss + cfg.event_weight * _event_loss(model, train_items, batch, train_trunk, event_feats,
                                                                 event_id, cfg.max_events, rng, tau, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                _average_gradients(model, world)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            n_windows_epoch += len(x)
            if on_step and lead:
                on_step({"epoch": epoch, "step": step + 1, "steps": steps_per_epoch, "loss": float(loss.detach()),
                         "windows_per_s": len(x) / max(time.perf_counter() - t0, 1e-9)})
        seconds = time.perf_counter() - t_epoch
        if world > 1:  # the same model everywhere, so the same validation and the same early stop
            _broadcast_buffers(model)
        val = evaluate(model, val_items, val_feats, cfg.val_max_windows, cfg.seed, val_trunk)
        score = val["text_to_eeg"]["MRR"] if val else -float(np.mean(losses))
        improved = score > best
        if improved:
            best, best_epoch, bad_epochs = score, epoch, 0
            if lead:
                save_model(model, out)
        else:
            bad_epochs += 1
        record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                  "seconds": round(seconds, 2), "windows_per_s": round(world * n_windows_epoch / seconds, 1),
                  "world_size": world,
                  "lr": sched.get_last_lr()[0], "temperature": float(temp.exp()), "val": val,
                  "best": improved}
        log.write(json.dumps(record) + "\n")
        log.flush()
        logger.info("epoch %d: loss %.4f, %.0f windows/s, val text->EEG MRR %s%s", epoch,
                    record["loss"] or float("nan"), record["windows_per_s"],
                    f"{val['text_to_eeg']['MRR']:.3f}" if val else "-", " (best)" if improved else "")
        if lead:
            tmp = out / ".checkpoint.pt.tmp"
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch, "best": best,
                        "best_epoch": best_epoch, "bad_epochs": bad_epochs}, tmp)
            os.replace(tmp, ckpt_path)
    log.close()
    loader.shutdown()
    if world > 1:  # the same weights everywhere (the gradients were averaged): say so, for the logs
        digest = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in model.state_dict().values()))
        logger.info("process %d of %d: weights and buffers %s", rank, world, digest.hexdigest()[:16])
        import torch.distributed as dist

        dist.barrier()  # rank 0's model.safetensors is complete before anyone reads it
    if best_epoch >= 0 and (out / "model.safetensors").is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(out / "model.safetensors"), device=str(device)), strict=True)
    similar = choose_similar(model, val_items, cfg.val_max_windows, cfg.seed,
                             val_trunk if cfg.freeze_eeg else None)  # a frozen trunk's features still hold
    logger.info("prior cases compare the %s (held-out same-patient MRR: %s)", similar["representation"],
                ", ".join(f"{k} {v['MRR']:.3f}" for k, v in similar["measured"].items()) or "not measurable")
    if lead:
        save_model(model, out)
    metrics = {"best_epoch": best_epoch, "best_val_text_to_eeg_MRR": best,
               "n_train": len(train_items), "n_val": len(val_items),
               "config": dataclasses.asdict(cfg), "device": str(device), "similar": similar, "world_size": world}
    if initial:
        metrics["untrained_val"] = initial
    if best_epoch >= 0 and (out / "train_log.jsonl").is_file():
        for line in (out / "train_log.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("epoch") == best_epoch:
                metrics["val"] = rec.get("val")
    if lead:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _sample_batches(items: list[TrainItem], batches: list[np.ndarray], max_eeg: int, max_text: int, rng
                    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per batch, per recording: the (sorted) windows and the report segments a step uses."""
    plans = []
    for batch in batches:
        plan = []
        for i in batch:
            it = items[i]
            w = np.sort(rng.choice(len(it.windows), min(max_eeg, len(it.windows)), replace=False))
            plan.append((w, rng.choice(len(it.segments), min(max_text, len(it.segments)), replace=False)))
        plans.append(plan)
    return plans


def _prefetched(source: list, batches: list[np.ndarray], plans: list, pool: ThreadPoolExecutor, ahead: int = 2):
    """``(batch, plan, windows)`` per step; the next ``ahead`` batches' rows are read in ``pool`` meanwhile.

    ``source[i][rows]`` gives recording ``i``'s rows (windows or frozen-trunk features, in memory
    or a ``WindowFile`` on disk: reading a file and converting releases the GIL).
    """
    def read(batch, plan):
        return [torch.from_numpy(np.asarray(source[i][w], np.float32)) for i, (w, _) in zip(batch, plan, strict=True)]

    pending = collections.deque()
    for k in range(len(batches)):
        while len(pending) < ahead + 1 and k + len(pending) < len(batches):
            n = k + len(pending)
            pending.append(pool.submit(read, batches[n], plans[n]))
        yield batches[k], plans[k], pending.popleft().result()


def _event_loss(model: ELMModel, items: list[TrainItem], batch, trunk, event_feats: torch.Tensor,
                event_id: dict[str, int], max_events: int, rng, tau, device) -> torch.Tensor:
    """InfoNCE of windows inside events against the batch's event texts (each window's own kind positive).

    Up to ``max_events`` windows per recording of the batch; zero when the batch holds fewer
    than two kinds of event (nothing to tell apart).
    """
    xs, ids = [], []
    for i in batch:
        it = items[i]
        if not it.events:
            continue
        pick = rng.choice(len(it.events), min(max_events, len(it.events)), replace=False)
        rows = [it.events[j][0] for j in pick]  # event_id holds every training item's event text
        ids += [event_id[it.events[j][1]] for j in pick]
        if trunk is not None:
            xs.append(torch.from_numpy(trunk[i][rows]))
        else:
            xs.append(torch.from_numpy(it.windows[rows].astype(np.float32)))
    kinds = sorted(set(ids))
    if len(kinds) < 2:
        return torch.zeros((), device=device)
    x = torch.cat(xs).to(device)
    z = model.eeg.proj(x) if trunk is not None else model.eeg(x)
    t = model.project_text(event_feats[kinds].to(device))
    col = {k: n for n, k in enumerate(kinds)}
    eid = torch.tensor([col[k] for k in ids], device=device)
    return mil_infonce(z, t, eid, torch.arange(len(kinds), device=device), tau)


def build_model(name: str = "elm-5s", init: str | os.PathLike | None = None,
                text_model: str | os.PathLike | None = None, text_pooling: str | None = None,
                text_max_length: int | None = None,
                params: PreprocessingParams | None = None, seed: int = 0, spectral: bool = True) -> ELMModel:
    """A model to train: a registry config, optionally starting from released EEG weights.

    Parameters
    ----------
    name : str
        Registered config (``elm-5s``, ``elm-60s``).
    init : path-like | None
        A MODEL_DIR or the ELM release folder whose EEG encoder weights to start from.
    text_model : path-like | None
        Local Hugging Face folder (default: the packaged MiniLM).
    text_pooling, text_max_length : optional
        Override the config's pooling (``mean``/``cls``) and maximum tokens.
    params : PreprocessingParams | None
        Stored in the config so that users of the model preprocess the same way.
    seed : int
        Seeds torch before the new layers are initialised, so the same seed gives the same
        model (and, with ``train``'s seeding, the same trained weights).
    spectral : bool
        Keep the config's spectral view (``elmsearch.models.spectral_view``); False: the ResNet alone.
    """
    from elmsearch.models.factory import create_model, load_model

    torch.manual_seed(seed)
    over = {"text": {k: v for k, v in (("pooling", text_pooling), ("max_length", text_max_length)) if v}}
    if not spectral:
        over["eeg"] = {"spectral": None}
    model = create_model(name, text_model=text_model, **over)
    model.config.preprocessing = (params or PreprocessingParams()).to_dict()
    if init is not None:
        src = load_model(init)
        if src.n_times != model.n_times:
            raise ElmsearchError(f"{init}: its encoder takes {src.window_seconds:g} s windows, "
                                 f"{name} takes {model.window_seconds:g} s")
        load_eeg_weights(model, src, init)
        model.config.init = str(init)
    return model


def load_eeg_weights(model: ELMModel, src: ELMModel, name: str | os.PathLike = "source") -> None:
    """Copy ``src``'s EEG encoder into ``model``'s, adding a spectral view where ``src`` has none.

    The ResNet (and a spectral view's statistics, when both have one) are copied. When only
    ``model`` has a spectral view, the first projection layer takes ``src``'s weights for the
    ResNet features and zeros for the spectral ones, so the model starts as ``src`` embeds.
    """
    state = src.eeg.state_dict()
    own = model.eeg.state_dict()
    if model.eeg.spectral is None and src.eeg.spectral is not None:
        raise ElmsearchError(f"{name}: its encoder has a spectral view, {model.config.name} has none")
    if model.eeg.spectral is not None and src.eeg.spectral is None:
        w = own["proj.0.weight"].clone()
        if w.shape[0] != state["proj.0.weight"].shape[0]:
            raise ElmsearchError(f"{name}: its projection does not match {model.config.name}")
        w.zero_()
        w[:, : src.eeg.feature_dim] = state["proj.0.weight"]
        state = {**state, "proj.0.weight": w, **{k: v for k, v in own.items() if k.startswith("spectral.")}}
    try:
        model.eeg.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ElmsearchError(f"{name}: its EEG encoder does not fit {model.config.name} "
                             f"({str(err).splitlines()[0]})") from None


def train_archive(archive: str | os.PathLike, out_dir: str | os.PathLike, model_name: str = "elm-5s",
                  init: str | os.PathLike | None = None, recipe: str = "auto", *,
                  reports: str | os.PathLike | None = None, text_model: str | os.PathLike | None = None,
                  text_pooling: str | None = None, text_max_length: int | None = None, spectral: bool = True,
                  learn_temperature: bool = False, seed: int = 0, device: str = "auto", resume: bool = True,
                  window_store: str | os.PathLike | None = None, window_store_gb: float = 200.0,
                  on_plan: Callable[[str, TrainConfig, int], None] | None = None,
                  on_step: Callable[[dict], None] | None = None, **overrides) -> dict:
    """Train an EEG-language model on an archive: what ``elmsearch train`` runs.

    Builds the model (``build_model``), reads the recordings that have a report
    (``load_items``), chooses the recipe (``choose_recipe`` when ``recipe="auto"``) and trains
    (``train``) into ``out_dir``.

    Parameters
    ----------
    archive, out_dir : path-like
        The archive folder; the MODEL_DIR written (resumed when it holds a checkpoint).
    model_name, init, text_model, text_pooling, text_max_length, spectral, seed
        As ``build_model``.
    recipe : str
        A name of ``RECIPES`` or ``"auto"``.
    learn_temperature : bool
        Learn the contrastive temperature.
    window_store, window_store_gb : path-like, float
        Keep the preprocessed windows in this folder (``WindowStore``, at most this many GiB)
        instead of memory; a later run reuses them.
    on_plan : callable, optional
        ``on_plan(recipe name, TrainConfig, n recordings)`` once the plan is made.
    on_step : callable, optional
        As ``train``.
    **overrides
        ``TrainConfig`` fields (``epochs``, ``lr``, ...); None keeps the recipe's.

    Returns
    -------
    dict
        ``train``'s metrics, with ``"recipe"``.
    """
    net = build_model(model_name, init, text_model, text_pooling, text_max_length, seed=seed, spectral=spectral)
    net.config.learn_temperature = learn_temperature
    net.log_temperature.requires_grad_(learn_temperature)
    logger.info("reading %s (%g s windows)", archive, net.window_seconds)
    store = None
    if window_store is not None:
        store = WindowStore(window_store, int(window_store_gb * 2**30))
    items = load_items(archive, net.window_seconds, net.config.text.segment_mode, reports, store=store)
    if store is not None:
        logger.info("window store %s: %d recordings read from it, %d written (%.2f GiB)", store.folder, store.hits,
                    store.writes, store.size() / 2**30)
    name = choose_recipe(len(items), init is not None) if recipe == "auto" else recipe
    cfg = recipe_config(name, seed, device, **overrides)
    if on_plan is not None:
        on_plan(name, cfg, len(items))
    return {**train(net, items, out_dir, cfg, resume=resume, on_step=on_step, store=store), "recipe": name}
