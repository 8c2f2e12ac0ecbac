"""Executors: how a sweep's runs get run. Each is one module here, a typed options class and one function
registered with `@EXECUTORS.register(name, Options)` (registry.py), called with the distinct runs of a sweep
not yet final and an `ExecutionOptions`; it returns one `RunResult` per config, in order, never raising for
one run's failure. Every run goes through its kind's runner and so through the one run lifecycle
(lifecycle.py). Built in: `serial`, `local` (a pool of worker processes), `ensemble` (runs that differ only
in seed and optimiser trained as one stacked model) and `slurm` (a submitit job array). A plugin registers its
own the same way (`--plugin`, or the `learnscope.plugins` entry points) and `--executor NAME` finds it.
"""

from . import ensemble, local, serial, slurm
from .base import BUSY, ExecutionOptions, run_one, settled

__all__ = ["BUSY", "ExecutionOptions", "ensemble", "local", "run_one", "serial", "settled", "slurm"]
