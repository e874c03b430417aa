import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Default: quick enough for CI (2 cores, whole suite well under 5 minutes).
settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# Deeper search: `pytest verification/ --hypothesis-profile=deep` (or INVCONV_HYPOTHESIS=deep).
settings.register_profile("deep", max_examples=600, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("INVCONV_HYPOTHESIS", "default"))


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
