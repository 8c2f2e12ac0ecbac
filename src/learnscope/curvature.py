"""Curvature of a model's loss on given data: Hessian-vector products, the top eigenvalue (power iteration or
Lanczos), the trace (Hutchinson), and their restrictions to the tangent space of a sphere.

The operator is v ↦ H v with H = ∇²_θ [scale · Σ_chunks loss(model(x_c), y_c)], θ a chosen list of parameters
(default: every parameter with requires_grad) flattened into one vector, the data cut into chunks of
`batch_size` samples. Vectors are flat tensors of the parameters' dtype and device. Two backends, which agree:

- "autograd" (the default): double backward (reverse over reverse). It runs any module, including those
  that write buffers during the forward pass and custom autograd Functions that have no forward-mode rule.
  On the CPU it measured as fast as "func" (MLP and BN conv net, the tests' sizes and a few-MB model).
- "func": `torch.func.jvp` of `torch.func.grad` (forward over reverse), which needs less memory on large
  models; it refuses modules that mutate a captured tensor in place (other than BatchNorm, handled below).

Each operator call leaves the model exactly as found and is a pure function of (parameters, data):
- parameters enter through `torch.func.functional_call` as detached copies, so their `.grad` is untouched;
- BatchNorm in train mode normalises each chunk by that chunk's own batch statistics (as training does), with
  the running statistics left alone (`track_running_stats` is switched off for the call: batch statistics, no
  update); every buffer is also copied before and restored after the call, for any other stateful module. In
  train mode the chunk size is therefore part of what is computed (statistics per chunk); in eval mode the
  running statistics are used and chunks do not matter;
- the global RNG is forked for the call and reseeded with `seed`, so stochastic layers (dropout) draw the same
  masks in every call (the operator is a fixed symmetric matrix) and the training RNG is not consumed.

Tangent space of a sphere (`tangent=True`): with u = θ/‖θ‖ (all chosen parameters concatenated: one sphere,
as SGD on the sphere of Kodryan et al., NeurIPS 2022, docs/studies/sphere_regimes.md) and P = I − u uᵀ, the
operator is P H P. On the tangent space {v : uᵀv = 0} this is the tangent block of the Hessian; the Riemannian
Hessian of L on the sphere of radius ρ = ‖θ‖ is P H P − (θᵀ∇L/ρ²) P, and its curvature term vanishes for a
scale-invariant loss (L(cθ) = L(θ) gives θᵀ∇L = 0), so there P H P restricted to the tangent space *is* the
Riemannian Hessian. On the whole space P H P has one more eigenvalue, 0 (eigenvector u); the eigensolvers
start from a tangent vector and stay in the tangent space, so they report tangent eigenvalues only. For a
scale-invariant loss H(cθ) = H(θ)/c², so the Hessian at the unit-sphere point θ/‖θ‖ is ‖θ‖² H(θ).

Randomness (start vectors, Rademacher vectors) comes from private CPU `torch.Generator`s seeded with `seed`:
the same numbers on every device, and the global RNG is never used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

__all__ = [
    "HessianOperator",
    "Operator",
    "hutchinson_trace",
    "hvp_operator",
    "lanczos",
    "power_iteration",
    "top_eigenpair",
    "top_eigenvalue",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
Backend = Literal["autograd", "func"]


class Operator:
    """A symmetric linear map on flat vectors of length `dim` (dtype, device), with an optional projection
    onto the subspace it acts on (`space_dim` its dimension). Wraps any callable, e.g. a matrix in a test."""

    def __init__(
        self,
        matvec: Callable[[Tensor], Tensor],
        dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        project: Callable[[Tensor], Tensor] | None = None,
        space_dim: int | None = None,
    ):
        self._matvec = matvec
        self.dim = dim
        self.dtype = dtype
        self.device = torch.device(device)
        self._project = project
        self.space_dim = dim if space_dim is None else space_dim

    def __call__(self, v: Tensor) -> Tensor:
        return self._matvec(v)

    def project(self, v: Tensor) -> Tensor:
        """v projected onto the space the operator acts on (identity without a projection)."""
        return v if self._project is None else self._project(v)


class HessianOperator(Operator):
    """v ↦ H v (flat vectors) of scale·Σ_chunks loss(model(x_c), y_c) with respect to `params` (parameters or
    (name, parameter) pairs; default: all with requires_grad); `.apply` takes a list of parameter-shaped
    tensors. `loss` is a chunk's loss (summed over it: scale=1/len(x) makes the Hessian of the mean).
    `tangent`: P H P, P = I − uuᵀ, u = θ/‖θ‖. The model runs in its current mode (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss: LossFn,
        params: Iterable[nn.Parameter | tuple[str, nn.Parameter]] | None = None,
        batch_size: int | None = None,
        *,
        scale: float = 1.0,
        tangent: bool = False,
        backend: Backend = "autograd",
        seed: int = 0,
    ):
        if backend not in ("autograd", "func"):
            raise ValueError(f"backend must be 'autograd' or 'func', got {backend!r}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} targets")
        names_by_id = {id(p): n for n, p in model.named_parameters()}
        if params is None:
            chosen = [p for p in model.parameters() if p.requires_grad]
        else:
            chosen = [p[1] if isinstance(p, tuple) else p for p in params]
        if not chosen:
            raise ValueError("no parameters to differentiate")
        missing = [tuple(p.shape) for p in chosen if id(p) not in names_by_id]
        if missing:
            raise ValueError(f"parameters of shapes {missing} are not parameters of the model")
        dtypes = {p.dtype for p in chosen}
        if len(dtypes) > 1:
            raise ValueError(f"the chosen parameters mix dtypes {sorted(map(str, dtypes))}")
        self.model, self.x, self.y, self.loss = model, x, y, loss
        self.params = chosen
        self.names = [names_by_id[id(p)] for p in chosen]
        self.shapes = [p.shape for p in chosen]
        self.numels = [p.numel() for p in chosen]
        self.batch_size = batch_size or max(len(x), 1)
        self.scale = scale
        self.tangent = tangent
        self.backend = backend
        self.seed = seed
        dim = sum(self.numels)
        super().__init__(
            self._hvp,
            dim,
            chosen[0].dtype,
            chosen[0].device,
            self._tangent_projection if tangent else None,
            dim - 1 if tangent else dim,
        )

    # --- flat vectors <-> lists of parameter-shaped tensors ----------------------------------------------

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, v: Tensor) -> list[Tensor]:
        return [c.view(s) for c, s in zip(torch.split(v, self.numels), self.shapes, strict=True)]

    def unit(self) -> Tensor:
        """u = θ/‖θ‖, the chosen parameters (their current values) concatenated and normalised."""
        theta = self.flatten([p.detach() for p in self.params])
        return theta / torch.linalg.vector_norm(theta)

    def _tangent_projection(self, v: Tensor) -> Tensor:
        u = self.unit()
        return v - u * torch.dot(u, v)

    def apply(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """H v for v given as a list of parameter-shaped tensors."""
        return self.unflatten(self(self.flatten(vectors)))

    # --- the product ----------------------------------------------------------------------------------------

    def _hvp(self, v: Tensor) -> Tensor:
        v = self.project(v.to(self.dtype))
        vs = self.unflatten(v)
        total = torch.zeros_like(v)
        chunk = self._chunk_autograd if self.backend == "autograd" else self._chunk_func
        with untouched(self.model, self.device, self.seed):
            for start in range(0, len(self.y), self.batch_size):
                xc, yc = self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
                total += self.flatten(chunk(xc, yc, vs))
        return self.project(total * self.scale)

    def _chunk_autograd(self, x: Tensor, y: Tensor, vs: list[Tensor]) -> list[Tensor]:
        ps = [p.detach().requires_grad_() for p in self.params]
        value = self.loss(functional_call(self.model, dict(zip(self.names, ps, strict=True)), (x,)), y)
        grads = torch.autograd.grad(value, ps, create_graph=True, allow_unused=True)
        terms = [(g * u).sum() for g, u in zip(grads, vs, strict=True) if g is not None and g.requires_grad]
        if not terms:  # the gradient does not depend on the parameters: H = 0
            return [torch.zeros_like(p) for p in ps]
        hv = torch.autograd.grad(torch.stack(terms).sum(), ps, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h for p, h in zip(ps, hv, strict=True)]

    def _chunk_func(self, x: Tensor, y: Tensor, vs: list[Tensor]) -> list[Tensor]:
        def value(ps: tuple[Tensor, ...]) -> Tensor:
            return self.loss(functional_call(self.model, dict(zip(self.names, ps, strict=True)), (x,)), y)

        primals = tuple(p.detach() for p in self.params)
        _, hv = jvp(grad(value), (primals,), (tuple(vs),))
        return list(hv)


# The Hessian-vector product of a model's loss, built from (model, x, y, loss, params, batch_size, scale=,
# tangent=, backend=, seed=): the public name of HessianOperator.
hvp_operator = HessianOperator


@contextlib.contextmanager
def untouched(model: nn.Module, device: torch.device, seed: int = 0, grad: bool = True) -> Iterator[None]:
    """Run a computation on `model` that leaves its buffers and the global RNG as found (a probe's promise):
    BatchNorm modules in train mode stop tracking running statistics, every buffer is restored afterwards, the
    global RNG (CPU and the model's CUDA device) is forked and reseeded with `seed`; autograd is on (`grad`)
    or off inside."""
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    for m in norms:
        m.track_running_stats = False
    try:
        with torch.random.fork_rng(devices=cuda), torch.set_grad_enabled(grad):
            torch.random.default_generator.manual_seed(seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            yield
    finally:
        for m in norms:
            m.track_running_stats = True
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


# --- eigenvalues and trace ----------------------------------------------------------------------------------


def _start_vector(op: Operator, seed: int) -> Tensor:
    """A unit Gaussian vector in the operator's space, from a private CPU generator (device-independent)."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(op.device, op.dtype)
    v = op.project(v)
    return v / torch.linalg.vector_norm(v)


def power_iteration(
    op: Operator, iters: int = 100, *, tol: float | None = None, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """(eigenvalue, unit eigenvector) of largest magnitude by power iteration: the Rayleigh quotient vᵀHv of
    the last iterate. With `tol`, stops once it changes by at most tol·|value| (one host read-back per step);
    without, runs `iters` products and never waits for the device. With two dominant eigenvalues ±λ the
    iteration does not settle: use Lanczos."""
    v = _start_vector(op, seed)
    value = torch.zeros((), dtype=torch.float64, device=op.device)
    for step in range(iters):
        hv = op(v)
        previous, value = value, torch.dot(v, hv).double()
        if tol is not None and step > 0 and abs(float(value - previous)) <= tol * abs(float(value)):
            break
        norm = torch.linalg.vector_norm(hv)
        v = hv / norm.clamp_min(torch.finfo(op.dtype).tiny)
    return value, v


def lanczos(op: Operator, steps: int = 20, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Ritz values (ascending, float64) and unit Ritz vectors (rows) of `steps` Lanczos steps (at most the
    dimension of the operator's space) with full reorthogonalisation (twice per step), from the seeded start
    vector. The Ritz values interlace the spectrum: the largest is a lower bound of λ_max that converges fast
    (error ~ exp(−4·steps·sqrt(gap/spread))). No host read-back until the small tridiagonal eigenproblem: a
    breakdown (invariant Krylov space, e.g. a Hessian of low rank) continues from a fresh random direction
    chosen on the device, so that no spurious zero Ritz value appears."""
    k = max(1, min(steps, op.space_dim))
    eps = torch.finfo(op.dtype).eps
    fresh_generator = torch.Generator(device=op.device).manual_seed(seed + 1)
    basis = torch.zeros(k, op.dim, dtype=op.dtype, device=op.device)
    alpha = torch.zeros(k, dtype=torch.float64, device=op.device)
    beta = torch.zeros(k, dtype=torch.float64, device=op.device)
    q = _start_vector(op, seed)
    previous, beta_prev = torch.zeros_like(q), torch.zeros((), dtype=op.dtype, device=op.device)
    for j in range(k):
        basis[j] = q
        w = op(q)
        a = torch.dot(q, w)
        w = w - a * q - beta_prev * previous
        for _ in range(2):  # full reorthogonalisation; twice is enough (Parlett)
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = torch.linalg.vector_norm(w)
        alpha[j] = a
        if j + 1 == k:
            break
        fresh = op.project(torch.randn(op.dim, generator=fresh_generator, dtype=op.dtype, device=op.device))
        for _ in range(2):
            fresh = fresh - basis[: j + 1].T @ (basis[: j + 1] @ fresh)
        fresh = fresh / torch.linalg.vector_norm(fresh).clamp_min(torch.finfo(op.dtype).tiny)
        size = torch.maximum(alpha[: j + 1].abs().max(), beta[:j].max() if j else alpha[0].abs()).to(op.dtype)
        ok = b > 10 * eps * size
        b = torch.where(ok, b, torch.zeros_like(b))
        beta[j] = b
        previous, beta_prev = q, b
        q = torch.where(ok, w / b.clamp_min(torch.finfo(op.dtype).tiny), fresh)
    tridiagonal = torch.diag(alpha) + torch.diag(beta[: k - 1], 1) + torch.diag(beta[: k - 1], -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    return values, (vectors.T.to(op.dtype) @ basis)


def top_eigenpair(
    op: Operator,
    iters: int = 20,
    *,
    method: Literal["lanczos", "power"] = "lanczos",
    tol: float | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """(value, unit vector): the largest algebraic eigenvalue by `iters` Lanczos steps, or the one of largest
    magnitude by power iteration (`tol`: stop early, see `power_iteration`). The value is a float64 scalar
    on the operator's device: `float()` it, or stack it with other results for one read-back."""
    if method == "lanczos":
        values, vectors = lanczos(op, iters, seed=seed)
        return values[-1], vectors[-1]
    if method == "power":
        return power_iteration(op, iters, tol=tol, seed=seed)
    raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")


def top_eigenvalue(
    op: Operator,
    iters: int = 20,
    *,
    method: Literal["lanczos", "power"] = "lanczos",
    tol: float | None = None,
    seed: int = 0,
) -> Tensor:
    """The top eigenvalue (see `top_eigenpair`) as a float64 device scalar."""
    return top_eigenpair(op, iters, method=method, tol=tol, seed=seed)[0]


def hutchinson_trace(op: Operator, samples: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(estimate, standard error) of tr H: the mean of zᵀHz over `samples` Rademacher vectors z (private CPU
    generator), and the sample standard deviation over sqrt(samples) (NaN for one sample). The variance of one
    term is 2·Σ_{i≠j} H_ij². For a projected operator this is tr(P H P), the trace over its space. Float64
    device scalars; no host read-back."""
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    terms = []
    for _ in range(samples):
        signs = torch.randint(0, 2, (op.dim,), generator=generator, dtype=torch.int8)  # 1 byte to the device
        z = (2 * signs - 1).to(op.device, op.dtype)
        terms.append(torch.dot(z, op(z)).double())
    values = torch.stack(terms)
    return values.mean(), values.std() / samples**0.5
