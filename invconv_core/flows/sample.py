r"""``invconv-sample``: draw images from a trained flow checkpoint into a grid PNG, with timing.

    invconv-sample --checkpoint runs/digits-if/best.pt --out samples.png --n 64 --temperature 0.8
"""

from __future__ import annotations

import argparse

import torch

from .io import save_image_grid
from .models import FlowConfig, build_flow
from .timing import median_seconds


def load_flow(path: str, device="cpu"):
    """A flow model (eval mode) from a checkpoint written by invconv-train."""
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
        config = FlowConfig.from_dict(ck["config"])
        state = ck["model"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    except (KeyError, TypeError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not an invconv-train checkpoint (expected a dict with "
                         f"'config' and 'model'): {err}") from err
    model = build_flow(config).to(device)
    model.load_state_dict(state)
    return model.eval()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="invconv-sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = load_flow(args.checkpoint, device)
    with torch.no_grad():
        images = model.sample(args.n, args.temperature)
        seconds = median_seconds(lambda: model.sample(100, args.temperature), device)
    save_image_grid(images, args.out, scale=4 if model.config.image_shape[1] <= 16 else 1)
    print(f"wrote {args.n} samples to {args.out}; sampling takes {seconds * 1e3:.2f} ms per 100 "
          f"images ({model.config.model}, {device})")
    return {"sample_seconds_per_100": seconds, "n": args.n}


if __name__ == "__main__":
    main()
