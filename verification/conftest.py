import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Default: quick enough for CI (2 cores, whole suite well under 5 minutes).
settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# Deeper search: `pytest verification/ --hypothesis-profile=deep` (or INVCONV_HYPOTHESIS=deep).
# The GPU command's lease-sized run (bench/gpu.py --quick): a few examples per property.
settings.register_profile("quick", max_examples=8, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=600, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("INVCONV_HYPOTHESIS", "default"))


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)


# The operator tests first (a planted bug in the plan, a kernel, the autograd formulas, the
# log-det or the fallback fails within the first minute), then the builds and the tools.
FILE_ORDER = ["test_errors.py", "test_backend.py", "test_dense_oracle.py", "test_implementations.py",
              "test_autograd.py", "test_transforms.py", "test_likelihood.py", "test_flow_layers.py", "test_flow_checker.py", "test_flow_modes.py", "test_flow_data.py", "test_verify.py",
              "test_cuda_emulation.py", "test_cuda.py", "test_cpu_pipeline_race.py",
              "test_cuda_compile.py", "test_flow_cli.py", "test_flow_compare.py",
              "test_console_scripts.py", "test_reliability.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FILE_ORDER)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FILE_ORDER)))  # stable within a file
