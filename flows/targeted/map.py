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

from flows.bijector import run_chain, stack_layers
from flows.targeted.radial import RadialSpline
from flows.transformer.couplings import undo_axis_rolls
from systems import estimators
from systems.box import wrap

ReducedPotential = Callable[[jnp.ndarray], jnp.ndarray]


class _MapStep(nnx.Module):
  """One step of the map's chain: a RadialSpline (optional) then a coupling layer (optional)."""

  def __init__(self, radial, coupling):
    self.radial, self.coupling = radial, coupling

  def _layers(self):
    return [layer for layer in (self.radial, self.coupling) if layer is not None]

  def forward(self, x):
    log_det = jnp.zeros(x.shape[:-2], x.dtype)
    for layer in self._layers():
      x, ld = layer.forward(x)
      log_det = log_det + ld
    return x, log_det

  def inverse(self, y):
    log_det = jnp.zeros(y.shape[:-2], y.dtype)
    for layer in reversed(self._layers()):
      y, ld = layer.inverse(y)
      log_det = log_det + ld
    return y, log_det


class TargetedMap(nnx.Module):
  """A chain of periodic, permutation-equivariant coupling layers on [lower, upper)³.

  Acts on M particles, (..., M, 3); inputs are first wrapped into the box.
  Identity at initialisation (zero circular shifts, zero spline heads, and the
  layers' net roll of the coordinate axes undone), so its works start as the
  plain FEP works.

  The coupling layers come from `make_layer` (the map families of
  flows.registry: 'transformer', flows.CouplingLayer, and 'column',
  flows.targeted.column_coupling.ColumnCoupling); a layer class's `axis_roll`
  says by how many places it rolls the coordinate axes (undone by the map).
  They are stacked and scanned (flows.bijector.run_chain).

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

  Args:
    num_mapped: M, the particles of a configuration (..., M, 3) that the map
      takes and returns (a fixed solute is not among them; with `sites`,
      particle 0 of them is the origin and maps to itself). Unlike
      SolidFlow's num_particles N, it counts every particle the map sees.
    lower, upper: the periodic cube [lower, upper)³ (length units), upper > lower.
    num_layers: coupling layers; 0 for a RadialSpline alone (needs radial_bins > 0).
    make_layer: rngs -> one coupling layer on [lower, upper)³ (a Bijector with
      a class attribute `axis_roll`); unused when num_layers = 0.
    radial_bins: bins of the RadialSplines (0: none).
    sites: optional (M, 3) reference positions (length units), see above.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    num_mapped: int,
    lower: float,
    upper: float,
    *,
    num_layers: int,
    make_layer: Callable[[nnx.Rngs], nnx.Module] | None = None,
    radial_bins: int = 0,
    sites=None,
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
    if num_layers and make_layer is None:
      raise ValueError(f'num_layers={num_layers} needs make_layer (a coupling layer factory).')
    self.num_mapped = int(num_mapped)
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

    def make_step(step_rngs):
      radial = None
      if radial_bins:
        radial = RadialSpline(lower, upper, num_bins=radial_bins, rngs=step_rngs)
      return _MapStep(radial, make_layer(step_rngs) if num_layers else None)

    num_steps = max(num_layers, 1) if radial_bins else num_layers
    self.layers = stack_layers(make_step, num_steps, rngs)  # stacked on a leading axis
    roll = getattr(self.layers.coupling, 'axis_roll', 0) if num_layers else 0
    self.num_rolls = num_layers * roll

  def _prepare(self, x):
    if x.shape[-2:] != (self.num_mapped, 3):
      raise ValueError(f'input has shape {x.shape}; expected (..., {self.num_mapped}, 3).')
    return wrap(x, self.lower, self.upper)

  def _apply(self, x, method: str):
    """The chain's `method` on x (..., M', 3), its axis rolls undone."""
    if method == 'inverse':
      x = undo_axis_rolls(x, self.num_rolls, method)
    x, log_det = run_chain(self.layers, x, method)
    if method == 'forward':
      x = undo_axis_rolls(x, self.num_rolls, method)
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
