import os
import sys

# the dense/sparse structure of T is shared with the verification oracle
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "verification"))


def pytest_addoption(parser):
    parser.addoption("--bench-profile", default=os.environ.get("INVCONV_BENCH_PROFILE", "quick"),
                     help="scaling benchmark sizes: smoke, quick (default, <= 10 min on 2 cores) or full")


def pytest_generate_tests(metafunc):
    if "scaling_case" in metafunc.fixturenames:
        from profiles import cases

        selected = cases(metafunc.config.getoption("--bench-profile"))
        metafunc.parametrize("scaling_case", selected, ids=[c.id for c in selected])
