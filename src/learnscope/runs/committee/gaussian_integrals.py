"""The Gaussian integrals of the committee-machine ODEs for g(u) = erf(u/sqrt 2), in closed form (Saad & Solla
1995; Goldt et al. 2020; docs/studies/gaussian_equivalence.md Eqs. (5.8)-(5.10)), as functions of the entries
c_ij of the covariance of (u0, u1, ...).

Plain arithmetic, so the same definitions run on numpy arrays (ode.py evaluates whole blocks
of index tuples at once) and compiled on scalars (learnscope.kernels). Below both in the layer table
(docs/architecture.md), so both import it and neither imports the other's folder. An edit here changes
`kernels.FORMULAS_SHA256` (numba's cache does not see edits to another file; tests/test_kernels.py says so).
"""

from __future__ import annotations

import numpy as np


def i2_erf(c00, c01, c11):
    """E[g(u0) g(u1)], g(u) = erf(u/sqrt 2)."""
    return (2 / np.pi) * np.arcsin(c01 / np.sqrt((1 + c00) * (1 + c11)))


def i3_erf(c00, c01, c02, c12, c22):
    """E[g'(u0) u1 g(u2)], g(u) = erf(u/sqrt 2)."""
    lam3 = (1 + c00) * (1 + c22) - c02**2
    return (2 / np.pi) / np.sqrt(lam3) * (c12 * (1 + c00) - c01 * c02) / (1 + c00)


def i4_erf(c00, c01, c02, c03, c11, c12, c13, c22, c23, c33):
    """E[g'(u0) g'(u1) g(u2) g(u3)], g(u) = erf(u/sqrt 2)."""
    lam4 = (1 + c00) * (1 + c11) - c01**2
    lam0 = lam4 * c23 - c12 * c13 * (1 + c00) - c02 * c03 * (1 + c11) + c01 * c02 * c13 + c01 * c03 * c12
    lam1 = lam4 * (1 + c22) - c12**2 * (1 + c00) - c02**2 * (1 + c11) + 2 * c01 * c02 * c12
    lam2 = lam4 * (1 + c33) - c13**2 * (1 + c00) - c03**2 * (1 + c11) + 2 * c01 * c03 * c13
    return (4 / np.pi**2) / np.sqrt(lam4) * np.arcsin(lam0 / np.sqrt(lam1 * lam2))
