"""The pytest entry point of ``invconv_core.testing`` (registered under ``pytest11``, so pytest
loads it wherever invconv-core is installed). A top-level module of its own, outside the
``invconv_core`` package, so that loading it imports neither torch nor the compiled core: a
pytest run that uses no fixture of ours pays nothing::

    def test_my_layer(flow_checker):
        flow_checker(MyLayer(3), torch.randn(2, 3, 4, 4))

    def test_my_model(flow_model_checker):
        flow_model_checker(my_flow, torch.rand(2, 1, 4, 4), entropy_steps=0)

Each fixture is the check function: keyword arguments go to ``check_flow_layer`` /
``check_flow_model``; a failed property fails the test with the report's failure lines, and
the report is returned otherwise.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def flow_checker():
    """``flow_checker(layer, example, **options) -> Report``: check_flow_layer, asserting."""
    from invconv_core.testing import check_flow_layer

    def check(layer, example, **options):
        return check_flow_layer(layer, example, **options).raise_if_failed()
    return check


@pytest.fixture
def flow_model_checker():
    """``flow_model_checker(model, example, **options) -> Report``: check_flow_model, asserting."""
    from invconv_core.testing import check_flow_model

    def check(model, example, **options):
        return check_flow_model(model, example, **options).raise_if_failed()
    return check
