r"""Training a flow and measuring it: :func:`fit` takes a :class:`TrainConfig` and returns a
:class:`TrainResult`; :func:`evaluate_bpd` scores a model on a dataset.

    from invconv_core.flows import TrainConfig, fit
    result = fit(TrainConfig(dataset="digits", model="inverse-flow", epochs=20, out="runs/if"))
    print(result.test_bpd)

A run directory ``out`` holds ``last.pt`` (after every epoch) and ``best.pt`` (at the best test
bits/dim), written atomically, with model, optimiser, scheduler, RNG states, config, epoch,
step and history; ``samples.png``; and ``metrics.json`` (strict JSON: the fields of
:class:`TrainResult`). A directory that already holds a run is refused unless ``resume=True``
(continue from ``last.pt`` at the next epoch, same data order and schedule: bit-identical to an
uninterrupted run on CPU; only the settings in :data:`RESUME_MAY_CHANGE` -- more ``epochs``,
the device, the workers, the final samples -- may differ from the run's, any other is refused) or ``overwrite=True`` (start over, replacing it).

One writer per run directory: :func:`fit` holds the directory's lock (:mod:`.runlock`) for the
whole run; a second process on the same ``out`` -- with ``resume`` or ``overwrite`` too -- is
refused with :class:`RunLockedError` naming the holder's PID.

Multi-process (DDP): launched by torchrun (``WORLD_SIZE`` > 1) each process trains on one GPU
(``LOCAL_RANK``) -- or the CPU with gloo -- on a shard of the data; only rank 0 writes (and
locks) and :func:`fit` returns the result on rank 0 and ``None`` on the others. A partial or
inconsistent set of ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` is a
ValueError naming them (:func:`dist_environment`); a process whose peers do not all arrive
within ``INVCONV_DIST_TIMEOUT`` seconds (default 300) stops with a TimeoutError saying so.

Schedule (the paper's): Adam, lr 1e-3, divided by 10 every ``DATASET_INFO[d].lr_step`` epochs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from .bpd import bits_per_dim, dequantize
from .checkpoints import load_checkpoint, load_weights, rng_state, set_rng_state
from .data import DATASET_INFO, DATASETS, ImageData, load_dataset, require_usable_splits
from .errors import CheckpointError, RunExistsError, TrainingDiverged
from .migration import SettingsError, added_field, migrate
from .io import atomic_save, atomic_write_json, remove_stale_temp_files, save_image_grid
from .models import ALL_MODELS, FlowConfig, allocate_flow, require_fits_in_memory
from .timing import median_seconds
from .runlock import refuse_if_locked, run_lock
from .validate import SEED_MAX, check_output_dir, require_device, require_float, require_int

__all__ = ["TrainConfig", "TrainResult", "fit", "evaluate_bpd", "RUN_FILES", "RESUME_MAY_CHANGE"]

#: What a run directory holds; any of them present means the directory holds a run.
RUN_FILES = ("last.pt", "best.pt", "metrics.json", "samples.png")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``levels=None`` and ``lr_step=None`` take the dataset's defaults
    (``DATASET_INFO``); ``max_train``/``max_test`` keep only the first N images."""

    out: str
    dataset: str = "digits"
    model: str = "inverse-flow"
    epochs: int = 20
    data_dir: str | None = None
    device: str | None = None          # None: cuda if available, else cpu
    resume: bool = False
    overwrite: bool = False
    levels: int | None = None
    steps: int = 16
    width: int = 64
    kernel_size: int = 3
    batch_size: int = 100
    lr: float = 1e-3
    lr_step: int | None = None
    grad_clip: float = 100.0           # max gradient norm; 0 turns clipping off
    max_train: int | None = None
    max_test: int | None = None
    samples: int = 64                  # images in samples.png
    temperature: float = 0.8           # of samples.png
    seed: int = 0
    workers: int = 0
    progress: bool = False             # tqdm progress bars
    # torch's intra-op threads for the run (None: torch's default). The run's numbers depend on
    # it in the last bits (a reduction splits by thread): resume with the count it was trained
    # with for a bit-identical continuation (the checkpoint records it)
    threads: int | None = added_field(None, version="0.3.1")

    def __post_init__(self):
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out must be a directory path, got {self.out!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.model not in ALL_MODELS:
            raise ValueError(f"model must be one of {', '.join(ALL_MODELS)}, got {self.model!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run in out, "
                             "or replace it")
        for name, minimum in (("epochs", 1), ("steps", 1), ("width", 1), ("kernel_size", 1),
                              ("batch_size", 1), ("samples", 1), ("workers", 0)):
            require_int(name, getattr(self, name), minimum)
        require_int("seed", self.seed, 0, SEED_MAX)
        if self.device is not None:
            require_device(self.device)
        for name in ("levels", "lr_step", "max_train", "max_test", "threads"):
            if getattr(self, name) is not None:
                require_int(name, getattr(self, name), 1)
        require_float("lr", self.lr, 0.0, strict=True)
        require_float("grad_clip", self.grad_clip, 0.0)
        require_float("temperature", self.temperature, 0.0)

    def flow_config(self) -> FlowConfig:
        """The architecture this run trains: :meth:`FlowConfig.for_dataset` (image shape,
        ``n_bins`` and default ``levels`` from the dataset's facts) with this run's options."""
        return FlowConfig.for_dataset(self.dataset, model=self.model, levels=self.levels,
                                      steps=self.steps, width=self.width,
                                      kernel_size=self.kernel_size)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` measured; ``to_dict()`` is ``metrics.json``."""

    out: str
    dataset: str
    model: str
    n_bins: int
    test_bpd: float                    # after the last epoch
    best_test_bpd: float
    epochs: int                        # trained so far, in all sessions of the run
    optimizer_steps: int               # Adam steps so far (not the flow's K, TrainConfig.steps)
    train_seconds: float
    sample_seconds_per_100: float
    forward_seconds_per_100: float
    parameters: int
    world_size: int
    device: str
    config: dict                       # FlowConfig.to_dict()
    history: tuple                     # per epoch: {"epoch", "train_bpd", "test_bpd"}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["history"] = [dict(h) for h in self.history]
        return d

    @classmethod
    def from_dict(cls, d: dict, what: str = "metrics.json") -> "TrainResult":
        """The result of a ``metrics.json`` (``to_dict()`` output), migrated
        (:mod:`.migration`; before 0.3.0 the Adam step count was called ``steps``).
        :class:`SettingsError` naming ``what`` for a record of wrong types or unknown fields."""
        d = migrate(cls, d, what, renamed={"steps": "optimizer_steps"})
        d["history"] = tuple(d["history"])
        return cls(**d)


#: Seconds a process waits for its peers when a process group forms (INVCONV_DIST_TIMEOUT).
DIST_TIMEOUT_DEFAULT = 300


def dist_environment(env=None) -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from the variables torchrun sets (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``; ``(1, 0, 0)`` when none is set). A partial or inconsistent set is
    a ValueError naming the variables: a stray ``RANK=1`` would otherwise make this process a
    non-writing rank of a group that does not exist, and the run would end with nothing saved."""
    env = os.environ if env is None else env
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
    given = {n: env[n] for n in names if n in env}
    if not given:
        return 1, 0, 0
    values = {}
    for n, text in given.items():
        try:
            values[n] = int(text)
        except ValueError:
            raise ValueError(f"distributed environment: {n}={text!r} is not an integer") from None
    missing = [n for n in ("WORLD_SIZE", "RANK") if n not in given]
    if missing:
        raise ValueError(f"distributed environment is partial: {', '.join(f'{n}={given[n]}' for n in given)} "
                         f"set but {' and '.join(missing)} not (launch with torchrun, or unset "
                         f"{', '.join(given)})")
    world, rank = values["WORLD_SIZE"], values["RANK"]
    local = values.get("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or not 0 <= local < world:
        raise ValueError(f"distributed environment is inconsistent: WORLD_SIZE={world}, RANK={rank}, "
                         f"LOCAL_RANK={local} (expected WORLD_SIZE >= 1 and 0 <= RANK, LOCAL_RANK "
                         f"< WORLD_SIZE)")
    if world > 1:
        missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not env.get(n)]
        if missing:
            raise ValueError(f"distributed environment: WORLD_SIZE={world} but {' and '.join(missing)} "
                             f"not set (launch with torchrun)")
    return world, rank, local


def _dist_timeout(env=None) -> float:
    env = os.environ if env is None else env
    text = env.get("INVCONV_DIST_TIMEOUT", str(DIST_TIMEOUT_DEFAULT))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"INVCONV_DIST_TIMEOUT={text!r}: expected a number of seconds > 0")
    return seconds


class _Dist:
    """Process-group facts; a single process when not launched by torchrun."""

    def __init__(self, device_arg):
        self.world, self.rank, self.local_rank = dist_environment()
        use_cuda = torch.cuda.is_available() and (device_arg is None or device_arg.startswith("cuda"))
        self.device = torch.device(device_arg or "cpu")  # validated before any process group
        self.started = False
        if self.world > 1:
            import datetime
            seconds = _dist_timeout()
            try:
                dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                        timeout=datetime.timedelta(seconds=seconds))
            except Exception as err:  # torch raises DistStoreError, RuntimeError, ... here
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                raise TimeoutError(
                    f"the process group did not form: rank {self.rank} of {self.world} waited "
                    f"{seconds:g} s for its peers at {os.environ.get('MASTER_ADDR')}:"
                    f"{os.environ.get('MASTER_PORT')} (a missing rank? INVCONV_DIST_TIMEOUT sets "
                    f"the wait; {type(err).__name__}: {first})") from None
            self.started = True
        if use_cuda:
            self.device = torch.device(device_arg if device_arg and self.world == 1 else f"cuda:{self.local_rank}")
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        if self.started:
            dist.destroy_process_group()


def _evaluate(model, loader, n_bins, device, ctx: _Dist, seed: int) -> float:
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed + ctx.rank)
    total = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for k, _ in loader:
            x = dequantize(k, n_bins, generator=g).to(device)
            bpd = bits_per_dim(model(x), x[0].numel(), n_bins)
            total += torch.stack([bpd.double().sum(),
                                  torch.tensor(float(len(bpd)), dtype=torch.float64, device=device)])
    ctx.all_sum(total)
    model.train()
    return (total[0] / total[1]).item()


class _SingleProcess:
    world, rank = 1, 0

    @staticmethod
    def all_sum(t):
        return t


def evaluate_bpd(model, data: ImageData, batch_size: int = 100, seed: int = 1234) -> float:
    """Mean per-image bits/dim of ``model`` on ``data`` (w.r.t. ``data.n_bins`` levels), with
    dequantization noise from a generator seeded with ``seed``, so the number is reproducible."""
    require_int("batch_size", batch_size, 1)
    device = next(model.parameters()).device
    loader = DataLoader(data.dataset(), batch_size=batch_size)
    return _evaluate(model, loader, data.n_bins, device, _SingleProcess(), seed)


def _prepare_run_dir(cfg: TrainConfig) -> None:
    """Everything about ``out`` that can fail is checked here, before any data is loaded (and
    under the run directory's lock)."""
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(cfg.out, f))]
    if cfg.resume:
        if not os.path.isfile(os.path.join(cfg.out, "last.pt")):
            raise FileNotFoundError(f"{os.path.join(cfg.out, 'last.pt')}: no checkpoint to resume from")
    elif existing and not cfg.overwrite:
        raise RunExistsError(f"{cfg.out}: already holds a run ({', '.join(existing)}); resume it "
                             f"(--resume) or replace it (--overwrite)")


#: TrainConfig fields a resumed run may change: they do not change what the run computes.
#: ``epochs`` continues it further (to at least the epochs trained); ``device``, ``data_dir``
#: (the same dataset at another path), ``workers`` and ``progress`` change where and how it runs;
#: ``samples`` and ``temperature`` only the final samples.png; ``threads`` changes the last bits
#: only (the resumed run says so when it differs from the checkpoint's). Every other field must equal the
#: run's (the effective value: ``levels``/``lr_step`` None and the dataset's default are equal).
RESUME_MAY_CHANGE = ("out", "resume", "overwrite", "epochs", "device", "data_dir", "workers",
                     "progress", "samples", "temperature", "threads")


def _effective(train_config: dict) -> dict:
    d = dict(train_config)
    info = DATASET_INFO.get(d.get("dataset"))
    if info is not None:
        d["levels"] = d.get("levels") or info.levels
        d["lr_step"] = d.get("lr_step") or info.lr_step
    return d


def _check_resume_fields(ck: dict, path: str) -> None:
    """CheckpointError naming ``path`` and the field when a ``last.pt`` that loads lacks or
    mistypes what a resume reads (a KeyError, TypeError or IndexError mid-resume before)."""
    number = (int, float)
    expected = {"epoch": int, "step": int, "best_test_bpd": number, "optimizer": dict,
                "scheduler": dict, "rng": (list, dict), "history": list}
    for name, kind in expected.items():
        value = ck.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            what = "lacks" if name not in ck else f"has a {type(value).__name__} as"
            raise CheckpointError(f"{path}: the checkpoint {what} '{name}' (not a checkpoint of a "
                                  f"complete invconv-train epoch; resume cannot use it)")
    if isinstance(ck["rng"], list) and not all(isinstance(r, dict) and "torch" in r for r in ck["rng"]):
        raise CheckpointError(f"{path}: the checkpoint's 'rng' is not a list of random states")
    if isinstance(ck["rng"], dict) and "torch" not in ck["rng"]:
        raise CheckpointError(f"{path}: the checkpoint's 'rng' is not a random state")
    if ck["epoch"] < 0 or ck["step"] < 0:
        raise CheckpointError(f"{path}: the checkpoint's epoch/step are negative")


def _load_resume_checkpoint(cfg: TrainConfig) -> dict:
    """``last.pt`` of the run, read once (on the CPU: the optimiser moves its state to the
    parameters' device, and the RNG states must stay CPU tensors). A resumed run continues the
    saved one exactly or not at all: every setting it cannot honour (the optimiser's, the
    schedule's, the data's, the seed's) is refused, naming it."""
    path = os.path.join(cfg.out, "last.pt")
    ck = load_checkpoint(path, "cpu", required=("config", "model", "optimizer", "scheduler", "rng",
                                                "epoch", "step"))
    if "train_config" not in ck:
        return ck  # a checkpoint of a version before 0.2.1: only its model config is checked
    saved = ck["train_config"]
    try:
        saved = migrate(TrainConfig, saved, f"{path}: train_config")
    except SettingsError as err:
        raise CheckpointError(str(err)) from None
    ours, theirs = _effective(dataclasses.asdict(cfg)), _effective(saved)
    changed = [f"{k} (--{k.replace('_', '-')}) {theirs[k]!r} → {ours[k]!r}"
               for k in ours if k not in RESUME_MAY_CHANGE and theirs[k] != ours[k]]
    if changed:
        raise ValueError(f"{path}: a resumed run cannot change {', '.join(changed)}; resume with "
                         f"the run's settings, or start a new run (--overwrite or another --out)")
    return ck


def fit(cfg: TrainConfig, log=print) -> TrainResult | None:
    """Train (or continue training) the flow of ``cfg`` and return what was measured.

    ``log`` receives one line per epoch and a summary (rank 0 only). Raises, before any data is
    loaded: ValueError for bad values or a partial distributed environment,
    :class:`RunExistsError` for an occupied run directory, :class:`RunLockedError` when another
    process is writing to it (:mod:`.runlock`), OSError for an unusable one. During training, :class:`TrainingDiverged` when the loss or the
    test bits/dim stops being finite (``last.pt`` and ``best.pt`` of the last good epoch are kept).
    """
    device = cfg.device  # checked by TrainConfig
    _, rank, _ = dist_environment()
    _dist_timeout()  # a bad INVCONV_DIST_TIMEOUT fails now, not when the group forms
    check_output_dir(cfg.out, "run directory (out)", create=False)
    require_fits_in_memory(cfg.flow_config(), cfg.batch_size, cfg.device)
    if rank == 0:
        refuse_if_locked(cfg.out)  # a busy directory is named as such, before anything else
    _prepare_run_dir(cfg)  # a refused run leaves the directory untouched, lock file included
    # one writer per run directory: rank 0 is the only process of a run that writes
    with run_lock(cfg.out, create=True) if rank == 0 else contextlib.nullcontext() as claim:
        _prepare_run_dir(cfg)  # again: another writer may have changed it meanwhile
        resumed = _load_resume_checkpoint(cfg) if cfg.resume else None
        previous_threads = torch.get_num_threads()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        if resumed is not None and rank == 0:
            _say_if_threads_differ(resumed, log)
        ctx = _Dist(device)
        try:
            return _fit(cfg, ctx, log, resumed, claim)
        finally:
            ctx.close()
            torch.set_num_threads(previous_threads)


def _say_if_threads_differ(ck: dict, log) -> None:
    """One line when the run continues under another thread count than its checkpoint was
    trained with: the continuation is then exact in every setting but equal to an
    uninterrupted run only to the last bits (a CPU reduction splits by thread)."""
    saved, now = ck.get("threads"), torch.get_num_threads()
    if isinstance(saved, int) and saved != now:
        log(f"note: the run was trained with {saved} thread{'s' if saved != 1 else ''}, this "
            f"session uses {now}: it continues exactly, but its numbers will differ from an "
            f"uninterrupted run in the last bits (resume with --threads {saved} for a "
            f"bit-identical continuation)")


@dataclass
class _Run:
    """The state of a run between the parts of :func:`_fit` (set-up, one epoch, checkpoint,
    final measurement)."""

    cfg: TrainConfig
    ctx: _Dist
    log: object
    config: FlowConfig
    model: torch.nn.Module
    net: torch.nn.Module               # the model, wrapped in DDP when world > 1
    opt: torch.optim.Optimizer
    sched: object
    train: ImageData
    test: ImageData
    start_epoch: int = 0
    step: int = 0
    best: float = math.inf
    history: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def last_path(self) -> str:
        return os.path.join(self.cfg.out, "last.pt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.cfg.out, "best.pt")

    def loader(self, data: ImageData, shuffle: bool, epoch: int) -> DataLoader:
        cfg, ctx = self.cfg, self.ctx
        ds = data.dataset()
        if ctx.world > 1:
            sampler = DistributedSampler(ds, ctx.world, ctx.rank, shuffle=shuffle, seed=cfg.seed)
            sampler.set_epoch(epoch)
        elif shuffle:
            # the order depends only on (seed, epoch): a resumed run sees the same batches. The
            # permutation is drawn here, once (the one RandomSampler draws), not lazily through
            # the DataLoader: with a RandomSampler, --workers 2 trained epoch 0 on another
            # permutation than --workers 0 (its generator had been advanced before the epoch drew)
            order = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            sampler = torch.randperm(len(ds), generator=order).tolist()
        else:
            sampler = None
        return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                          drop_last=shuffle and len(ds) >= cfg.batch_size * ctx.world)


def _load_data(cfg: TrainConfig) -> tuple[ImageData, ImageData]:
    """The run's training and test splits (``max_train``/``max_test`` applied), checked against
    the dataset's facts the model is built from (``DATASET_INFO``)."""
    train = load_dataset(cfg.dataset, "train", cfg.data_dir)
    test = load_dataset(cfg.dataset, "test", cfg.data_dir)
    if cfg.max_train is not None:
        train = ImageData(train.images[:cfg.max_train], train.labels[:cfg.max_train], train.n_bins)
    if cfg.max_test is not None:
        test = ImageData(test.images[:cfg.max_test], test.labels[:cfg.max_test], test.n_bins)
    require_usable_splits(cfg.dataset, train, test)
    info = DATASET_INFO[cfg.dataset]
    if tuple(train.shape) != tuple(info.image_shape) or train.n_bins != info.n_bins:
        raise ValueError(f"dataset {cfg.dataset}: the loader gives {'×'.join(map(str, train.shape))} "
                         f"images with {train.n_bins} levels, DATASET_INFO says "
                         f"{'×'.join(map(str, info.image_shape))} with {info.n_bins}")
    return train, test


def _set_up(cfg: TrainConfig, ctx: _Dist, log, ck: dict | None, claim=None) -> _Run:
    """Seeds, data, model, optimiser and schedule; then either the state of ``ck`` (a resumed
    run) or ActNorm's data-dependent initialisation (a new one). The order of the random draws
    is part of exact resume: do not reorder. Nothing of ``out`` is removed (stale temporary
    files, the run ``overwrite`` replaces) before the data and the model are in hand: a run
    refused for its data deletes nothing; then ``claim`` (the run lock's) is kept."""
    torch.manual_seed(cfg.seed + ctx.rank)
    np.random.seed(cfg.seed + ctx.rank)
    random.seed(cfg.seed + ctx.rank)
    train, test = _load_data(cfg)
    config = cfg.flow_config()
    model = allocate_flow(config).to(ctx.device)
    if claim is not None:
        claim.keep()  # every check that can refuse the run is behind it
    if ctx.main:
        for path in remove_stale_temp_files(cfg.out, RUN_FILES):
            log(f"removed {path}, left by an interrupted write")
        if cfg.overwrite:
            for f in RUN_FILES:
                if os.path.exists(os.path.join(cfg.out, f)):
                    os.unlink(os.path.join(cfg.out, f))
    ctx.barrier()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    lr_step = cfg.lr_step or DATASET_INFO[cfg.dataset].lr_step
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=0.1)
    run = _Run(cfg, ctx, log, config, model, model, opt, sched, train, test)
    if ck is not None:
        _restore(run, ck)
    else:
        # ActNorm's data-dependent init on the first batch (statistics averaged across ranks)
        k0, _ = next(iter(run.loader(train, True, 0)))
        with torch.no_grad():
            model(dequantize(k0, train.n_bins).to(ctx.device))
    if ctx.world > 1:
        run.net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    return run


def _restore(run: _Run, ck: dict) -> None:
    """Continue from checkpoint ``ck``: weights, optimiser, schedule, counters, RNG states --
    each checked to fit this run first, with a CheckpointError naming the file."""
    cfg, model, opt, last_path = run.cfg, run.model, run.opt, run.last_path
    changed = run.config.differences(ck["config"])  # (fields added since it was saved: defaults)
    if changed:
        raise ValueError(f"{last_path}: checkpoint config differs from this run's: "
                         f"{'; '.join(changed)}")
    _check_resume_fields(ck, last_path)
    load_weights(model, ck, last_path)  # its config was just checked equal to this run's
    try:
        opt.load_state_dict(ck["optimizer"])
        run.sched.load_state_dict(ck["scheduler"])
        for group in opt.state.values():  # a wrong-shaped Adam state fails at the first step
            for name, value in group.items():
                if name in ("exp_avg", "exp_avg_sq") and not isinstance(value, torch.Tensor):
                    raise TypeError(f"optimizer state {name} is not a tensor")
        for p in model.parameters():
            state = opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in state and state[name].shape != p.shape:
                    raise ValueError(f"optimizer state {name} has shape {tuple(state[name].shape)} "
                                     f"for a parameter of shape {tuple(p.shape)}")
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise CheckpointError(f"{last_path}: its optimizer or scheduler state does not fit this "
                              f"run ({type(err).__name__}: {str(err).strip()[:160]})") from None
    run.start_epoch, run.step, run.best = ck["epoch"] + 1, ck["step"], ck["best_test_bpd"]
    run.history, run.train_seconds = list(ck.get("history", [])), ck.get("train_seconds", 0.0)
    if run.start_epoch > cfg.epochs:
        raise ValueError(f"{last_path}: the run has trained {run.start_epoch} epochs, more than "
                         f"epochs={cfg.epochs}; ask for at least {run.start_epoch}")
    set_rng_state(ck["rng"][run.ctx.rank] if isinstance(ck["rng"], list) else ck["rng"])


def _diverged(run: _Run, value, where: str, epoch: int) -> TrainingDiverged:
    kept = ("last.pt and best.pt of the last good epoch are kept" if run.history
            else "no checkpoint was written")
    return TrainingDiverged(f"training diverged: {where} became {value} at epoch {epoch + 1}, "
                            f"step {run.step}; {kept} in {run.cfg.out}. Lower the learning rate "
                            f"(lr={run.cfg.lr:g}) or clip the gradient norm (grad_clip={run.cfg.grad_clip:g})")


def _train_one_epoch(run: _Run, epoch: int) -> float:
    """One pass over the training split; returns the running (EMA) training bits/dim."""
    from tqdm.auto import tqdm

    cfg, ctx, device = run.cfg, run.ctx, run.ctx.device
    run.model.train()
    bar = tqdm(run.loader(run.train, True, epoch), disable=not cfg.progress or not ctx.main,
               desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    running = 0.0
    for i, (k, _) in enumerate(bar):
        x = dequantize(k, run.train.n_bins).to(device)
        loss = bits_per_dim(run.net(x), run.model.dims, run.train.n_bins).mean()
        value = loss.item()
        bad = not math.isfinite(value)
        if ctx.world > 1:  # every rank stops together, also when only one saw it
            bad = bool(ctx.all_sum(torch.tensor(float(bad), device=device)).item())
        if bad:
            run.step += 1
            raise _diverged(run, value if not math.isfinite(value) else "non-finite on another rank",
                            "the training loss", epoch)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        run.opt.step()
        run.step += 1
        running = value if i == 0 else 0.9 * running + 0.1 * value
        bar.set_postfix(loss_bpd=f"{running:.3f}", lr=f"{run.sched.get_last_lr()[0]:.1e}")
    run.sched.step()
    return running


def _checkpoint(run: _Run, epoch: int, test_bpd: float) -> None:
    """``last.pt`` (and ``best.pt`` at a new best) after ``epoch``, written atomically by rank 0;
    every rank's RNG state goes in it, so a resumed run draws what this one would have."""
    ctx = run.ctx
    rngs = [None] * ctx.world
    if ctx.world > 1:
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    if ctx.main:
        ck = {"model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
              "scheduler": run.sched.state_dict(), "rng": rngs, "config": run.config.to_dict(),
              "epoch": epoch, "step": run.step, "best_test_bpd": min(run.best, test_bpd),
              "history": run.history, "train_seconds": run.train_seconds,
              "train_config": dataclasses.asdict(run.cfg), "threads": torch.get_num_threads()}
        atomic_save(ck, run.last_path)
        if test_bpd < run.best:
            atomic_save(ck, run.best_path)


def _final_measurement(run: _Run) -> TrainResult:
    """samples.png, sampling and forward times per 100 images, and metrics.json (rank 0)."""
    cfg, model, device, test = run.cfg, run.model, run.ctx.device, run.test
    model.eval()
    with torch.no_grad():
        save_image_grid(model.sample(cfg.samples, cfg.temperature), os.path.join(cfg.out, "samples.png"),
                        scale=4 if run.config.image_shape[1] <= 16 else 1)
        sample_s = median_seconds(lambda: model.sample(100), device)
        xb = dequantize(test.images[:100], test.n_bins).to(device)
        if len(xb) < 100:
            xb = xb.repeat((100 + len(xb) - 1) // len(xb), 1, 1, 1)[:100]
        forward_s = median_seconds(lambda: model(xb), device)
    result = TrainResult(
        out=cfg.out, dataset=cfg.dataset, model=cfg.model, n_bins=run.train.n_bins,
        test_bpd=run.history[-1]["test_bpd"], best_test_bpd=run.best, epochs=len(run.history),
        optimizer_steps=run.step, train_seconds=run.train_seconds, sample_seconds_per_100=sample_s,
        forward_seconds_per_100=forward_s, parameters=sum(p.numel() for p in model.parameters()),
        world_size=run.ctx.world, device=str(device), config=run.config.to_dict(),
        history=tuple(run.history))
    atomic_write_json(result.to_dict(), os.path.join(cfg.out, "metrics.json"))
    run.log(f"test bpd {result.test_bpd:.4f} (best {run.best:.4f}); sampling {sample_s * 1e3:.1f} ms "
            f"and forward {forward_s * 1e3:.1f} ms per 100 images; wrote {cfg.out}")
    return result


def _fit(cfg: TrainConfig, ctx: _Dist, log, ck: dict | None, claim=None) -> TrainResult | None:
    """The run itself; ``ck``: the checkpoint to resume from (None: a new run)."""
    run = _set_up(cfg, ctx, log, ck, claim)
    test_loader = run.loader(run.test, False, 0)
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        running = _train_one_epoch(run, epoch)
        run.train_seconds += time.perf_counter() - t0
        test_bpd = _evaluate(run.model, test_loader, run.train.n_bins, ctx.device, ctx, seed=1234)
        if not math.isfinite(test_bpd):
            raise _diverged(run, test_bpd, "the test bits/dim", epoch)
        run.history.append({"epoch": epoch + 1, "train_bpd": running, "test_bpd": test_bpd})
        _checkpoint(run, epoch, test_bpd)
        if ctx.main:  # after the checkpoint: an epoch reported is an epoch saved
            log(f"epoch {epoch + 1}/{cfg.epochs}  train bpd {running:.4f}  test bpd {test_bpd:.4f}")
        run.best = min(run.best, test_bpd)
        ctx.barrier()
    return _final_measurement(run) if ctx.main else None
