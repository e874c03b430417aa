r"""``invconv-train``: train a flow (Inverse-Flow or a baseline) and report bits/dim.

    invconv-train --dataset digits --model inverse-flow --epochs 20 --out runs/digits-if
    invconv-train --dataset mnist --data-dir ~/data/mnist --model glow --epochs 100 --out runs/m
    invconv-train ... --out runs/m --resume        # continue an interrupted run, same schedule

Multi-GPU / multi-node: launch the same command with torchrun, e.g.
``torchrun --nproc_per_node=8 -m invconv_core.flows.train --dataset cifar10 ...`` (add
``--nnodes``, ``--node_rank``, ``--rdzv_endpoint`` for several nodes). Each process takes one
GPU (``LOCAL_RANK``) — or the CPU with the gloo backend — and a shard of the data
(DistributedSampler); gradients are averaged by DistributedDataParallel; ActNorm's
data-dependent init is averaged over all ranks; only rank 0 logs, checkpoints and samples.

Writes to ``--out``: ``last.pt`` after every epoch and ``best.pt`` at the best test bits/dim
(atomically: model, optimiser, scheduler, RNG states, config, epoch, step, best metric),
``samples.png`` and ``metrics.json`` (test_bpd, epochs, train_seconds, sample_seconds_per_100,
forward_seconds_per_100, ...). ``--resume`` restarts from ``last.pt`` at the next epoch with
the same data order and learning-rate schedule.

Schedule (the paper's): Adam, lr 1e-3, divided by 10 every 50 epochs (every 25 for CIFAR-10).
"""

from __future__ import annotations

import argparse
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from .bpd import bits_per_dim, dequantize
from .data import DATASETS, load_dataset
from .io import atomic_save, atomic_write_json, save_image_grid
from .models import MODELS, FlowConfig, build_flow
from .timing import SHAPES, median_seconds

DEFAULT_LEVELS = {name: levels for name, (_, levels, _) in SHAPES.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="invconv-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--model", choices=MODELS, default="inverse-flow")
    p.add_argument("--epochs", type=int, default=20, help="total epochs (a resumed run continues to this)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, samples, metrics)")
    p.add_argument("--data-dir", default=None, help="directory with the dataset files (not for digits)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--levels", type=int, default=None, help="L (default: 2 digits/MNIST, 3 CIFAR-10)")
    p.add_argument("--steps", type=int, default=16, help="K steps per level")
    p.add_argument("--width", type=int, default=64, help="hidden channels of the coupling networks")
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-step", type=int, default=None, help="epochs between lr/10 (default 50; 25 for cifar10)")
    p.add_argument("--grad-clip", type=float, default=100.0, help="max gradient norm (0: off)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--max-test", type=int, default=None, help="use only the first N test images")
    p.add_argument("--samples", type=int, default=64, help="images in samples.png")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature for samples.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


class _Dist:
    """Process-group facts; a single process when not launched by torchrun."""

    def __init__(self, device_arg):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and (device_arg is None or device_arg.startswith("cuda"))
        if self.world > 1:
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            self.device = torch.device(device_arg if device_arg and self.world == 1 else f"cuda:{self.local_rank}")
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device(device_arg or "cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


def _rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


@torch.no_grad()
def evaluate_bpd(model, loader, n_bins, device, ctx: _Dist, seed: int = 1234) -> float:
    """Mean per-image test bits/dim (dequantization noise from a fixed generator, so the number
    is reproducible), averaged over all ranks' shards."""
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed + ctx.rank)
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for k, _ in loader:
        x = dequantize(k, n_bins, generator=g).to(device)
        bpd = bits_per_dim(model(x), x[0].numel(), n_bins)
        total += torch.stack([bpd.double().sum(), torch.tensor(float(len(bpd)), dtype=torch.float64, device=device)])
    ctx.all_sum(total)
    model.train()
    return (total[0] / total[1]).item()


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    ctx = _Dist(args.device)
    device = ctx.device
    try:
        return _train(args, ctx, device)
    finally:
        ctx.close()


def _train(args, ctx: _Dist, device) -> dict:
    from tqdm.auto import tqdm

    torch.manual_seed(args.seed + ctx.rank)
    np.random.seed(args.seed + ctx.rank)
    random.seed(args.seed + ctx.rank)
    train = load_dataset(args.dataset, "train", args.data_dir)
    test = load_dataset(args.dataset, "test", args.data_dir)
    if args.max_train:
        train.images, train.labels = train.images[:args.max_train], train.labels[:args.max_train]
    if args.max_test:
        test.images, test.labels = test.images[:args.max_test], test.labels[:args.max_test]
    levels = args.levels or DEFAULT_LEVELS[args.dataset]
    config = FlowConfig(model=args.model, image_shape=train.shape, levels=levels, steps=args.steps,
                        width=args.width, kernel_size=args.kernel_size, n_bins=train.n_bins)
    model = build_flow(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    lr_step = args.lr_step or (25 if args.dataset == "cifar10" else 50)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=0.1)

    def loader(data, shuffle, epoch):
        ds = data.dataset()
        if ctx.world > 1:
            sampler = DistributedSampler(ds, ctx.world, ctx.rank, shuffle=shuffle, seed=args.seed)
            sampler.set_epoch(epoch)
        elif shuffle:  # the order depends only on (seed, epoch): a resumed run sees the same batches
            sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(args.seed * 100003 + epoch))
        else:
            sampler = None
        return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                          drop_last=shuffle and len(ds) >= args.batch_size * ctx.world)

    last_path, best_path = os.path.join(args.out, "last.pt"), os.path.join(args.out, "best.pt")
    start_epoch, step, best, history, train_seconds = 0, 0, float("inf"), [], 0.0
    if args.resume:
        if not os.path.isfile(last_path):
            raise FileNotFoundError(f"{last_path}: no checkpoint to resume from")
        ck = torch.load(last_path, map_location=device, weights_only=False)
        if ck["config"] != config.to_dict():
            raise ValueError(f"{last_path}: checkpoint config {ck['config']} differs from this run's "
                             f"{config.to_dict()}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, step, best = ck["epoch"] + 1, ck["step"], ck["best_test_bpd"]
        history, train_seconds = ck.get("history", []), ck.get("train_seconds", 0.0)
        _set_rng_state(ck["rng"][ctx.rank] if isinstance(ck["rng"], list) else ck["rng"])
    else:
        # ActNorm's data-dependent init on the first batch (statistics averaged across ranks)
        k0, _ = next(iter(loader(train, True, 0)))
        with torch.no_grad():
            model(dequantize(k0, train.n_bins).to(device))

    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ctx.world > 1 else model
    dims = model.dims
    test_loader = loader(test, False, 0)
    for epoch in range(start_epoch, args.epochs):
        t0 = time.perf_counter()
        model.train()
        bar = tqdm(loader(train, True, epoch), disable=args.no_progress or not ctx.main,
                   desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        running = 0.0
        for i, (k, _) in enumerate(bar):
            x = dequantize(k, train.n_bins).to(device)
            loss = bits_per_dim(net(x), dims, train.n_bins).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            step += 1
            running = loss.item() if i == 0 else 0.9 * running + 0.1 * loss.item()
            bar.set_postfix(loss_bpd=f"{running:.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        sched.step()
        train_seconds += time.perf_counter() - t0
        test_bpd = evaluate_bpd(model, test_loader, train.n_bins, device, ctx)
        history.append({"epoch": epoch + 1, "train_bpd": running, "test_bpd": test_bpd})
        rngs = [None] * ctx.world
        if ctx.world > 1:
            dist.all_gather_object(rngs, _rng_state())
        else:
            rngs = [_rng_state()]
        if ctx.main:
            print(f"epoch {epoch + 1}/{args.epochs}  train bpd {running:.4f}  test bpd {test_bpd:.4f}",
                  flush=True)
            ck = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                  "scheduler": sched.state_dict(), "rng": rngs, "config": config.to_dict(),
                  "epoch": epoch, "step": step, "best_test_bpd": min(best, test_bpd),
                  "history": history, "train_seconds": train_seconds, "args": vars(args)}
            atomic_save(ck, last_path)
            if test_bpd < best:
                atomic_save(ck, best_path)
        best = min(best, test_bpd)
        ctx.barrier()

    metrics = {}
    if ctx.main:
        model.eval()
        with torch.no_grad():
            save_image_grid(model.sample(args.samples, args.temperature), os.path.join(args.out, "samples.png"),
                            scale=4 if model.config.image_shape[1] <= 16 else 1)
            sample_s = median_seconds(lambda: model.sample(100), device)
            xb = dequantize(test.images[:100], test.n_bins).to(device)
            if len(xb) < 100:
                xb = xb.repeat((100 + len(xb) - 1) // len(xb), 1, 1, 1)[:100]
            forward_s = median_seconds(lambda: model(xb), device)
        metrics = {
            "dataset": args.dataset, "model": args.model, "n_bins": train.n_bins,
            "test_bpd": history[-1]["test_bpd"] if history else None,
            "best_test_bpd": best, "epochs": len(history), "steps": step,
            "train_seconds": train_seconds, "sample_seconds_per_100": sample_s,
            "forward_seconds_per_100": forward_s,
            "parameters": sum(p.numel() for p in model.parameters()),
            "world_size": ctx.world, "device": str(device), "config": config.to_dict(),
            "history": history,
        }
        atomic_write_json(metrics, os.path.join(args.out, "metrics.json"))
        print(f"test bpd {metrics['test_bpd']:.4f} (best {best:.4f}); sampling {sample_s * 1e3:.1f} ms "
              f"and forward {forward_s * 1e3:.1f} ms per 100 images; wrote {args.out}", flush=True)
    return metrics


if __name__ == "__main__":
    main()
