"""Run kinds and the machinery every run goes through.

    lifecycle.py   the one run lifecycle (lock, config.json, states, resume point, failure) and `RunResult`
    train.py       the `train` kind: a config in, a stored run out; `drive`, the one train loop; `RunLoop`
    ensemble.py    runs that differ only in seed and optimiser, trained as one stacked model through `drive`
    dd_theory.py   the `dd_theory` kind: a closed-form double-descent curve (theory/double_descent.py)
    committee/     committee machines: generators, the model and online SGD, the ODEs, their compiled
                   kernels, and the `online_sgd` and `ge_ode` kinds

A new run kind is one module: a config class (`config.RunKindConfig`) and a runner registered with
`@RUN_KINDS.register(kind, ConfigClass)`, which hands its computation to the lifecycle (`computed_run` for
one computation; `execute` for anything else). This package imports nothing on its own, so the numpy-only
modules under it (committee/ode.py, committee/gaussian_integrals.py) import without torch.
"""
