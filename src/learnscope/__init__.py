"""learnscope: experiments on the training dynamics of neural networks.

from learnscope import Config, run, load_runs
result = run(Config().override("optim.lr=0.1"), store="runs")

The public names are imported when first used, and the built-in kinds (data, models, optimisers, probes, run
kinds, executors, tracking's record sink) register themselves before the first registry lookup
(`registry.load_builtins` imports `learnscope.builtins`): `import learnscope`, and the commands that only
read a store, do not pay for torch.
"""

import importlib

from .version import __version__ as __version__

# public name -> the module that defines it
_PUBLIC = {
    "Config": "config",
    "Dataset": "data",
    "Split": "data",
    "from_tensors": "data",
    "DATA": "registry",
    "MODELS": "registry",
    "OPTIMISERS": "registry",
    "PROBES": "registry",
    "RUN_KINDS": "registry",
    "RunResult": "runs.lifecycle",
    "run": "runs.train",
    "load_runs": "store",
    "track": "own_loop",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'learnscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
