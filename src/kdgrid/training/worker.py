"""Entry point of each process of a multi-process `kdgrid train` (run by torchrun, see distributed.py)."""

from __future__ import annotations

import json
import os
import sys

from ..errors import KdgridError
from .config import TrainConfig
from .distributed import CONFIG_ENV


def main() -> int:
    cfg = TrainConfig(**json.loads(os.environ[CONFIG_ENV]))
    try:
        from .engine import train

        train(cfg)
    except KdgridError as e:
        print(f"kdgrid train: error (rank {os.environ.get('RANK', '?')}): {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every output is written and the process group destroyed by now. Skip the interpreter's teardown:
    # on CPU (gloo, DeepSpeed's shared-memory op) a library thread still joinable at exit sometimes
    # aborts a finished process ("terminate called without an active exception"), failing a good run.
    os._exit(code)
