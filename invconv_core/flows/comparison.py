r"""The model comparison: every model (or a chosen subset) trained at equal parameter count for
equal epochs over several seeds on one dataset, then measured side by side
(:func:`compare` takes a :class:`CompareConfig` and returns a :class:`CompareResult`; the command
line is ``invconv-compare``).

    from invconv_core.flows import CompareConfig, compare
    result = compare(CompareConfig.from_options("runs/compare", dataset="digits", seeds=3, epochs=40))
    print(result.markdown)

(``from_options`` splits the options between the comparison and ``CompareConfig.run``, the
template of every run; :mod:`.depth_sweep` repeats a comparison over the number of steps.)

"Equal parameter count": Inverse-Flow keeps the coupling width ``width``; every other coupled
model gets the width that brings its parameter count closest to Inverse-Flow's
(:func:`invconv_core.flows.timing.equal_size_configs`); the CNN-only models have no couplings,
so cnn-inverse-flow and cnn-finc are equal by construction and cnn-glow (1×1) has fewer.
Seeds are ``0 … seeds−1`` (the seed of the initialisation, the data order and the
dequantization noise).

``out`` holds:

    runs/<model>/seed<s>/   one invconv-train run directory per (model, seed) (:func:`fit`)
    compare.json            the settings every run was trained with
    results.json            strict JSON: settings, one row per model, every run's TrainResult
    table.md                the markdown table (below)
    bpd_vs_epoch.png        test bits/dim against epoch, one line per model (mean over seeds,
                            shaded between the best and the worst seed)
    samples/<model>.png     a grid of samples from the seed-0 model, at ``temperature``

Resumable: run again with the same settings and the finished runs are skipped, an interrupted
run continues from its ``last.pt`` (bit-identical to an uninterrupted one on CPU), and missing
runs are trained; a larger ``epochs`` continues every run to it, more ``seeds`` or other
``models`` add runs. Settings that change what a run is (dataset, architecture, optimiser,
data subset) are refused for an ``out`` trained with other ones, unless ``overwrite=True``,
which deletes ``out/runs`` and starts over.

The table reports the test bits/dim **after the last epoch** (not the best epoch: choosing the
epoch on the test set would flatter every model), mean ± sample standard deviation over the
seeds; forward (data→latent log-likelihood), sampling (latent→data) and one training step
(forward + backward + Adam), each the median time per batch of 100 images measured in one
process after all training (:func:`invconv_core.flows.time_models`), so the times are side by
side; and each run's training time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
from dataclasses import dataclass

import torch

from .data import DATASET_INFO, load_dataset
from .errors import RunExistsError
from .migration import migrate
from .io import atomic_write_bytes, atomic_write_json, save_image_grid, save_line_plot
from .models import (FAMILY_BASELINE, FAMILY_REFERENCE, MODELS, FlowConfig, family_of,
                     require_fits_in_memory)
from .sampling import load_flow, sample
from .timing import equal_size_configs, time_models
from .training import RESUME_MAY_CHANGE, TrainConfig, TrainResult, fit
from .runlock import remove_locked_tree, run_lock
from .validate import check_output_dir, require_int

__all__ = ["CompareConfig", "CompareResult", "ModelSummary", "compare", "run_directory"]

#: TrainConfig fields each run of a comparison sets for itself (its directory, model, seed);
#: ``width`` is the reference's in the template and matched per model.
_PER_RUN = ("out", "model", "seed", "resume", "overwrite")


def _defining_fields() -> tuple:
    """The run settings that define what a comparison's runs are: every TrainConfig field a
    resumed run may not change (:data:`RESUME_MAY_CHANGE`), but the per-run ones. An ``out``
    trained with other values of these cannot be continued (compare.json holds them)."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig)
                 if f.name not in RESUME_MAY_CHANGE and f.name not in _PER_RUN)


@dataclass(frozen=True)
class CompareConfig:
    """One comparison. ``run`` is the template of every run it trains (a :class:`TrainConfig`:
    dataset, epochs, architecture, optimiser, data subset, samples; default ``TrainConfig``'s
    defaults): each (model, seed) run is the template with its own ``out``
    (:func:`run_directory`), ``model``, ``seed`` and -- for a coupled model -- the coupling
    width matched to the reference's parameter count; the template's ``width`` is the
    reference's. The reference is the first model of the family (``FAMILY_REFERENCE``:
    Inverse-Flow, or cnn-inverse-flow for the CNN-only models), whether or not it is in
    ``models``. :meth:`from_options` takes the run's options flat, as the command line does."""

    out: str
    run: TrainConfig | None = None
    models: tuple = MODELS
    seeds: int = 3
    overwrite: bool = False            # delete out/runs and start over
    timing_repeats: int = 5            # median of this many timed batches (after one warm-up)

    def __post_init__(self):
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out must be a directory path, got {self.out!r}")
        models = (self.models,) if isinstance(self.models, str) else tuple(self.models)
        object.__setattr__(self, "models", models)
        family = family_of(models)
        if len(set(models)) != len(models):
            raise ValueError(f"models must not repeat a model, got {list(models)}")
        require_int("seeds", self.seeds, 1)
        require_int("timing_repeats", self.timing_repeats, 1)
        run = self.run if self.run is not None else TrainConfig(out=self.out)
        if not isinstance(run, TrainConfig):
            raise ValueError(f"run must be a TrainConfig (the template of every run), got {type(run).__name__}")
        object.__setattr__(self, "run", dataclasses.replace(
            run, out=self.out, model=FAMILY_REFERENCE[family], seed=0, resume=False, overwrite=False))

    @classmethod
    def from_options(cls, out: str, **options) -> "CompareConfig":
        """``CompareConfig(out, run=TrainConfig(out, **run_options), **compare_options)``: each
        option goes to the config that has a field of its name (CompareConfig's first)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"out", "run"}
        run_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(k for k in options if k not in own and k not in run_fields)
        if unknown:
            raise TypeError(f"CompareConfig.from_options: unknown option(s) {', '.join(unknown)}")
        return cls(out=out, run=TrainConfig(out=out, **{k: v for k, v in options.items() if k not in own}),
                   **{k: v for k, v in options.items() if k in own})

    def train_config(self, model: str, seed: int, width: int) -> TrainConfig:
        """The invconv-train run of ``model`` at coupling ``width`` with ``seed``."""
        return dataclasses.replace(self.run, out=run_directory(self.out, model, seed), model=model,
                                   seed=seed, width=width)

    def base_flow(self) -> FlowConfig:
        """The reference architecture (the other models are sized against its parameter count)."""
        return self.run.flow_config()

    def defining(self) -> dict:
        return {k: getattr(self.run, k) for k in _defining_fields()}


def run_directory(out: str, model: str, seed: int) -> str:
    return os.path.join(out, "runs", model, f"seed{seed}")


@dataclass(frozen=True)
class ModelSummary:
    """One row of the table: a model over its seeds (times in seconds per batch of 100)."""

    model: str
    width: int | None                  # coupling width; None for a model without couplings
    parameters: int
    test_bpd_mean: float
    test_bpd_std: float | None         # sample standard deviation; None for one seed
    test_bpd_per_seed: tuple
    forward_seconds: float
    sample_seconds: float
    train_step_seconds: float
    train_seconds_per_run: float       # mean over seeds, whole run


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare` measured; ``to_dict()`` is ``results.json``."""

    out: str
    dataset: str
    n_bins: int
    epochs: int
    seeds: int
    device: str
    settings: dict                     # the CompareConfig
    models: tuple                      # of ModelSummary, in the order asked for
    runs: tuple                        # of TrainResult, model by model, seed by seed
    markdown: str

    def to_dict(self) -> dict:
        return {"out": self.out, "dataset": self.dataset, "n_bins": self.n_bins,
                "epochs": self.epochs, "seeds": self.seeds, "device": self.device,
                "settings": self.settings,
                "models": [dataclasses.asdict(m) for m in self.models],
                "runs": [r.to_dict() for r in self.runs], "markdown": self.markdown}


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _check_settings(cfg: CompareConfig) -> None:
    """Refuses an ``out`` trained with other defining settings (unless overwriting)."""
    path = os.path.join(cfg.out, "compare.json")
    if cfg.overwrite or not os.path.exists(path):
        return
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict) or "defining" not in record:
            raise ValueError("no 'defining' settings")
        # the one migration rule of saved settings (a setting added since: its default then),
        # and a valid TrainConfig (values of the right types and ranges)
        saved = migrate(TrainConfig, record["defining"], f"{path}: defining", only=_defining_fields())
        TrainConfig(out=cfg.out, **saved)
    except (OSError, ValueError, TypeError) as err:
        raise RunExistsError(f"{path}: not a readable invconv-compare settings file ({err}); use "
                             f"another out, or overwrite to start over") from None
    ours = cfg.defining()
    changed = [f"{k} {saved[k]!r} → {ours[k]!r}" for k in ours if saved[k] != ours[k]]
    if changed:
        raise RunExistsError(f"{cfg.out}: holds a comparison trained with other settings "
                             f"({', '.join(changed)}); use another out (--out), or overwrite "
                             f"(--overwrite) to delete its runs and start over")


def _load_finished(train_cfg: TrainConfig, flow: FlowConfig) -> TrainResult | None:
    """The run's TrainResult if it has finished ``train_cfg.epochs`` epochs of this
    architecture, else None (not started, interrupted, or to be continued to more epochs)."""
    path = os.path.join(train_cfg.out, "metrics.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            result = TrainResult.from_dict(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: the run is continued from last.pt, which rewrites it
    if result.epochs != train_cfg.epochs or flow.differences(result.config):
        return None
    return result


def _train_all(cfg: CompareConfig, configs: dict, log) -> list:
    runs = []
    for model, flow in configs.items():
        for seed in range(cfg.seeds):
            tcfg = cfg.train_config(model, seed, flow.width)
            tag = f"[{model} seed {seed}]"
            done = _load_finished(tcfg, flow)
            if done is not None:
                log(f"{tag} finished earlier ({done.epochs} epochs, test bpd {done.test_bpd:.4f}): skipped")
                runs.append(done)
                continue
            resume = os.path.isfile(os.path.join(tcfg.out, "last.pt"))
            log(f"{tag} {'continuing' if resume else 'training'} in {tcfg.out}")
            result = fit(dataclasses.replace(tcfg, resume=resume), log=lambda line: log(f"{tag} {line}"))
            runs.append(result)
    return runs


def _summaries(configs: dict, runs: list, timing: list) -> list:
    rows = []
    for model, flow in configs.items():
        mine = [r for r in runs if r.model == model]
        bpd = [r.test_bpd for r in mine]
        t = next(row for row in timing if row["model"] == model)
        width = flow.coupling_width
        if t["width"] != width or t["parameters"] != mine[0].parameters:  # one equal-size rule
            raise AssertionError(f"{model}: timed width {t['width']} / {t['parameters']} parameters "
                                 f"differ from the trained {width} / {mine[0].parameters}")
        rows.append(ModelSummary(
            model=model, width=width, parameters=mine[0].parameters,
            test_bpd_mean=statistics.fmean(bpd),
            test_bpd_std=statistics.stdev(bpd) if len(bpd) > 1 else None,
            test_bpd_per_seed=tuple(bpd), forward_seconds=t["forward_seconds"],
            sample_seconds=t["sample_seconds"], train_step_seconds=t["train_step_seconds"],
            train_seconds_per_run=statistics.fmean(r.train_seconds for r in mine)))
    return rows


def _markdown(cfg: CompareConfig, base: FlowConfig, rows: list, device: torch.device) -> str:
    info = DATASET_INFO[cfg.run.dataset]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}"
    head = (f"{cfg.run.dataset} {'×'.join(map(str, info.image_shape))}, {info.n_bins} levels; "
            f"L={base.levels}, K={base.steps}, k={base.kernel_size}; {cfg.run.epochs} epochs, batch "
            f"{cfg.run.batch_size}, Adam {cfg.run.lr:g} (÷10 every {cfg.run.lr_step or info.lr_step} epochs); "
            f"seeds 0–{cfg.seeds - 1}; {where}")
    glow = next((r for r in rows if r.model in FAMILY_BASELINE.values()), None)
    lines = [head, "",
             f"| model | coupling width | parameters | test bits/dim (mean ± std, {cfg.seeds} "
             f"seed{'s' if cfg.seeds > 1 else ''}) | − Glow's | FT (ms / 100) | ST (ms / 100) | "
             f"train step (ms / 100) | training (s / run) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = f" ± {r.test_bpd_std:.4f}" if r.test_bpd_std is not None else ""
        delta = f"{r.test_bpd_mean - glow.test_bpd_mean:+.4f}" if glow else "—"
        lines.append(f"| {r.model} | {r.width or '—'} | {r.parameters:,} | {r.test_bpd_mean:.4f}{spread} | "
                     f"{delta} | {r.forward_seconds * 1e3:.1f} | {r.sample_seconds * 1e3:.1f} | "
                     f"{r.train_step_seconds * 1e3:.1f} | {r.train_seconds_per_run:.1f} |")
    lines += ["", "Test bits/dim after the last epoch, on the test split; FT = forward "
                  "(data→latent log-likelihood), ST = sampling, per batch of 100, medians of "
                  f"{cfg.timing_repeats} in one process."]
    return "\n".join(lines) + "\n"


def _plot(rows: list, runs: list, path: str, title: str) -> None:
    def draw(ax):
        for r in rows:
            histories = [run.history for run in runs if run.model == r.model]
            epochs = [h["epoch"] for h in histories[0]]
            per_epoch = [[h[i]["test_bpd"] for h in histories] for i in range(len(epochs))]
            mean = [statistics.fmean(v) for v in per_epoch]
            line, = ax.plot(epochs, mean, label=f"{r.model} ({r.test_bpd_mean:.3f})")
            if len(histories) > 1:
                ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                                color=line.get_color(), alpha=0.2, linewidth=0)
    save_line_plot(path, draw, "epoch", "test bits/dim", title)


def compare(cfg: CompareConfig, log=print) -> CompareResult:
    """Train (or continue, or skip) every run of ``cfg``, then measure, plot and tabulate.

    Raises before any training: ValueError for bad values, :class:`RunExistsError` for an
    ``out`` trained with other settings, OSError for an unusable ``out``, ImportError when
    matplotlib (the plot) or the dataset's optional package is missing, FileNotFoundError for
    missing dataset files. During training, what :func:`fit` raises (:class:`TrainingDiverged`
    names the run; the finished runs stay and are skipped next time). A second process on the
    same ``out`` is refused with :class:`RunLockedError` (:mod:`.runlock`)."""
    check_output_dir(cfg.out, "comparison directory (out)", create=False)
    configs = _sized_configs(cfg)
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError("invconv-compare plots with matplotlib, an optional extra: pip install "
                          "'invconv-core[plots]' (or pip install matplotlib)") from err
    with run_lock(cfg.out, "comparison directory", create=True) as claim:
        return _compare(cfg, configs, log, claim)


def _sized_configs(cfg: CompareConfig, steps_option: str = "steps") -> dict:
    """Every model's architecture at equal size (:func:`equal_size_configs`), each checked to
    fit in memory first (a ValueError naming the options otherwise; nothing allocated)."""
    base = cfg.base_flow()
    require_fits_in_memory(base, cfg.run.batch_size, cfg.run.device, steps_option)
    configs = equal_size_configs(base, cfg.models)
    for flow in configs.values():
        require_fits_in_memory(flow, cfg.run.batch_size, cfg.run.device, steps_option)
    return configs


def _compare(cfg: CompareConfig, configs: dict, log, claim=None) -> CompareResult:
    _check_settings(cfg)
    load_dataset(cfg.run.dataset, "test", cfg.run.data_dir)  # a missing file or package fails now, not later
    if claim is not None:
        claim.keep()
    device = _device(cfg.run.device)
    base = cfg.base_flow()
    with contextlib.ExitStack() as held:
        if cfg.overwrite:  # refused, deleting nothing, while any run inside is being written
            remove_locked_tree(os.path.join(cfg.out, "runs"))
        # every run this comparison starts, resumes or reads is locked as a run of its own, from
        # now until its samples are drawn: a busy one is refused before any training, and no
        # other process can replace a run between its training and its measurement
        for model in configs:
            for seed in range(cfg.seeds):
                held.enter_context(run_lock(run_directory(cfg.out, model, seed), create=True)).keep()
        atomic_write_json({"defining": cfg.defining()}, os.path.join(cfg.out, "compare.json"))
        return _train_and_measure(cfg, configs, base, device, log)


def _train_and_measure(cfg: CompareConfig, configs: dict, base: FlowConfig, device, log) -> CompareResult:
    runs = _train_all(cfg, configs, log)

    log(f"timing {', '.join(cfg.models)} side by side (batch 100, median of {cfg.timing_repeats})")
    timing = time_models(base, device, batch=100, repeats=cfg.timing_repeats, models=cfg.models)
    rows = _summaries(configs, runs, timing)
    for r in rows:  # the seed-0 model of each
        model = load_flow(os.path.join(run_directory(cfg.out, r.model, 0), "last.pt"), device)
        images = sample(model, cfg.run.samples, cfg.run.temperature, seed=0)
        save_image_grid(images, os.path.join(cfg.out, "samples", f"{r.model}.png"),
                        scale=4 if base.image_shape[1] <= 16 else 1)
    table = _markdown(cfg, base, rows, device)
    _plot(rows, runs, os.path.join(cfg.out, "bpd_vs_epoch.png"),
          f"{cfg.run.dataset}: test bits/dim, mean over {cfg.seeds} seed(s) (band: best to worst)")
    result = CompareResult(out=cfg.out, dataset=cfg.run.dataset, n_bins=base.n_bins, epochs=cfg.run.epochs,
                           seeds=cfg.seeds, device=str(device),
                           settings={**dataclasses.asdict(cfg), "models": list(cfg.models)},  # run: nested
                           models=tuple(rows), runs=tuple(runs), markdown=table)
    atomic_write_bytes(table.encode(), os.path.join(cfg.out, "table.md"))
    atomic_write_json(result.to_dict(), os.path.join(cfg.out, "results.json"))
    log(table)
    return result
