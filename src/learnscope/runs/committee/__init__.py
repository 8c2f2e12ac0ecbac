"""Committee machines (two-layer networks, K hidden units) trained by online SGD on inputs from a generator,
and the Gaussian-equivalence ODEs that predict them (docs/studies/gaussian_equivalence.md):

    generators.py          input generators x = G(c) and their moments (GENERATORS registry)
    model.py               the teacher-student committee machine and online SGD in numpy
    ode.py                 the order parameters and the ODEs (Saad-Solla; Gaussian equivalence), numpy only
    gaussian_integrals.py  the closed-form Gaussian integrals both use, plain arithmetic
    kernels.py             the numba loops of online SGD's steps and the ODE's Euler steps
    kinds.py               the run kinds `online_sgd` (simulation or ODE) and `ge_ode` (ODE on a moments file)
"""
