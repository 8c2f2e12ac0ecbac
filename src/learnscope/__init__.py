"""learnscope: experiments on the training dynamics of neural networks.

from learnscope import Config, run, load_runs
result = run(Config().override("optim.lr=0.1"), store="runs")
"""

# The built-in kinds (data, models, optimisers, probes, run kinds) register themselves when their modules are
# imported, here, before any registry lookup; so does tracking's record sink (store.RECORD_SINKS), before
# any run writes a record.
from . import data, models, optim, probes, tracking  # noqa: F401
from .config import Config
from .data import Dataset, Split, from_tensors
from .registry import DATA, MODELS, OPTIMISERS, PROBES, RUN_KINDS
from .runs import dd_theory, train  # noqa: F401
from .runs.committee import kinds  # noqa: F401
from .runs.train import RunResult, run
from .store import load_runs
from .version import __version__ as __version__

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
