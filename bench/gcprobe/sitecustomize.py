"""Collector time in a server under the bench: ``PYTHONPATH=$PWD/bench/gcprobe GCSTAT=/tmp/gc.txt python -m bench ...``.

Python imports ``sitecustomize`` from the path at start, so every server process the
runner starts (it passes the environment on) times each garbage collection with
``gc.callbacks`` and appends, after each one of the older generations, the running
counts and CPU seconds per generation to the file GCSTAT names (docs/performance.md,
"Opens per second: the collector, and an eager start tried and dropped").
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

_path = os.environ.get("GCSTAT")
if _path:
    _started: dict[int, float] = {}
    _seconds = [0.0, 0.0, 0.0]
    _counts = [0, 0, 0]
    _out = open(_path, "a")  # noqa: SIM115 (open for the process's life)

    def _timed(phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            _started[generation] = time.process_time()
            return
        _seconds[generation] += time.process_time() - _started[generation]
        _counts[generation] += 1
        if generation:
            _out.write(f"{time.time():.2f} {os.getpid()} collections={_counts} cpu_s={_seconds}\n")
            _out.flush()

    gc.callbacks.append(_timed)
