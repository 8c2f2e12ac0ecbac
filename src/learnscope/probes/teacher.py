"""Order parameters of a linear student against the teacher of its data (docs/studies/double_descent.md §2):
the overlap R = (Fŵ)ᵀw/d, the modulated norm Q = ‖Fŵ‖²/d and the population error on noiseless labels
E_G = ½(‖w‖²/d − 2R + Q) (+ ½b² for a bias b), with w and F from the data's `extras` (data kind
`linear_teacher`). `teacher/eg` is the error this student makes on noiseless labels of its own teacher, what
a noiseless test set estimates: the `eg_draw` of the exact closed form of the same draw (Eq. (3.6)), not the
paper's Eq. 6 (`eg`, which takes ‖w‖²/d as 1 and adds the training noise σ²/2). The student's weights are
read off its function, ŵ_i = f(e_i) − f(0), so any model that is linear in its input works, whatever its
parameters are called.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import ConfigError
from ..registry import PROBES
from ..sections import ProbeConfig
from .context import ProbeContext


class TeacherConfig(ProbeConfig):
    kind: Literal["teacher"] = "teacher"


@PROBES.register("teacher", TeacherConfig)
def teacher(cfg: TeacherConfig):
    def probe(ctx: ProbeContext) -> dict[str, float]:
        w, F = ctx.data.extras.get("teacher"), ctx.data.extras.get("modulation")
        if w is None or F is None:
            raise ConfigError("probe teacher needs data with a teacher and its F (data.kind=linear_teacher)")
        d = len(w)
        basis = torch.cat([torch.zeros(1, d), torch.eye(d)]).to(ctx.data.train.x)
        was_training = ctx.model.training
        ctx.model.eval()
        with torch.no_grad():
            out = ctx.model(basis).double().reshape(d + 1, -1)[:, 0]
        ctx.model.train(was_training)
        bias, student = out[0], out[1:] - out[0]
        modulated = F.double() @ student
        w = w.double()
        R = modulated @ w / d
        Q = modulated @ modulated / d
        eg = 0.5 * (w @ w / d - 2 * R + Q) + 0.5 * bias**2
        R, Q, eg = torch.stack([R, Q, eg]).tolist()  # one read-back
        return {"teacher/R": R, "teacher/Q": Q, "teacher/eg": eg}

    return probe
