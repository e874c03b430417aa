"""``invconv-verify`` (also ``python -m invconv_core.verify``): checks this installation's
operators against the dense float64 oracle on every device present and every implementation in
use -- the inverse, the adjoint solve, both gradients, the log-det and gradcheck -- and prints
one line per check, device and dtype with its worst error against its tolerance, then a verdict.

With ``--layer MODULE:FACTORY`` (or ``--model``) it checks a flow layer (a density model) of
yours or of another library instead -- inverse consistency, log-dets against the dense Jacobian,
batch independence, gradients (invconv_core.testing; docs/testing.md) -- one line per property.

Exit status: 0 every check passed; 1 a check failed (its smallest failing case is printed as a
Python snippet that replays it; ``--seed`` replays the whole run); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

#: The most --cases one run draws (each case costs dense float64 solves: 100,000 take hours).
MAX_CASES = 100_000


def _parse(argv):
    from .flows.validate import int_option
    p = argparse.ArgumentParser(prog="invconv-verify", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n")[1])
    p.add_argument("--seed", type=int_option(0), default=None,
                   help="seed of the random cases (default: a fresh one, printed; pass it to replay)")
    p.add_argument("--cases", type=int_option(1, MAX_CASES), default=None,
                   help=f"random cases per check (default 60; 400 with --deep; at most {MAX_CASES:,})")
    p.add_argument("--deep", action="store_true",
                   help="a longer search: more and larger cases (C up to 16, images up to 12², kernels up to 15)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON to FILE")
    user = p.add_argument_group("checking your own flow layer or model (invconv_core.testing)")
    which = user.add_mutually_exclusive_group()
    which.add_argument("--layer", metavar="MODULE:FACTORY", default=None,
                       help="check the flow layer FACTORY() returns (or FACTORY itself); MODULE is a dotted "
                            "module or a .py file; FACTORY may return (layer, example)")
    which.add_argument("--model", metavar="MODULE:FACTORY", default=None,
                       help="check the density model FACTORY() returns: density against the dense Jacobian "
                            "plus its prior, sampling, the entropy bound")
    user.add_argument("--input-shape", metavar="N,C,H,W", default=None,
                      help="shape of the example input (a batch first), unless FACTORY returns one")
    user.add_argument("--input", choices=("normal", "uniform"), default=None,
                      help="the example's values: N(0, 1), or uniform in (0.05, 0.95) for data in (0, 1) "
                           "(default normal; uniform for --model)")
    user.add_argument("--protocol", default="auto",
                      help="how to call it: auto (detected), invconv, nflows, normflows, zuko, freia")
    user.add_argument("--entropy-steps", type=int_option(0), default=300,
                      help="--model: training steps of the 1-bit/dim entropy bound (0 skips it; default 300)")
    args = p.parse_args(argv)
    if (args.layer or args.model) and (args.cases or args.deep):
        p.error("--cases and --deep apply to the operator checks, not to --layer/--model")
    if not (args.layer or args.model) and (args.input_shape or args.protocol != "auto"):
        p.error("--input-shape and --protocol need --layer or --model")
    if args.input_shape:
        from .testing.loading import parse_shape
        try:
            args.input_shape = parse_shape(args.input_shape)
        except ValueError as err:
            p.error(f"argument --input-shape: {err}")
    args.input = args.input or ("uniform" if args.model else "normal")
    return args


def _check_user_code(args) -> int:
    """--layer / --model: load the factory, run the checks, print the report."""
    from .testing import check_flow_layer, check_flow_model
    from .testing.loading import FactoryError, load_factory, make_subject
    option, spec = ("--layer", args.layer) if args.layer else ("--model", args.model)
    seed = args.seed if args.seed is not None else 0
    try:
        subject, example = make_subject(load_factory(spec), args.input_shape, args.input, seed)
        if args.layer:
            report = check_flow_layer(subject, example, protocol=args.protocol, seed=seed)
        else:
            report = check_flow_model(subject, example, protocol=args.protocol, seed=seed,
                                      entropy_steps=args.entropy_steps)
    except (FactoryError, ValueError) as err:  # a bad spec, example, protocol: before any check
        print(f"invconv-verify: error: {option} {spec}: {err}", file=sys.stderr)
        return 2
    print(report)
    print("\n" + ("VERIFIED" if report.passed else "FAILED") + f": {spec}")
    if args.json:
        from .flows.io import atomic_write_json
        payload = {"subject": spec, "kind": "layer" if args.layer else "model", "seed": seed,
                   "protocol": report.protocol, "passed": report.passed, "seconds": report.seconds,
                   "results": [r.to_dict() for r in report.results]}
        try:
            atomic_write_json(payload, args.json)
        except OSError as err:
            print(f"invconv-verify: error: {str(err).strip()}", file=sys.stderr)
            return 1
    return 0 if report.passed else 1


def _line(r) -> str:
    status = "PASS" if r.passed else f"FAIL ({len(r.failures)} of {r.cases} cases)"
    if r.check == "gradcheck":  # pass/fail per case, no error to quote
        measured = f"{'finite differences agree':38s}"
    else:
        measured = f"worst {r.worst_error:9.3g} (tolerance {r.worst_tolerance:9.3g})"
    return f"{r.device:7s} {r.implementation:22s} {r.check:9s} {r.dtype:8s} {measured}  {r.cases:3d} cases  {status}"


def main(argv=None) -> int:
    args = _parse(argv)
    if args.json:
        from .flows.validate import check_output_file
        folder = os.path.dirname(os.path.realpath(args.json))
        try:
            if not os.path.exists(args.json) or os.path.isfile(args.json):
                if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                    raise PermissionError(f"directory {folder!r} does not exist or is not writable")
            check_output_file(args.json, "JSON file")  # a device, FIFO or /dev/stdout: written in place
        except OSError as err:
            print(f"invconv-verify: error: --json {args.json!r}: {err}", file=sys.stderr)
            return 1
    if args.layer or args.model:
        return _check_user_code(args)
    from . import backend_info, selfcheck
    from .flows.io import atomic_write_json
    from .oracle import ORACLE_SOLVER

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    n = args.cases or (400 if args.deep else 60)
    info = backend_info()
    print(f"invconv_core {info['version']} ({os.path.dirname(os.path.abspath(selfcheck.__file__))}); "
          f"compiled core: {info['compiled']}, CUDA kernels: {info['cuda']}; oracle: {ORACLE_SOLVER}")
    print(f"seed {seed} (replay: invconv-verify --seed {seed}{' --deep' if args.deep else ''}"
          f"{f' --cases {n}' if args.cases else ''}); {n} random cases per check; devices: "
          f"{', '.join(selfcheck.devices())}")
    start = time.perf_counter()
    cases = selfcheck.draw_cases(seed, n, deep=args.deep)
    results = selfcheck.run_checks(cases, progress=lambda r: print(_line(r), flush=True))
    failed = [r for r in results if not r.passed]
    seconds = time.perf_counter() - start
    for r in failed:
        print(f"\nsmallest failing case of {r.check} on {r.device} ({r.implementation}, {r.dtype}):")
        print(selfcheck.snippet(r) if r.failures else "(no cases ran)")
    verdict = (f"VERIFIED: all {len(results)} checks passed in {seconds:.0f} s" if not failed else
               f"FAILED: {len(failed)} of {len(results)} checks failed (seed {seed})")
    print("\n" + verdict)
    if args.json:
        payload = {"seed": seed, "cases": n, "deep": args.deep, "seconds": seconds, "backend": info,
                   "passed": not failed, "results": [r.to_dict() for r in results]}
        try:
            atomic_write_json(payload, args.json)
        except OSError as err:  # a full disk, a vanished directory: one line, after the report
            print(f"invconv-verify: error: {str(err).strip()}", file=sys.stderr)
            return 1
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
