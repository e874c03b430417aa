r"""The depth sweep (the paper's Table 4, after Self-Normalizing Flows): one comparison per
number of steps K, the same models, seeds and training at every depth, then one table of test
bits/dim against K (:func:`compare_depths` takes a :class:`DepthSweepConfig` and returns a
:class:`DepthSweepResult`; the command line is ``invconv-compare --depths 1 2 4 8``).

    from invconv_core.flows import CNN_MODELS, CompareConfig, DepthSweepConfig, compare_depths
    template = CompareConfig.from_options("runs/depth", dataset="mnist5k", models=CNN_MODELS,
                                          seeds=2, epochs=10)
    print(compare_depths(DepthSweepConfig(template, depths=(1, 2, 4, 8))).markdown)

``comparison.out`` holds one :func:`~invconv_core.flows.compare` directory per depth,
``steps<K>/`` (its runs, table, plot, samples), and

    depths.json             strict JSON: the settings and, per depth, the comparison's rows
    depth_table.md          test bits/dim (mean ± std over seeds) per model and K, with the
                            parameter count of each
    bpd_vs_depth.png        test bits/dim against K, one line per model

Resumable as a comparison is: finished runs are skipped, interrupted ones continue; adding a
depth adds its comparison. One writer: the sweep holds ``out``'s lock, each comparison its own.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .comparison import CompareConfig, CompareResult, _check_settings, _sized_configs, compare
from .data import load_dataset
from .io import atomic_write_bytes, atomic_write_json, save_line_plot
from .runlock import run_lock
from .validate import check_output_dir, require_int

__all__ = ["DepthSweepConfig", "DepthSweepResult", "compare_depths", "depth_directory"]


@dataclass(frozen=True)
class DepthSweepConfig:
    """A comparison (``comparison``: its models, seeds and run template, in ``comparison.out``)
    repeated at each K of ``depths`` (flow steps per level; distinct, increasing order kept as
    given). ``comparison.run.steps`` is replaced by each K."""

    comparison: CompareConfig
    depths: tuple = (1, 2, 4, 8)

    def __post_init__(self):
        if not isinstance(self.comparison, CompareConfig):
            raise ValueError(f"comparison must be a CompareConfig, got {type(self.comparison).__name__}")
        depths = (self.depths,) if isinstance(self.depths, int) else tuple(self.depths)
        if not depths:
            raise ValueError("depths must name at least one number of steps")
        for k in depths:
            require_int("depths", k, 1)
        if len(set(depths)) != len(depths):
            raise ValueError(f"depths must not repeat a value, got {list(depths)}")
        object.__setattr__(self, "depths", depths)

    def at(self, steps: int) -> CompareConfig:
        """The comparison at K = ``steps``, in its own directory."""
        c = self.comparison
        return dataclasses.replace(c, out=depth_directory(c.out, steps),
                                   run=dataclasses.replace(c.run, steps=steps))


def depth_directory(out: str, steps: int) -> str:
    return os.path.join(out, f"steps{steps}")


@dataclass(frozen=True)
class DepthSweepResult:
    """What :func:`compare_depths` measured; ``to_dict()`` is ``depths.json``."""

    out: str
    depths: tuple
    comparisons: tuple                 # of CompareResult, one per depth, in ``depths`` order
    markdown: str

    def to_dict(self) -> dict:
        return {"out": self.out, "depths": list(self.depths),
                "comparisons": [{"steps": k, "models": [dataclasses.asdict(m) for m in r.models],
                                 "settings": r.settings}
                                for k, r in zip(self.depths, self.comparisons)],
                "markdown": self.markdown}


def _markdown(cfg: DepthSweepConfig, results: list) -> str:
    c = cfg.comparison
    head = (f"{c.run.dataset}: test bits/dim against K (flow steps per level), L={c.base_flow().levels}, "
            f"k={c.run.kernel_size}; {c.run.epochs} epochs, batch {c.run.batch_size}, Adam "
            f"{c.run.lr:g}; mean ± std over seeds 0–{c.seeds - 1}; parameters in brackets")
    lines = [head, "", "| model | " + " | ".join(f"K = {k}" for k in cfg.depths) + " |",
             "|---|" + "---|" * len(cfg.depths)]
    for i, model in enumerate(c.models):
        cells = []
        for r in results:
            row = r.models[i]
            spread = f" ± {row.test_bpd_std:.3f}" if row.test_bpd_std is not None else ""
            cells.append(f"{row.test_bpd_mean:.3f}{spread} ({row.parameters:,})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", f"Test bits/dim after the last epoch. Per K, the comparison's own table (times, "
                  f"per-seed values): {os.path.join(c.out, 'steps<K>', 'table.md')}."]
    return "\n".join(lines) + "\n"


def _plot(cfg: DepthSweepConfig, results: list, path: str) -> None:
    def draw(ax):
        for i, model in enumerate(cfg.comparison.models):
            means = [r.models[i].test_bpd_mean for r in results]
            errs = [r.models[i].test_bpd_std or 0.0 for r in results]
            ax.errorbar(cfg.depths, means, yerr=errs, marker="o", capsize=3, label=model)
        ax.set_xscale("log", base=2)
        ax.set_xticks(cfg.depths, [str(k) for k in cfg.depths])
    save_line_plot(path, draw, "K (flow steps per level)", "test bits/dim",
                   f"{cfg.comparison.run.dataset}: test bits/dim against depth")


def compare_depths(cfg: DepthSweepConfig, log=print) -> DepthSweepResult:
    """Run (or continue, or skip) the comparison at every depth, then tabulate and plot. Raises
    what :func:`compare` raises; the checks of every depth's settings run before any training."""
    out = cfg.comparison.out
    check_output_dir(out, "depth-sweep directory (out)", create=False)
    for k in cfg.depths:  # every depth fits, before anything is created
        _sized_configs(cfg.at(k), "depths")
    with run_lock(out, "depth-sweep directory", create=True) as claim:
        for k in cfg.depths:  # a depth trained with other settings is refused before any work
            _check_settings(cfg.at(k))
        load_dataset(cfg.comparison.run.dataset, "test", cfg.comparison.run.data_dir)
        claim.keep()
        results: list[CompareResult] = []
        for k in cfg.depths:
            log(f"== K = {k} ==")
            results.append(compare(cfg.at(k), log=log))
        table = _markdown(cfg, results)
        _plot(cfg, results, os.path.join(out, "bpd_vs_depth.png"))
        result = DepthSweepResult(out=out, depths=cfg.depths, comparisons=tuple(results), markdown=table)
        atomic_write_bytes(table.encode(), os.path.join(out, "depth_table.md"))
        atomic_write_json(result.to_dict(), os.path.join(out, "depths.json"))
        log(table)
        return result
