r"""Learned targeted free-energy perturbation (Wirnsberger et al., JCP 153, 144112, 2020).

An invertible map M takes configurations of state A towards state B. With the
reduced potentials u_A, u_B (βU, in kT) of the two states, the generalised works

    Φ_F(x) = u_B(M(x)) − u_A(x) − ln|det J_M(x)|           on x ~ A,
    Φ_R(y) = u_A(M⁻¹(y)) − u_B(y) − ln|det J_{M⁻¹}(y)|     on y ~ B,

satisfy E_A[exp(−Φ_F)] = exp(−ΔF) and E_B[exp(−Φ_R)] = exp(ΔF), ΔF = f_B − f_A,
for any bijection M (Jarzynski 2002). By Jensen E_A[Φ_F] ≥ ΔF and
E_B[Φ_R] ≥ −ΔF, so the one-sided LFEP loss E_A[Φ_F] and the two-sided LBAR loss
½(E_A[Φ_F] + E_B[Φ_R]) are minimised (to ΔF and 0) by a map that pushes A
exactly onto B. The works feed systems.estimators: fep_forward (one-sided TFEP)
and bar (BAR on the mapped works).

A reduced potential is a function (..., M, 3) -> (...) in kT; a map is any
object with forward(x) -> (y, log_det) and inverse(y) -> (x, log_det).
"""

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flows.targeted.column_coupling import ColumnCoupling
from flows.targeted.radial import RadialSpline
from flows.transformer.couplings import CouplingLayer, undo_axis_rolls
from systems import estimators
from systems.box import wrap

ReducedPotential = Callable[[jnp.ndarray], jnp.ndarray]

CONDITIONERS = ('transformer', 'local')


class TargetedMap(nnx.Module):
  """A chain of periodic, permutation-equivariant coupling layers on [lower, upper)³.

  Acts on M particles, (..., M, 3); inputs are first wrapped into the box.
  Identity at initialisation (zero circular shifts, zero spline heads, and the
  layers' net roll of the coordinate axes undone), so its works start as the
  plain FEP works.

  With `sites` (a solid's lattice) particle 0 is the origin, as in the
  solid flows: it is left in place, and the couplings act on the other
  particles' periodic displacements from their own sites relative to it,
  moved to the middle of the box, u_i = wrap(x_i − x_0 − (s_i − s_0) + centre).
  These translations have unit Jacobian; the map commutes with translations
  of the whole configuration (so its works do too), and a map that reshapes
  the thermal cloud the same way about every site (e.g. widens it for a
  higher temperature) becomes one simple function of u. The map is then
  equivariant under permutations of particles 1..M−1 together with their sites.

  With `radial_bins` > 0 every coupling layer is preceded by a
  flows.targeted.radial.RadialSpline about the centre of the box (a solute fixed
  there): it moves each particle along its ray from the centre, the bulk of
  what a solvent does when the solute grows. The first one sits on the
  solute; later ones sit on the box centre of coordinates that the earlier
  layers' circular shifts (zero at initialisation) have translated. With
  `num_layers` = 0 the map is one RadialSpline alone: a one-body map, the
  learned version of the radial maps of the original targeted FEP, and the
  baseline that shows what the coupling layers add.

  With `conditioner` = 'local' every coupling layer is a
  flows.targeted.column_coupling.ColumnCoupling instead: six coupling steps (even and
  odd particles, each axis in turn) whose splines see only the other group's
  particles within a cylinder of radius `local_cutoff` about the moving
  particle's column, plus its own position (a local many-body conditioner,
  equivariant under permutations within each index-parity group). Its width
  is `embedding_size` and its circular features use `num_frequencies`;
  num_heads, num_blocks and use_layernorm are unused. It does not roll the
  axes. Neighbourhoods are distances between positions, so it does not take
  `sites` (the displacements from sites are not positions).

  Args:
    num_mapped: M, the particles of a configuration (..., M, 3) that the map
      takes and returns (a fixed solute is not among them; with `sites`,
      particle 0 of them is the origin and maps to itself). Unlike
      SolidFlow's num_particles N, it counts every particle the map sees.
    lower, upper: the periodic cube [lower, upper)³ (length units), upper > lower.
    num_layers: coupling layers: CouplingLayers (each = two spline couplings
      + a circular shift) or ColumnCouplings; 0 for a RadialSpline alone
      (needs radial_bins > 0).
    num_bins, embedding_size, num_heads, num_blocks, num_frequencies,
      use_layernorm: as flows.CouplingLayer / flows.Conditioner.
    radial_bins: bins of the RadialSplines (0: none).
    sites: optional (M, 3) reference positions (length units), see above;
      transformer conditioner only.
    conditioner: 'transformer' (CouplingLayers) or 'local' (ColumnCouplings).
    local_cutoff: cylinder radius of the local conditioner (length units),
      0 < local_cutoff ≤ (upper − lower)/2; unused by the transformer.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    num_mapped: int,
    lower: float,
    upper: float,
    *,
    num_layers: int,
    num_bins: int,
    embedding_size: int,
    num_heads: int,
    num_blocks: int,
    num_frequencies: int,
    use_layernorm: bool = False,
    radial_bins: int = 0,
    sites=None,
    conditioner: str = 'transformer',
    local_cutoff: float = 2.5,
    rngs: nnx.Rngs,
  ):
    if num_mapped < 1:
      raise ValueError(f'num_mapped={num_mapped} must be >= 1.')
    if not upper > lower:
      raise ValueError(f'upper={upper} must be greater than lower={lower}.')
    if num_layers < 0:
      raise ValueError(f'num_layers={num_layers} must be >= 0.')
    if num_layers == 0 and radial_bins < 1:
      raise ValueError(
        f'num_layers=0 needs radial_bins > 0, got radial_bins='
        f'{radial_bins}: a map with neither is the identity.'
      )
    if conditioner not in CONDITIONERS:
      raise ValueError(f'conditioner={conditioner!r}; expected one of {CONDITIONERS}.')
    if conditioner == 'local' and sites is not None:
      raise ValueError(
        "conditioner='local' does not take sites: its neighbourhoods need positions, "
        'not displacements from sites.'
      )
    self.num_mapped = int(num_mapped)
    self.conditioner = conditioner
    self.lower, self.upper = float(lower), float(upper)
    if sites is None:
      self.offsets = None
    else:  # site − centre of the box, per particle
      sites = np.asarray(sites, np.float64)
      if sites.shape != (num_mapped, 3):
        raise ValueError(f'sites has shape {sites.shape}; expected ({num_mapped}, 3).')
      self.offsets = nnx.Variable(
        jnp.asarray(sites[1:] - sites[0] - 0.5 * (lower + upper), jnp.float32)
      )
    if conditioner == 'local':
      make_layer = lambda: ColumnCoupling(
        lower,
        upper,
        cutoff=local_cutoff,
        num_bins=num_bins,
        width=embedding_size,
        num_frequencies=num_frequencies,
        rngs=rngs,
      )
    else:
      make_layer = lambda: CouplingLayer(
        lower=lower,
        upper=upper,
        num_bins=num_bins,
        embedding_size=embedding_size,
        num_heads=num_heads,
        num_blocks=num_blocks,
        num_frequencies=num_frequencies,
        use_layernorm=use_layernorm,
        rngs=rngs,
      )
    self.layers = nnx.List([make_layer() for _ in range(num_layers)])
    # CouplingLayers roll the axes by one each; ColumnCouplings do not.
    self.num_rolls = num_layers if conditioner == 'transformer' else 0
    self.radial = nnx.List(
      [
        RadialSpline(lower, upper, num_bins=radial_bins, rngs=rngs)
        for _ in range(max(num_layers, 1) if radial_bins else 0)
      ]
    )

  def _prepare(self, x):
    if x.shape[-2:] != (self.num_mapped, 3):
      raise ValueError(f'input has shape {x.shape}; expected (..., {self.num_mapped}, 3).')
    return wrap(x, self.lower, self.upper)

  def _apply(self, x, method: str):
    """The layers' `method` on x (..., M', 3), their axis rolls undone."""
    log_det = jnp.zeros(x.shape[:-2], x.dtype)
    layers = []  # RadialSpline k (if any) before coupling layer k (if any)
    for k in range(max(len(self.layers), len(self.radial))):
      layers += [*self.radial[k : k + 1], *self.layers[k : k + 1]]
    if method == 'forward':
      for layer in layers:
        x, ld = layer.forward(x)
        log_det = log_det + ld
      return undo_axis_rolls(x, self.num_rolls, method), log_det
    x = undo_axis_rolls(x, self.num_rolls, method)
    for layer in reversed(layers):
      x, ld = layer.inverse(x)
      log_det = log_det + ld
    return x, log_det

  def _transform(self, x, method: str):
    x = self._prepare(x)
    if self.offsets is None:
      return self._apply(x, method)
    origin, offsets = x[..., :1, :], self.offsets[...].astype(x.dtype)
    u = wrap(x[..., 1:, :] - origin - offsets, self.lower, self.upper)
    u, log_det = self._apply(u, method)
    moved = wrap(origin + u + offsets, self.lower, self.upper)
    return jnp.concatenate([origin, moved], axis=-2), log_det

  def forward(self, x):
    """A -> B: x (..., M, 3) -> (M(x) in the box, ln|det J_M(x)| (...))."""
    return self._transform(x, 'forward')

  def inverse(self, y):
    """B -> A: y (..., M, 3) -> (M⁻¹(y) in the box, ln|det J_{M⁻¹}(y)| (...))."""
    return self._transform(y, 'inverse')


def forward_work(
  bijector, x, reduced_a: ReducedPotential, reduced_b: ReducedPotential
) -> jnp.ndarray:
  """Φ_F (...) in kT of A samples x (..., M, 3) mapped by bijector.forward."""
  y, log_det = bijector.forward(x)
  return reduced_b(y) - reduced_a(x) - log_det


def reverse_work(
  bijector, y, reduced_a: ReducedPotential, reduced_b: ReducedPotential
) -> jnp.ndarray:
  """Φ_R (...) in kT of B samples y (..., M, 3) mapped by bijector.inverse."""
  x, log_det = bijector.inverse(y)
  return reduced_a(x) - reduced_b(y) - log_det


def lfep_loss(bijector, x_a, reduced_a, reduced_b) -> jnp.ndarray:
  """One-sided loss E_A[Φ_F] ≥ ΔF (kT), on A samples x_a (n, M, 3)."""
  return jnp.mean(forward_work(bijector, x_a, reduced_a, reduced_b))


def lbar_loss(bijector, x_a, y_b, reduced_a, reduced_b) -> jnp.ndarray:
  """Two-sided loss ½(E_A[Φ_F] + E_B[Φ_R]) ≥ 0 (kT), on x_a ~ A and y_b ~ B."""
  return 0.5 * (
    lfep_loss(bijector, x_a, reduced_a, reduced_b)
    + jnp.mean(reverse_work(bijector, y_b, reduced_a, reduced_b))
  )


def estimate(work_forward, work_reverse=None):
  """ΔF = f_B − f_A (kT) from held-out works: one-sided FEP, or BAR given both.

  With identity-map works these are plain FEP and BAR, with mapped works LFEP
  and LBAR. Returns a systems.estimators.Estimate.
  """
  if work_reverse is None:
    return estimators.fep_forward(work_forward)
  return estimators.bar(work_forward, work_reverse)
