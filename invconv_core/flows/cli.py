r"""The command-line tools: each parses its arguments, calls one library function, prints, and
returns an exit status (the console scripts hand it to ``sys.exit``).

Exit status, the same for every tool: :data:`EXIT_STATUSES` (the one source of the tools'
``--help`` epilogues and of README's table, which a test keeps equal to it).

Every numeric option is checked by the parser; the output location before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading

import torch

from .classify import CLASSIFIER_DATASETS, ClassifierConfig, train_classifier
from .comparison import CompareConfig, compare
from .depth_sweep import DepthSweepConfig, compare_depths
from .data import DATASET_INFO, DATASETS
from .errors import FlowError
from .io import save_image_grid
from .models import ALL_MODELS, CNN_MODELS, FAMILY_REFERENCE, MODELS, FlowConfig, family_of
from .sampling import load_flow, sample
from .timing import markdown, median_seconds, time_models
from .training import TrainConfig, fit
from .validate import SEED_MAX, check_output_file, device_option, float_option, int_option

__all__ = ["train_main", "sample_main", "time_main", "classify_main", "compare_main", "run_tool",
           "EXIT_STATUSES", "exit_status_epilog"]

#: Every tool's exit statuses, with their meaning (README's table is this one, word for word).
EXIT_STATUSES = (
    (0, "success"),
    (1, "the work failed — missing or corrupt file, occupied or unwritable `--out`, diverged "
        "training — with one line `<tool>: error: ...` on stderr naming the file or value"),
    (2, "bad command line (unknown option, a number out of range such as `--epochs 0`): usage "
        "and one line naming the option"),
    (130, "interrupted (Ctrl-C); an interrupted training run continues with `--resume`"),
    (143, "terminated by SIGTERM (what batch schedulers send), like Ctrl-C: one line on stderr, "
          "the last checkpoint intact"),
    (129, "hung up (SIGHUP, a closed terminal), the same"),
)


def exit_status_epilog() -> str:
    """The exit statuses as one paragraph of ``--help`` (from :data:`EXIT_STATUSES`)."""
    return "Exit status: " + "; ".join(f"{code} {text.replace('`', '')}" for code, text in EXIT_STATUSES) + "."

_POS = int_option(1)
_SEED = int_option(0, SEED_MAX)
_NONNEG = int_option(0)
_DEVICE_DEFAULT = "cuda" if torch.cuda.is_available() else "cpu"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (what batch schedulers and a closed terminal send): raised in the
    main thread like KeyboardInterrupt, so a checkpoint being written is abandoned atomically
    (the previous one stays) and the tool exits with 128 + the signal's number. A subclass of
    KeyboardInterrupt, so that code which cleans up on Ctrl-C cleans up on these too. Forked
    DataLoader workers ignore both signals (the main process stops them)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


_SIGNALS_ACTIVE = [False]


def _ignore_in_child():
    # A forked DataLoader worker inherits the handler; it must not raise (nor die) on the
    # scheduler's signal: the main process stops it, and it exits when the main process does.
    if _SIGNALS_ACTIVE[0]:
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ignore_in_child)


@contextlib.contextmanager
def _signals_as_exceptions():
    """SIGTERM and SIGHUP raise :class:`Terminated` for the duration (main thread only)."""
    wanted = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _terminate) for s in wanted}
    hook = sys.unraisablehook
    pid = os.getpid()

    def redeliver(unraisable):
        # A signal handled while Python runs an at-fork hook (DataLoader workers are forked
        # every epoch) raises inside the hook, where the exception is printed and dropped: the
        # signal would be lost. A thread sends it again a moment later (not from here: handled
        # here, it would be dropped here too), to be raised at a safe point of the main thread.
        stop = unraisable.exc_value
        if isinstance(stop, Terminated) and os.getpid() == pid:
            threading.Timer(0.05, os.kill, (pid, stop.signum)).start()
            return
        hook(unraisable)

    sys.unraisablehook = redeliver
    _SIGNALS_ACTIVE[0] = True
    try:
        yield
    finally:
        _SIGNALS_ACTIVE[0] = False
        sys.unraisablehook = hook
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_tool(prog: str, body) -> int:
    """Runs ``body()`` and returns the exit status: 0 when it returns, 1 with one line on stderr
    for the errors a user can fix, 130 for Ctrl-C, 143 for SIGTERM and 129 for SIGHUP (one line
    on stderr each; a training run continues with --resume). Anything else is a bug and keeps
    its traceback."""
    try:
        with _signals_as_exceptions():
            body()
        return 0
    except Terminated as stop:  # before KeyboardInterrupt, its base class
        name = signal.Signals(stop.signum).name
        print(f"{prog}: interrupted by {name}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (FlowError, ValueError, OSError, ImportError) as err:
        message = str(err).strip().replace("\n", " ") or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1


# ----------------------------------------------------------------------------- option groups
# Each option is declared once, here; its default is the config field's (one home each), and the
# option's dest is the field's name, so a parsed namespace maps onto the config by name.

_RUN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_CLASSIFIER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ClassifierConfig)}
_COMPARE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CompareConfig)}
_DATA_DIR_HELP = "directory with the dataset files (mnist, cifar10, imagenet; digits, photos and mnist5k are embedded)"


def add_data_options(p) -> None:
    """--dataset, --data-dir, --max-train, --max-test (TrainConfig fields)."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=_RUN_DEFAULTS["dataset"])
    g.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    g.add_argument("--max-train", type=_POS, default=None, help="use only the first N training images")
    g.add_argument("--max-test", type=_POS, default=None, help="use only the first N test images")


def add_architecture_options(p, width_help: str = "hidden channels of the coupling networks "
                                                  "(coupled models; the CNN-only ones have none)") -> None:
    """--levels, --steps, --width, --kernel-size (TrainConfig → FlowConfig fields)."""
    g = p.add_argument_group("architecture")
    g.add_argument("--levels", type=_POS, default=None,
                   help="L (default: " + ", ".join(f"{k} {v.levels}" for k, v in DATASET_INFO.items()) + ")")
    g.add_argument("--steps", type=_POS, default=_RUN_DEFAULTS["steps"], help="K steps per level")
    g.add_argument("--width", type=_POS, default=_RUN_DEFAULTS["width"], help=width_help)
    g.add_argument("--kernel-size", type=_POS, default=_RUN_DEFAULTS["kernel_size"],
                   help="k of the k×k invertible convolutions")


def add_optimiser_options(p) -> None:
    """--epochs, --batch-size, --lr, --lr-step, --grad-clip (TrainConfig fields)."""
    g = p.add_argument_group("optimiser")
    g.add_argument("--epochs", type=_POS, default=_RUN_DEFAULTS["epochs"],
                   help="epochs of training (a resumed run continues to this)")
    g.add_argument("--batch-size", type=_POS, default=_RUN_DEFAULTS["batch_size"], help="per process")
    g.add_argument("--lr", type=float_option(0.0, strict=True), default=_RUN_DEFAULTS["lr"])
    g.add_argument("--lr-step", type=_POS, default=None,
                   help="epochs between lr/10 (default " + ", ".join(f"{k} {v.lr_step}" for k, v in DATASET_INFO.items()) + ")")
    g.add_argument("--grad-clip", type=float_option(0.0), default=_RUN_DEFAULTS["grad_clip"],
                   help="max gradient norm (0: off)")


def add_temperature_option(p) -> None:
    p.add_argument("--temperature", type=float_option(0.0), default=_RUN_DEFAULTS["temperature"],
                   help="sampling temperature of the sample grids")


def add_sample_options(p) -> None:
    """--samples, --temperature (TrainConfig fields: the run's final sample grid)."""
    g = p.add_argument_group("samples")
    g.add_argument("--samples", type=_POS, default=_RUN_DEFAULTS["samples"], help="images in each sample grid")
    add_temperature_option(g)


def add_seed_option(p, default: int) -> None:
    p.add_argument("--seed", type=_SEED, default=default)


_REFERENCE_WIDTH_HELP = ("the reference's coupling width (Inverse-Flow's); the other coupled models "
                         "get the reference's parameter count; the CNN-only models have no couplings")


def add_models_option(p) -> None:
    """--models (several, of one family; the tools that compare models)."""
    p.add_argument("--models", nargs="+", choices=ALL_MODELS, default=list(MODELS),
                   help="models of one family (default: " + " ".join(MODELS) + "; CNN-only: "
                        + " ".join(CNN_MODELS) + ")")


def add_threads_option(p) -> None:
    p.add_argument("--threads", type=_POS, default=_RUN_DEFAULTS["threads"],
                   help="CPU threads of the run (default: torch's); a run resumes bit-identically "
                        "under the thread count it was trained with")


def add_device_option(p, default=None) -> None:
    p.add_argument("--device", type=device_option, default=default,
                   help="cpu, cuda, cuda:1, ... (default: cuda if available)")


# ----------------------------------------------------------------------------- invconv-train

def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invconv-train",
        description="Train a flow (Inverse-Flow, a baseline, or a CNN-only flow) and report test bits/dim.",
        epilog="Writes OUT/last.pt every epoch, OUT/best.pt at the best test bits/dim, "
               "OUT/samples.png and OUT/metrics.json. " + exit_status_epilog())
    p.add_argument("--model", choices=ALL_MODELS, default=_RUN_DEFAULTS["model"])
    p.add_argument("--out", required=True, help="run directory (checkpoints, samples, metrics)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last.pt (it may change only --epochs, --device, "
                           "--data-dir, --workers, --samples, --temperature, --threads and progress; "
                           "any other setting that differs from the run's is refused)")
    mode.add_argument("--overwrite", action="store_true", help="replace the run already in OUT")
    add_data_options(p)
    add_architecture_options(p)
    add_optimiser_options(p)
    add_sample_options(p)
    add_device_option(p)
    add_threads_option(p)
    add_seed_option(p, _RUN_DEFAULTS["seed"])
    p.add_argument("--workers", type=_NONNEG, default=_RUN_DEFAULTS["workers"], help="DataLoader workers")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


def train_config_from_args(args) -> TrainConfig:
    fields = {k: v for k, v in vars(args).items() if k != "no_progress"}
    return TrainConfig(**fields, progress=not args.no_progress)


def train_main(argv=None) -> int:
    parser = train_parser()
    args = parser.parse_args(argv)
    return run_tool(parser.prog,
                    lambda: fit(train_config_from_args(args), log=lambda line: print(line, flush=True)))


# ----------------------------------------------------------------------------- invconv-sample

def sample_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="invconv-sample", epilog=exit_status_epilog(),
                                description="Draw images from a trained flow checkpoint into a grid PNG, with timing.")
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt of an invconv-train run")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--n", type=_POS, default=64, help="number of images")
    add_temperature_option(p)
    add_device_option(p, _DEVICE_DEFAULT)
    add_seed_option(p, 0)
    args = p.parse_args(argv)

    def body():
        check_output_file(args.out, "output PNG (--out)")
        device = torch.device(args.device)
        model = load_flow(args.checkpoint, device)
        images = sample(model, args.n, args.temperature, seed=args.seed)
        with torch.no_grad():
            seconds = median_seconds(lambda: model.sample(100, args.temperature), device)
        save_image_grid(images, args.out, scale=4 if model.config.image_shape[1] <= 16 else 1)
        print(f"wrote {args.n} samples to {args.out}; sampling takes {seconds * 1e3:.2f} ms per 100 "
              f"images ({model.config.model}, {device})")
    return run_tool(p.prog, body)


# ----------------------------------------------------------------------------- invconv-time

def time_main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="invconv-time", epilog=exit_status_epilog(),
        description="The paper's timing table: forward (FT) and sampling (ST) time per batch, a "
                    "training step, and parameters, for every model at Inverse-Flow's size.")
    p.add_argument("--shape", choices=sorted(DATASET_INFO), default="mnist", help="image shape of this dataset")
    add_architecture_options(p, width_help=_REFERENCE_WIDTH_HELP)
    p.add_argument("--batch", type=_POS, default=100)
    p.add_argument("--repeats", type=_POS, default=5)
    add_models_option(p)
    add_device_option(p, _DEVICE_DEFAULT)
    args = p.parse_args(argv)

    def body():
        info = DATASET_INFO[args.shape]
        base = FlowConfig.for_dataset(args.shape, model=FAMILY_REFERENCE[family_of(args.models)],
                                      levels=args.levels, steps=args.steps, width=args.width,
                                      kernel_size=args.kernel_size)
        device = torch.device(args.device)
        rows = time_models(base, device, args.batch, args.repeats, args.models)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(markdown(rows, f"{args.shape} {'×'.join(map(str, info.image_shape))}, L={base.levels}, "
                             f"K={base.steps}, k={base.kernel_size}, batch {args.batch}, {name}, "
                             f"median of {args.repeats}"))
    return run_tool(p.prog, body)


# ----------------------------------------------------------------------------- invconv-classify

def classify_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="invconv-classify", epilog=exit_status_epilog(),
                                description="The paper's classifier: two inverse-of-convolution layers and one linear layer.")
    p.add_argument("--dataset", choices=CLASSIFIER_DATASETS, default="digits")
    p.add_argument("--epochs", type=_POS, default=_CLASSIFIER_DEFAULTS["epochs"])
    p.add_argument("--out", required=True, help="output directory (classifier.pt, metrics.json)")
    p.add_argument("--overwrite", action="store_true", help="replace a classifier already in OUT")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=_POS, default=_CLASSIFIER_DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float_option(0.0, strict=True), default=_CLASSIFIER_DEFAULTS["lr"])
    p.add_argument("--kernel-size", type=_POS, default=_CLASSIFIER_DEFAULTS["kernel_size"])
    add_device_option(p, _DEVICE_DEFAULT)
    add_seed_option(p, _CLASSIFIER_DEFAULTS["seed"])
    args = p.parse_args(argv)

    def body():
        r = train_classifier(ClassifierConfig(**vars(args)))
        print(f"test accuracy {r.test_accuracy:.4f} (train {r.train_accuracy:.4f}) after "
              f"{r.epochs} epochs, {r.invconv_parameters} inv-conv weights, {r.train_seconds:.1f} s; "
              f"wrote {os.path.join(args.out, 'metrics.json')}")
    return run_tool(p.prog, body)


# ----------------------------------------------------------------------------- invconv-compare

def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invconv-compare",
        description="Train every model (or --models) at equal parameter count for equal epochs over "
                    "--seeds seeds, then tabulate test bits/dim (mean ± std) and forward, sampling "
                    "and training-step times side by side; with --depths, one such comparison per "
                    "number of steps K and a table of bits/dim against K.",
        epilog="Writes OUT/table.md, OUT/results.json, OUT/bpd_vs_epoch.png, OUT/samples/<model>.png "
               "and one invconv-train run per model and seed in OUT/runs/<model>/seed<s> (with "
               "--depths: one such directory OUT/steps<K> per K, and OUT/depth_table.md, "
               "OUT/depths.json, OUT/bpd_vs_depth.png). Run it again to continue: finished runs "
               "are skipped, interrupted ones resume. " + exit_status_epilog())
    add_models_option(p)
    p.add_argument("--seeds", type=_POS, default=_COMPARE_DEFAULTS["seeds"], help="seeds 0 .. S-1 per model")
    p.add_argument("--depths", type=_POS, nargs="+", default=None,
                   help="a depth sweep: one comparison per K of these (replaces --steps)")
    p.add_argument("--out", required=True, help="comparison directory")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the runs in OUT and start over (needed to change the settings of OUT)")
    add_data_options(p)
    add_architecture_options(p, width_help=_REFERENCE_WIDTH_HELP)
    add_optimiser_options(p)
    add_sample_options(p)
    add_device_option(p)
    add_threads_option(p)
    p.add_argument("--timing-repeats", type=_POS, default=_COMPARE_DEFAULTS["timing_repeats"])
    p.add_argument("--progress", action="store_true", help="tqdm progress bars")
    return p


def compare_config_from_args(args):
    """A CompareConfig (or, with --depths, a DepthSweepConfig holding one) from the parsed
    options: each option goes to the config with a field of its name."""
    options = {k: v for k, v in vars(args).items() if k != "depths"}
    if args.depths:
        return DepthSweepConfig(CompareConfig.from_options(**options), tuple(args.depths))
    return CompareConfig.from_options(**options)


def compare_main(argv=None) -> int:
    parser = compare_parser()
    args = parser.parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731

    def body():
        cfg = compare_config_from_args(args)
        if isinstance(cfg, DepthSweepConfig):
            compare_depths(cfg, log=log)
        else:
            compare(cfg, log=log)
    return run_tool(parser.prog, body)
