"""What a probe sees at a step: the model, the data, the loss, and what other probes published then."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.dataset import Dataset


@dataclass
class ProbeContext:
    model: nn.Module
    data: Dataset
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # summed over the batch
    step: int
    batch_size: int  # evaluation batch
    optimizer: torch.optim.Optimizer | None = None  # probes of its state: learning rates, step statistics
    # What one probe computed at a step for others at the same step (e.g. the evaluation probe's argmax
    # predictions, read by the predictions probe): key -> (step, value). Entries of other steps are stale.
    shared: dict[Any, tuple[int, Any]] = field(default_factory=dict)

    def publish(self, key: Any, value: Any) -> None:
        self.shared[key] = (self.step, value)

    def lookup(self, key: Any) -> Any:
        """What was published under `key` at the current step, else None."""
        step, value = self.shared.get(key, (None, None))
        return value if step == self.step else None
