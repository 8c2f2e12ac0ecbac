"""learnscope: experiments on the training dynamics of neural networks.

from learnscope import Config, run, load_runs
result = run(Config().override("optim.lr=0.1"), store="runs")
"""

__version__ = "0.1.0"

# The built-in kinds (data, models, optimisers, probes, run kinds) register themselves when their modules are
# imported, here, before any registry lookup.
from . import data, models, online_sgd, optim, probes, theory_curves  # noqa: F401
from .config import Config
from .data import Dataset, Split, from_tensors
from .registry import DATA, MODELS, OPTIMISERS, PROBES, RUN_KINDS
from .store import load_runs
from .train import RunResult, run

__all__ = [
    "DATA",
    "MODELS",
    "OPTIMISERS",
    "PROBES",
    "RUN_KINDS",
    "Config",
    "Dataset",
    "RunResult",
    "Split",
    "from_tensors",
    "load_runs",
    "run",
]
