"""``python -m invconv_core.flows.train``: the same tool as ``invconv-train``, for launchers that
start a module (torchrun):

    torchrun --nproc_per_node=8 -m invconv_core.flows.train --dataset cifar10 ... --out runs/c

(add ``--nnodes``, ``--node_rank``, ``--rdzv_endpoint`` for several nodes). The training itself is
:func:`invconv_core.flows.fit`; the command line is :func:`invconv_core.flows.cli.train_main`.
"""

import sys

from .cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
