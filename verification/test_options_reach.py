"""Every command-line option of invconv-train and invconv-compare reaches the object it
configures (issue 21, part 3): parsed with a value other than its default, the option must show
in the run's config and, for the architecture, in the model that config builds -- not only in an
argparse namespace. A planted ``kernel_size=3`` in ``TrainConfig.flow_config`` (``--kernel-size``
silently ignored) passed all 68 tool tests before; here it fails (the last test shows it).

An option without a probe below fails the test, so a new option comes with its check."""

from __future__ import annotations

import pytest

from invconv_core.flows import DATASET_INFO, AffineCoupling, InvConv2d, build_flow
from invconv_core.flows.cli import (compare_config_from_args, compare_parser, train_config_from_args,
                                    train_parser)


def _model(train_cfg):
    """The model a training run of `train_cfg` builds (fit: flow_config, from the data's facts)."""
    return build_flow(train_cfg.flow_config())


def _kernel_sizes(model):
    return {tuple(m.weight.shape[-2:]) for m in model.modules() if isinstance(m, InvConv2d)}


def _coupling_widths(model):
    return {m.net[0].out_channels for m in model.modules() if isinstance(m, AffineCoupling)}


def _steps_of_level0(model):
    return sum(isinstance(m, AffineCoupling) for m in model.levels[0].layers)


# option -> (value on the command line, probe(train config) -> what it should equal)
ARCHITECTURE = {
    "--dataset": ("photos", lambda cfg: _model(cfg).config.image_shape, (3, 32, 32)),
    "--model": ("glow", lambda cfg: (_model(cfg).config.model,
                                     any(isinstance(m, InvConv2d) for m in _model(cfg).modules())),
                ("glow", False)),
    "--levels": ("1", lambda cfg: len(_model(cfg).levels), 1),
    "--steps": ("2", lambda cfg: _steps_of_level0(_model(cfg)), 2),
    "--width": ("12", lambda cfg: _coupling_widths(_model(cfg)), {12}),
    "--kernel-size": ("2", lambda cfg: _kernel_sizes(_model(cfg)), {(2, 2)}),
}
# the training loop's settings: fit reads them from the TrainConfig field of the same name
TRAINING = {
    "--epochs": ("7", "epochs", 7), "--out": ("elsewhere", "out", "elsewhere"),
    "--data-dir": ("/data", "data_dir", "/data"), "--device": ("cpu", "device", "cpu"),
    "--resume": (None, "resume", True), "--overwrite": (None, "overwrite", True),
    "--batch-size": ("7", "batch_size", 7), "--lr": ("0.5", "lr", 0.5),
    "--lr-step": ("3", "lr_step", 3), "--grad-clip": ("2.5", "grad_clip", 2.5),
    "--max-train": ("9", "max_train", 9), "--max-test": ("8", "max_test", 8),
    "--samples": ("5", "samples", 5), "--temperature": ("0.5", "temperature", 0.5),
    "--seed": ("11", "seed", 11), "--workers": ("2", "workers", 2),
    "--threads": ("3", "threads", 3),
    "--no-progress": (None, "progress", False),
}
# invconv-compare's own (not a run's): the CompareConfig field. (--overwrite there deletes the
# comparison's runs and starts over: compare acts on it, its runs never see it.)
COMPARE_ONLY = {"--models": (["glow", "finc"], "models", ("glow", "finc")),
                "--depths": (["1", "3"], "depths", (1, 3)),
                "--seeds": ("2", "seeds", 2), "--timing-repeats": ("4", "timing_repeats", 4),
                "--progress": (None, "progress", True), "--overwrite": (None, "overwrite", True)}


def _options(parser):
    return sorted(a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help")


def _argv(option, value, base):
    if value is None:
        return [*base, option]
    return [*base, option, *(value if isinstance(value, list) else [value])]


def test_every_option_has_a_probe():
    probed = set(ARCHITECTURE) | set(TRAINING)
    assert set(_options(train_parser())) == probed
    assert set(_options(compare_parser())) == (probed | set(COMPARE_ONLY)) - {
        "--model", "--resume", "--no-progress", "--seed", "--workers"}


@pytest.mark.parametrize("option", sorted(ARCHITECTURE) + sorted(TRAINING))
def test_a_train_option_reaches_the_run(option):
    base = ["--out", "run"]
    if option in ARCHITECTURE:
        value, probe, expected = ARCHITECTURE[option]
        cfg = train_config_from_args(train_parser().parse_args(_argv(option, value, base)))
        assert probe(cfg) == expected
        return
    value, field, expected = TRAINING[option]
    if option == "--out":
        base = []
    cfg = train_config_from_args(train_parser().parse_args(_argv(option, value, base)))
    assert getattr(cfg, field) == expected


@pytest.mark.parametrize("option", sorted((set(ARCHITECTURE) | set(TRAINING) | set(COMPARE_ONLY))
                                           - {"--model", "--resume", "--no-progress", "--seed",
                                              "--workers"}))
def test_a_compare_option_reaches_every_run_it_trains(option):
    """invconv-compare: through CompareConfig to the run template (train_config) each model and
    seed trains with, and to the reference architecture (base_flow)."""
    base = ["--out", "cmp"] if option != "--out" else []
    if option in COMPARE_ONLY:
        value, field, expected = COMPARE_ONLY[option]
        cfg = compare_config_from_args(compare_parser().parse_args(_argv(option, value, base)))
        if option == "--depths":  # a sweep: its comparison at each depth trains at that K
            assert cfg.depths == expected
            assert [_steps_of_level0(_model(cfg.at(k).train_config("inverse-flow", 0, 8)))
                    for k in cfg.depths] == list(expected)
            return
        if option == "--progress":  # a run's option, set for every run of the comparison
            cfg = cfg.train_config(cfg.models[-1], 1, cfg.run.width)
        assert getattr(cfg, field) == expected
        return
    spec = ARCHITECTURE.get(option) or TRAINING[option]
    cfg = compare_config_from_args(compare_parser().parse_args(_argv(option, spec[0], base)))
    run = cfg.train_config(cfg.models[0], 0, cfg.run.width)
    if option in ARCHITECTURE:
        assert spec[1](run) == spec[2]
        flow = cfg.base_flow()  # the reference the other models are sized against
        assert dict(zip(("levels", "steps", "width", "kernel_size"),
                        (flow.levels, flow.steps, flow.width, flow.kernel_size))) == \
            dict(zip(("levels", "steps", "width", "kernel_size"),
                     (run.levels or DATASET_INFO[cfg.run.dataset].levels, run.steps, run.width,
                      run.kernel_size)))
    else:
        field, expected = spec[1], spec[2]
        if option == "--out":  # each run has its own directory under it
            assert run.out.startswith(expected)
        else:
            assert getattr(run, field) == expected


def test_the_option_check_catches_a_silently_ignored_kernel_size(monkeypatch):
    """The planted fault of issue 21: flow_config builds every model at kernel_size=3."""
    from invconv_core.flows.training import TrainConfig

    real = TrainConfig.flow_config

    def planted(self):
        return real(self).__class__(**{**real(self).to_dict(), "kernel_size": 3})

    monkeypatch.setattr(TrainConfig, "flow_config", planted)
    with pytest.raises(AssertionError):
        test_a_train_option_reaches_the_run("--kernel-size")
    with pytest.raises(AssertionError):
        test_a_compare_option_reaches_every_run_it_trains("--kernel-size")
