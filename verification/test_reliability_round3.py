"""Reliability round 3 (issue 29): a run directory nobody else can clobber, a dataset file that
cannot exhaust memory, saved runs that survive the next version, clear refusals that create
nothing, and the blind spots the suite had. Console scripts run as installed subprocesses; the
locks are tested with real processes. Each test names the item of the issue it covers."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from test_console_scripts import TINY, one_error_line, run, script
from test_reliability import _holds_lock, _wait_for

SMALL = ["--dataset", "digits", "--steps", "1", "--width", "8", "--max-train", "200",
         "--max-test", "100", "--batch-size", "50"]
COMPARE = [*SMALL, "--models", "glow", "--seeds", "1", "--timing-repeats", "1", "--samples", "4"]


def _train_in_background(out, epochs=100000):
    proc = subprocess.Popen([script("invconv-train"), *TINY, "--model", "glow", "--epochs", str(epochs),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ok = _wait_for(lambda: (out / "last.pt").exists() and _holds_lock(out, proc.pid), proc=proc)
    assert ok, proc.communicate()[1] if proc.poll() is not None else "the run wrote no checkpoint"
    return proc


def _stop(proc):
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)


# ------------------------------------------------------------------ item 1: compare vs a live run

@pytest.mark.parametrize("depths", [False, True])
def test_compare_never_deletes_or_reuses_a_run_another_process_is_training(tmp_path, depths):
    """Before: compare --overwrite deleted OUT/runs under a live invconv-train, trained a new run
    there (rc 0) and sampled from the other process's last.pt. Now the busy run is refused,
    named with its holder, and nothing of it is deleted or written; with --depths likewise."""
    out = tmp_path / "C"
    run_dir = out / ("steps1" if depths else "") / "runs" / "glow" / "seed0"
    first = _train_in_background(run_dir)
    try:
        before = (run_dir / "last.pt").stat().st_mtime_ns
        extra = ["--depths", "1"] if depths else []
        for mode in (["--overwrite"], []):
            proc = run("invconv-compare", *COMPARE, "--epochs", "1", "--out", out, *extra, *mode)
            assert proc.returncode == 1, (mode, proc.stdout, proc.stderr)
            line = one_error_line(proc, "invconv-compare")
            assert f"{run_dir}: another process (PID {first.pid}) is writing" in line, line
            assert first.poll() is None
            assert (run_dir / "last.pt").exists() and not (run_dir / "metrics.json").exists()
        assert _wait_for(lambda: (run_dir / "last.pt").stat().st_mtime_ns != before, proc=first)
        assert not (out / ("steps1" if depths else "") / "compare.json").exists()
    finally:
        _stop(first)
    ck = torch.load(run_dir / "last.pt", weights_only=True)
    assert ck["epoch"] >= 1 and ck["train_config"]["epochs"] == 100000  # still the first run's


def test_a_directory_is_not_deleted_while_a_lock_inside_is_held(tmp_path):
    from invconv_core.flows import RunLockedError
    from invconv_core.flows.runlock import remove_locked_tree
    (tmp_path / "runs" / "a" / "seed0").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "seed0" / "last.pt").write_bytes(b"x")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from invconv_core.flows.runlock import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
                               str(tmp_path / "runs" / "a" / "seed0")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"seed0: another process \(PID {holder.pid}\)"):
            remove_locked_tree(str(tmp_path / "runs"))
        assert (tmp_path / "runs" / "a" / "seed0" / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    remove_locked_tree(str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_a_lock_on_a_file_deleted_meanwhile_is_not_a_lock(tmp_path, monkeypatch):
    """The race of a deleted directory: this process opens the lock file, then (before its
    flock) the file is deleted and another process creates and locks a new one. The flock on
    the old, deleted file succeeds; run_lock must notice that the path names another file now
    and lock that one (refused: it is held). Before, it held the lock of the deleted file beside
    the other writer."""
    from invconv_core.flows import RunLockedError
    from invconv_core.flows import runlock
    d = tmp_path / "run"
    d.mkdir()
    real_flock, holders = runlock.fcntl.flock, []

    def racing_flock(fd, op):
        if not holders:
            os.unlink(d / runlock.LOCK_NAME)
            holders.append(subprocess.Popen(
                [sys.executable, "-c", "import sys, time; from invconv_core.flows.runlock import run_lock\n"
                 "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(d)],
                stdout=subprocess.PIPE, text=True))
            assert holders[0].stdout.readline().strip() == "held"
        return real_flock(fd, op)

    monkeypatch.setattr(runlock.fcntl, "flock", racing_flock)
    try:
        with pytest.raises(RunLockedError, match=rf"another process \(PID {holders[0].pid if holders else ''}"):
            with runlock.run_lock(str(d)):
                pass
    finally:
        for h in holders:
            h.kill()
            h.wait()


# ------------------------------------------------------------------ item 2: a symlinked lock file

@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path, dangling):
    from invconv_core.flows.runlock import LOCK_NAME, LockFileError, run_lock
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("precious\n")
    lk = tmp_path / "lk"
    lk.mkdir()
    os.symlink(victim, lk / LOCK_NAME)
    with pytest.raises(LockFileError, match=rf"{lk / LOCK_NAME}: the lock file is a symbolic link"):
        with run_lock(str(lk)):
            pass
    assert (victim.read_text() == "precious\n") if not dangling else not victim.exists()
    proc = run("invconv-train", *TINY, "--epochs", "1", "--out", lk)
    assert proc.returncode == 1
    assert "the lock file is a symbolic link" in one_error_line(proc, "invconv-train")
    assert (victim.read_text() == "precious\n") if not dangling else not victim.exists()


def test_a_lock_file_that_is_a_fifo_is_refused(tmp_path):
    from invconv_core.flows.runlock import LOCK_NAME, LockFileError, refuse_if_locked, run_lock
    os.mkfifo(tmp_path / LOCK_NAME)
    with pytest.raises(LockFileError, match="not a regular file"):
        refuse_if_locked(str(tmp_path))
    with pytest.raises(LockFileError, match="not a regular file"):
        with run_lock(str(tmp_path)):
            pass


# ------------------------------------------------------------------ item 3 and 11: CIFAR pickles

def _hex_chain(steps: int) -> bytes:
    """A protocol-2 pickle doubling a string ``steps`` times through the memo with
    ``_codecs.encode(prev, 'hex')`` (538 bytes for 30 steps made 1.76 GB before)."""
    out = b"\x80\x02c_codecs\nencode\nq\x00X\x02\x00\x00\x00abX\x06\x00\x00\x00latin1\x86Rq\x01"
    for i in range(1, steps + 1):
        out += b"h\x00h" + bytes([i]) + b"X\x03\x00\x00\x00hex\x86Rq" + bytes([i + 1])
    return out + b"."


def _zero_strided(rows: int) -> bytes:
    """``numpy.ndarray((rows, 3072), 'u1', b'\\x07', 0, (0, 0))`` as the batch's data: a full-size
    array on one byte (400 KB → 600 MB as uint8 before)."""
    shape = b"J" + rows.to_bytes(4, "little") + b"M\x00\x0c\x86"  # (rows, 3072)
    return (b"\x80\x02}(C\x04datacnumpy\nndarray\n(" + shape +
            b"X\x02\x00\x00\x00u1C\x01\x07K\x00K\x00K\x00\x86tRC\x06labels]u.")


def _repeated_encode(copies: int) -> bytes:
    """One 1 MB latin-1 string encoded ``copies`` times through the memo (each call a new 1 MB
    bytes object: the whole load, not one string, is what grows)."""
    out = b"\x80\x02c_codecs\nencode\nq\x00X" + (1 << 20).to_bytes(4, "little") + b"a" * (1 << 20)
    out += b"q\x01]q\x02("
    for _ in range(copies):
        out += b"h\x00h\x01X\x06\x00\x00\x00latin1\x86R"
    return out + b"e."


@pytest.mark.parametrize("payload, says", [
    (lambda: _hex_chain(26), "refused _codecs.encode with 'hex'"),
    (lambda: _zero_strided(20000), "exceeds what a CIFAR-10 batch holds"),
    (lambda: _zero_strided(100), "not exactly its own contiguous buffer"),
    (lambda: _repeated_encode(200), "exceeds what a CIFAR-10 batch holds"),
], ids=["hex-doubling", "zero-strides-full-size", "zero-strides-small", "memo-repeated-encode"])
def test_a_crafted_cifar_batch_cannot_exhaust_memory(tmp_path, payload, says):
    """Each payload is refused naming the file, and loading it allocates at most what a real
    batch may (twice its 30.7 MB of images: the budget of the whole load; tracemalloc sees
    numpy's and Python's allocations). Before: the hex chain grew to 2 × 128 MiB at 26 steps
    (1.76 GB at 30), the zero-strided array to 245 MB as float32 here (2.4 GB at 400 KB), the
    repeated encode to 200 MB."""
    from invconv_core.flows.data import load_cifar_batch
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"data_batch_1: not a CIFAR-10 python batch.*{says}"):
            data, _ = load_cifar_batch(str(path))
            data.astype(np.float32)  # what the loader does next, when it got this far
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    from invconv_core.flows.data import CIFAR_BATCH_BYTES
    assert peak < 2 * CIFAR_BATCH_BYTES + (8 << 20), peak


def test_a_cifar_file_larger_than_any_batch_is_refused_unread(tmp_path):
    from invconv_core.flows.data import CIFAR_FILE_BYTES, load_cifar_batch
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        f.truncate(CIFAR_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ValueError, match="larger than a CIFAR-10 batch can be"):
        load_cifar_batch(str(path))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("target", ["eval", "open", "exec", "__import__"])
def test_no_builtin_is_reachable_at_any_protocol(tmp_path, protocol, target):
    """Item 11: the tests pickled at protocol 2 only, where builtins are ``__builtin__``: an
    unpickler that also allowed ``builtins.*`` passed them. Every protocol, a builtin payload;
    the marker file never appears."""
    from invconv_core.flows.data import load_cifar_batch
    marker = tmp_path / "ran"
    call = {"eval": (eval, (f"open({str(marker)!r}, 'w')",)),
            "exec": (exec, (f"open({str(marker)!r}, 'w')",)),
            "open": (open, (str(marker), "w")),
            "__import__": (__import__, ("os",))}[target]

    class Payload:
        def __reduce__(self):
            return call

    good = np.zeros((2, 3072), np.uint8)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": good, b"labels": [0, Payload()]}, protocol=protocol))
    module = ("__builtin__" if protocol < 3 else "builtins") if target != "open" else "(_?io|builtins|__builtin__)"
    with pytest.raises(ValueError, match=rf"refused to load global {module}\.{target}"):
        load_cifar_batch(str(path))
    assert not marker.exists()


def test_the_builtin_payloads_reach_builtins_when_the_unpickler_allows_them(tmp_path, monkeypatch):
    """The planted fault of item 11 (an unpickler that also allows ``builtins.*``) is caught:
    with it, the protocol-3 payload above runs (the marker appears), so its test fails."""
    import builtins

    from invconv_core.flows import data
    original = data._CifarUnpickler.find_class
    monkeypatch.setattr(data._CifarUnpickler, "find_class", lambda self, module, name: getattr(
        builtins, name) if module == "builtins" else original(self, module, name))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, Payload()]},
                                  protocol=3))
    with pytest.raises(ValueError):
        data.load_cifar_batch(str(path))  # the label is not an int: refused, after it ran
    assert marker.exists()


@pytest.mark.parametrize("module", [b"builtins", b"__builtin__"])
@pytest.mark.parametrize("name", [b"eval", b"open"])
def test_a_builtin_named_by_either_module_name_is_refused(tmp_path, module, name):
    """pickle writes open as io.open; a crafted file names builtins.open (or eval) directly."""
    from invconv_core.flows.data import load_cifar_batch
    marker = tmp_path / "ran"
    arg = (f"open({str(marker)!r}, 'w')" if name == b"eval" else str(marker)).encode()
    extra = b"X\x01\x00\x00\x00w" if name == b"open" else b""
    raw = (b"\x80\x02c" + module + b"\n" + name + b"\n(X" + len(arg).to_bytes(4, "little") + arg +
           extra + b"tR.")
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=rf"refused to load global {module.decode()}\.{name.decode()}"):
        load_cifar_batch(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_real_batch_loads_at_every_protocol(tmp_path, protocol):
    from invconv_core.flows.data import load_cifar_batch
    data = np.random.default_rng(0).integers(0, 256, (30, 3072), dtype=np.uint8)
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": list(range(10)) * 3,
                                   b"filenames": [b"x.png"] * 30}, protocol=protocol))
    got, labels = load_cifar_batch(str(path))
    np.testing.assert_array_equal(got, data)
    assert labels == list(range(10)) * 3


# ------------------------------------------------------------------ item 4: the next option

_NEXT_VERSION = r"""
# The next version of invconv_core, simulated: TrainConfig gains a field with a default that is
# not None (label_smoothing 0.0), recorded as added, and every module sees the new class.
import dataclasses, sys
from invconv_core.flows import comparison, training
try:
    from invconv_core.flows.migration import added_field
    new_field = added_field(0.0, version="9.9.9")
except ImportError:  # a version before the migration rule (how this test failed before it)
    new_field = dataclasses.field(default=0.0)
Old = training.TrainConfig
New = dataclasses.make_dataclass(
    "TrainConfig",
    [(f.name, f.type, f) for f in dataclasses.fields(Old)] + [("label_smoothing", "float", new_field)],
    frozen=True, namespace={"__post_init__": Old.__post_init__, "flow_config": Old.flow_config})
training.TrainConfig = comparison.TrainConfig = New
tool, out = sys.argv[1], sys.argv[2]
tiny = dict(dataset="digits", steps=1, width=8, max_train=200, max_test=100, batch_size=50,
            samples=4, epochs=2)
if tool == "train":
    r = training.fit(New(out=out, model="glow", resume=True, **tiny), log=print)
    print("epochs", r.epochs)
else:
    r = comparison.compare(comparison.CompareConfig(out=out, run=New(out=out, **tiny), models=("glow",),
                                                    seeds=1, timing_repeats=1), log=print)
    print("epochs", r.epochs)
"""


@pytest.mark.parametrize("tool", ["train", "compare"])
def test_a_run_saved_before_the_next_option_resumes_under_it(tmp_path, tool):
    """Item 4: runs built by this version (installed commands in a subprocess), continued by a
    version with one more TrainConfig field (defaulting to 0.0, not None). Before: a resume
    compared the saved record's missing field (None) with 0.0 and refused every old run;
    compare.json's check passed (it took the default) and then fit refused the runs."""
    out = tmp_path / "old"
    if tool == "train":
        proc = run("invconv-train", *TINY, "--model", "glow", "--epochs", "1", "--out", out)
    else:  # an interrupted comparison: its run has last.pt but not its final epoch
        proc = run("invconv-compare", *COMPARE, "--epochs", "1", "--out", out)
        os.unlink(out / "runs" / "glow" / "seed0" / "metrics.json")
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-c", _NEXT_VERSION, tool, str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epochs 2" in proc.stdout


def test_migrate_takes_the_default_then_and_refuses_what_it_cannot_read():
    from dataclasses import dataclass

    from invconv_core.flows.migration import SettingsError, added_field, added_in, migrate

    @dataclass(frozen=True)
    class Config:
        size: int
        name: str = "a"
        scale: float | None = added_field(2.0, version="0.4.0", default_then=1.0)

    assert added_in(Config) == {"scale": ("0.4.0", 1.0)}
    assert migrate(Config, {"size": 3, "name": "b"}, "f.json") == {"size": 3, "name": "b", "scale": 1.0}
    assert migrate(Config, {"size": 3, "name": "b", "scale": None}, "f.json")["scale"] is None
    for saved, says in (({"name": "b"}, "f.json: lacks the setting 'size'"),
                        ({"size": 3, "name": "b", "colour": 1}, "f.json: unknown setting.s. colour"),
                        ({"size": "3", "name": "b"}, "f.json: setting 'size' must be int, found str"),
                        ({"size": True, "name": "b"}, "setting 'size' must be int, found bool"),
                        ({"size": 3, "name": None}, "setting 'name' must be str, found NoneType"),
                        (None, "f.json: expected a JSON object of Config settings, found NoneType"),
                        ([1], "expected a JSON object of Config settings, found list")):
        with pytest.raises(SettingsError, match=says):
            migrate(Config, saved, "f.json")


# ------------------------------------------------------------------ item 5: records of wrong types

@pytest.mark.parametrize("defining", [None, [1, 2], "x", 3, {"epochs": "many"}, {"lr": None}])
def test_a_compare_json_of_wrong_types_is_one_line(tmp_path, defining):
    out = tmp_path / "C"
    out.mkdir()
    (out / "compare.json").write_text(json.dumps({"defining": defining}))
    proc = run("invconv-compare", *COMPARE, "--epochs", "1", "--out", out)
    assert proc.returncode == 1, proc.stderr
    assert "compare.json: not a readable invconv-compare settings file" in one_error_line(proc, "invconv-compare")
    (out / "compare.json").write_text(json.dumps([defining]))
    proc = run("invconv-compare", *COMPARE, "--epochs", "1", "--out", out)
    assert proc.returncode == 1
    assert "compare.json: not a readable invconv-compare settings file" in one_error_line(proc, "invconv-compare")


@pytest.fixture(scope="module")
def finished_comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "C"
    proc = run("invconv-compare", *COMPARE, "--epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("field, value", [("test_bpd", "low"), ("history", None), ("config", [1]),
                                          ("epochs", 1.5), ("parameters", None)])
def test_a_metrics_json_of_wrong_types_is_not_a_traceback(finished_comparison, tmp_path, field, value):
    """A damaged metrics.json of a finished run is not trusted: the run continues from its
    last.pt (which rewrites it); before, a string test_bpd reached the table's arithmetic."""
    import shutil
    out = tmp_path / "C"
    shutil.copytree(finished_comparison, out)
    path = out / "runs" / "glow" / "seed0" / "metrics.json"
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    proc = run("invconv-compare", *COMPARE, "--epochs", "1", "--out", out)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert json.loads(path.read_text())[field] != value


@pytest.mark.parametrize("field, value, says", [
    ("train_config", "x", "expected a JSON object of TrainConfig settings, found str"),
    ("train_config", {"lr": "fast"}, "setting 'lr' must be float, found str")])
def test_a_train_config_of_wrong_types_is_refused_on_resume(tmp_path, field, value, says):
    out = tmp_path / "run"
    assert run("invconv-train", *TINY, "--epochs", "1", "--out", out).returncode == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    ck[field] = value if not isinstance(value, dict) else {**ck[field], **value}
    torch.save(ck, out / "last.pt")
    proc = run("invconv-train", *TINY, "--epochs", "2", "--out", out, "--resume")
    assert proc.returncode == 1, proc.stderr
    assert says in one_error_line(proc, "invconv-train")


# ------------------------------------------------------------------ items 8 and 13: the activation

_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _random_inputs(n, dtype, seed=0):
    """``n`` values of random sign at scales 0.1 … 1000 (log-uniform), as ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    scale = 10 ** (torch.rand(1, n, generator=g, dtype=torch.float64) * 4 - 1)
    return (torch.randn(1, n, generator=g, dtype=torch.float64) * scale).to(dtype)


def test_an_alpha_whose_slope_underflows_is_refused():
    """Item 8: alpha=1e-30 was taken; in float16 x = −30 came back as −17.56 with log-det −inf.
    Now below MIN_ALPHA at construction, and below the dtype's smallest normal at the call,
    naming alpha and the dtype."""
    from invconv_core.flows.layers import SmoothLeakyReLU
    with pytest.raises(ValueError, match=r"alpha must be in \[1e-06, 1\), got 1e-30"):
        SmoothLeakyReLU(1e-30)
    layer = SmoothLeakyReLU(1e-5)
    x = torch.full((1, 4), -30.0, dtype=torch.float16)
    for call in (layer, layer.inverse):
        with pytest.raises(ValueError, match=r"alpha=1e-05 underflows in torch.float16 .*6.1e-05"):
            call(x)
    layer(x.float())  # float32 holds it


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize("mirrored", [False, True])
def test_at_the_smallest_alpha_each_dtype_takes_the_layer_is_invertible(dtype, mirrored):
    """The bound is the right one: at max(MIN_ALPHA, the dtype's smallest normal) the round trip
    of 5,000 random inputs (scales 0.1 … 1000) holds to 8 ulps and every log-slope is finite."""
    from invconv_core.flows.layers import SmoothLeakyReLU
    alpha = max(SmoothLeakyReLU.MIN_ALPHA, torch.finfo(dtype).tiny)
    layer = SmoothLeakyReLU(alpha, mirrored=mirrored)
    x = _random_inputs(5000, dtype)
    z, _ = layer(x)
    back, _ = layer.inverse(z)
    eps = torch.finfo(dtype).eps
    err = ((back.double() - x.double()).abs() / x.double().abs().clamp_min(1)).max().item()
    assert err <= 8 * eps, (dtype, err / eps)
    assert torch.isfinite(layer._log_slope(x)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.1, 0.01])
def test_newtons_inverse_reaches_the_root_on_random_inputs(dtype, alpha):
    """Item 13: a Newton stop at |step| < 1e-3·|x| passed the grid test (within 4 ulps there) but
    is off by 4.5× the bound on random inputs (float64, x = −1.6215463742416172). 5,000 random
    inputs at scales 0.1 … 1000: f⁻¹(f(x)) within 8 ulps of x (relative to max(|x|, 1))."""
    from invconv_core.flows.layers import SmoothLeakyReLU
    layer = SmoothLeakyReLU(alpha)
    x = _random_inputs(5000, dtype, seed=1)
    x = torch.cat([x, torch.tensor([[-1.6215463742416172]], dtype=dtype)], 1)
    back, _ = layer.inverse(layer(x)[0])
    err = (back.double() - x.double()).abs() / x.double().abs().clamp_min(1)
    worst = int(err.argmax())
    assert err.max().item() <= 8 * torch.finfo(dtype).eps, (x[0, worst].item(), err.max().item())


def test_the_random_inverse_test_catches_a_loose_newton_stop(monkeypatch):
    """The planted fault of item 13 (stop at |step| < 1e-3·|x|) fails the test above."""
    from invconv_core.flows import layers
    original = layers.SmoothLeakyReLU._inverse

    def loose(self, z):
        with torch.no_grad():
            x = torch.where(z >= 0, z, z / self.alpha)
            for _ in range(self.max_iter):
                step = self._newton_step(x, z)
                x = x - step
                if bool((step.abs() < 1e-3 * x.abs()).all()):
                    break
        return x, -self._log_slope(x).flatten(1).sum(1)

    monkeypatch.setattr(layers.SmoothLeakyReLU, "_inverse", loose)
    with pytest.raises(AssertionError):
        test_newtons_inverse_reaches_the_root_on_random_inputs(torch.float64, 0.1)
    monkeypatch.setattr(layers.SmoothLeakyReLU, "_inverse", original)
    test_newtons_inverse_reaches_the_root_on_random_inputs(torch.float64, 0.1)


# ------------------------------------------------------------------ item 10: thread count

def test_a_resume_under_another_thread_count_says_so(tmp_path):
    """Item 10: resuming under another thread count continued silently and was not
    bit-identical (3.682593061923981 with 1 thread vs 3.6825930786132814 with 2). The
    checkpoint records the count; a resume under another says so in one line; under the same
    one it is bit-identical to the uninterrupted run."""
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run("invconv-train", *TINY, "--threads", "1", "--epochs", "2", "--out", whole).returncode == 0
    assert run("invconv-train", *TINY, "--threads", "1", "--epochs", "1", "--out", part).returncode == 0
    assert torch.load(part / "last.pt", weights_only=True)["threads"] == 1
    proc = run("invconv-train", *TINY, "--threads", "1", "--epochs", "2", "--out", part, "--resume")
    assert proc.returncode == 0 and "note:" not in proc.stdout, proc.stderr
    assert json.loads((part / "metrics.json").read_text())["test_bpd"] == \
        json.loads((whole / "metrics.json").read_text())["test_bpd"]
    proc = run("invconv-train", *TINY, "--threads", "2", "--epochs", "3", "--out", part, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert ("note: the run was trained with 1 thread, this session uses 2: it continues exactly, "
            "but its numbers will differ from an uninterrupted run in the last bits (resume with "
            "--threads 1 for a bit-identical continuation)") in proc.stdout
    assert torch.load(part / "last.pt", weights_only=True)["threads"] == 2


# ------------------------------------------------------------------ item 12: every RNG restored

def _draws():
    import random
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)])


def test_rng_states_round_trip_through_a_checkpoint_file(tmp_path):
    """Item 12: a set_rng_state that skipped numpy passed the suite (training draws only from
    torch). Every generator a step may read -- torch, numpy, Python's random -- is saved by
    rng_state, written with atomic_save, read with weights_only=True and restored."""
    import random

    from invconv_core.flows.checkpoints import rng_state, set_rng_state
    from invconv_core.flows.io import atomic_save
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    _draws()
    atomic_save({"rng": rng_state()}, str(tmp_path / "ck.pt"))
    expected = _draws()
    torch.manual_seed(7), np.random.seed(8), random.seed(9)  # anything else in between
    set_rng_state(torch.load(tmp_path / "ck.pt", weights_only=True)["rng"])
    got = _draws()
    for name, e, g in zip(("torch", "numpy", "random"), expected, got):
        assert e == g, name


@pytest.mark.parametrize("skipped", ["numpy", "python"])
def test_the_round_trip_catches_a_generator_left_unrestored(tmp_path, monkeypatch, skipped):
    from invconv_core.flows import checkpoints
    original = checkpoints.set_rng_state

    def planted(state):
        import random
        keep = (np.random.get_state(), random.getstate())
        original(state)
        if skipped == "numpy":
            np.random.set_state(keep[0])
        else:
            random.setstate(keep[1])

    monkeypatch.setattr(checkpoints, "set_rng_state", planted)
    with pytest.raises(AssertionError, match=skipped if skipped == "numpy" else "random"):
        test_rng_states_round_trip_through_a_checkpoint_file(tmp_path)


# ------------------------------------------------------------------ items 6 and 7: refusals

@pytest.mark.parametrize("tool, args, says", [
    ("invconv-compare", ["--depths", "99999999999999999999"],
     "the model does not fit in memory (width=8, depths=99999999999999999999"),
    ("invconv-compare", ["--steps", "99999999999999999999"], "steps=99999999999999999999"),
    ("invconv-compare", ["--width", "99999999999999999999"], "width must be at most 2,147,483,647"),
    ("invconv-compare", ["--width", "100000000"], "the model does not fit in memory (width=100000000"),
    ("invconv-compare", ["--levels", "99999999999999999999"], "levels must be at most"),
    ("invconv-compare", ["--levels", "5"], "levels=5: the image 8×8 must be divisible by 2^levels"),
    ("invconv-train", ["--steps", "99999999999999999999"], "steps=99999999999999999999"),
    ("invconv-train", ["--batch-size", "100000000000", "--steps", "64", "--width", "512"],
     "batch_size=100000000000"),
])
def test_a_model_too_large_is_refused_before_anything_is_allocated_or_created(tmp_path, tool, args, says):
    """Item 6: --depths 99999999999999999999 grew past 2 GB building the model and left
    OUT/steps99999999999999999999/. Now the parameter count (on the meta device) and the
    activations are estimated first: one line naming the option, the estimate and the memory,
    in seconds, and the fresh --out does not exist afterwards (item 7)."""
    out = tmp_path / "out"
    base = COMPARE if tool == "invconv-compare" else TINY
    proc = run(tool, *base, "--epochs", "1", "--out", out, *args, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_error_line(proc, tool)
    assert says in line, line
    if "does not fit" in says:
        assert "this machine has" in line and "parameters and their activations" in line
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.parametrize("tool, args", [
    ("invconv-train", ["--dataset", "mnist", "--data-dir", "{missing}"]),
    ("invconv-compare", ["--dataset", "mnist", "--data-dir", "{missing}"]),
    ("invconv-compare", ["--dataset", "mnist", "--data-dir", "{missing}", "--depths", "1", "2"]),
    ("invconv-classify", ["--dataset", "mnist", "--data-dir", "{missing}", "--device", "cpu"]),
])
def test_a_refused_run_creates_nothing(tmp_path, tool, args):
    """Item 7: a refusal left .invconv-lock in a fresh --out (and steps1/ for --depths). Here
    the refusal comes after the lock is taken (the dataset is missing), in a fresh directory two
    levels deep: afterwards neither level exists."""
    out = tmp_path / "a" / "b"
    args = [a.replace("{missing}", str(tmp_path / "no-data")) for a in args]
    base = {"invconv-train": [*TINY[2:], "--epochs", "1"], "invconv-compare": [*COMPARE[2:], "--epochs", "1"],
            "invconv-classify": ["--epochs", "1"]}[tool]
    proc = run(tool, *base, *args, "--out", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    one_error_line(proc, tool)
    assert not (tmp_path / "a").exists(), sorted(str(p) for p in (tmp_path / "a").rglob("*"))


def test_a_refused_run_leaves_an_existing_directory_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = run("invconv-train", *TINY, "--epochs", "1", "--dataset", "mnist", "--data-dir",
               tmp_path / "no-data", "--out", out)
    assert proc.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ item 17: one exit-status table

def test_readme_exit_status_table_and_every_help_are_the_one_table():
    """Item 17: the epilogues listed 0/1/2/130 and not 143/129, which README's table had."""
    import re

    from invconv_core.flows.cli import EXIT_STATUSES
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", readme, flags=re.M)
    assert [(int(code), text) for code, text in rows] == list(EXIT_STATUSES)
    for tool in ("invconv-train", "invconv-compare", "invconv-sample", "invconv-time", "invconv-classify"):
        text = " ".join(run(tool, "--help").stdout.split())
        for code, meaning in EXIT_STATUSES:
            assert f"{code} {' '.join(meaning.replace('`', '').split())}" in text, (tool, code)


def _readme_commands():
    """Every ``invconv-*`` command (and ``python -m invconv_core...``/``torchrun -m``) in the
    README's shell code blocks, as (tool, argv)."""
    import re
    import shlex
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if not line:
                continue
            words = shlex.split(line, comments=True)
            if words and words[0].startswith("invconv-"):
                commands.append((words[0], words[1:]))
            elif words[:1] == ["torchrun"] and "-m" in words:
                module = words[words.index("-m") + 1]
                tool = {"invconv_core.flows.train": "invconv-train"}[module]
                commands.append((tool, words[words.index("-m") + 2:]))
    return commands


def test_every_readme_command_parses_with_the_installed_tool():
    """README: each command in a code block is accepted by the installed tool's parser (its
    options are the tool's, its values in range): an option renamed or removed fails here."""
    commands = _readme_commands()
    assert {t for t, _ in commands} >= {"invconv-train", "invconv-sample", "invconv-time",
                                        "invconv-classify", "invconv-compare", "invconv-verify"}, commands
    code = ("import sys\nfrom invconv_core.flows import cli\nfrom invconv_core import verify\n"
            "tool, argv = sys.argv[1], sys.argv[2:]\n"
            "parsers = {'invconv-train': cli.train_parser, 'invconv-compare': cli.compare_parser}\n"
            "if tool in parsers:\n    parsers[tool]().parse_args(argv)\n"
            "elif tool == 'invconv-verify':\n    verify._parse(argv)\n"
            "else:\n    sys.exit('no parser for ' + tool)\n")
    for tool, argv in commands:
        if tool in ("invconv-train", "invconv-compare", "invconv-verify"):
            proc = subprocess.run([sys.executable, "-c", code, tool, *argv], capture_output=True, text=True)
            assert proc.returncode == 0, (tool, argv, proc.stderr)
        else:  # these parse inside main: every option must be one the installed tool lists
            help_text = run(tool, "--help").stdout
            for word in argv:
                if word.startswith("--"):
                    assert word.split("=")[0] in help_text, (tool, word)
