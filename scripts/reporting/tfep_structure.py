"""What the trained map of a TFEP run does to the structure, for `scripts.tfep_report`.

g(r) of held-out A and B samples and of each mapped by the trained map, and
on a ladder with a solute the density about it.
"""

import jax
import numpy as np

from experiments import tfep_stages
from scripts import observables
from systems import ladders

STRUCTURE_SETS = ('A', 'B', 'M(A)', 'M⁻¹(B)')  # held-out samples, then mapped


def structure(
  config, ladder: ladders.Ladder, data: dict, bijector, num_frames: int = 1000, num_bins: int = 60
) -> dict:
  """g(r) of `num_frames` held-out A and B samples, of M(A) and of M⁻¹(B).

  A map that does its job makes M(A) look like B and M⁻¹(B) like A. Returns
  {'num_frames', 'pair': {'edges', <set>: g}} (observables.radial_distribution)
  and, on a ladder with a solute, 'solute' (observables.distribution_about_point
  about it) and 'inside_radius_b' (per set, the mean number of particles closer
  to the solute than its radius in state B, λ_B).
  """
  x_a, y_b = tfep_stages.held_out_ends(config, data)['samples'][:, :num_frames]
  batch = config.eval.batch_size
  sets = dict(
    zip(
      STRUCTURE_SETS,
      (
        x_a,
        y_b,
        tfep_stages.batched(jax.jit(lambda x: bijector.forward(x)[0]), x_a, batch),
        tfep_stages.batched(jax.jit(lambda y: bijector.inverse(y)[0]), y_b, batch),
      ),
    )
  )
  box = np.full(3, ladder.upper - ladder.lower)
  result = dict(num_frames=len(x_a))
  kinds = [('pair', lambda x: observables.radial_distribution(x, box, num_bins))]
  if ladder.solute is not None:
    kinds.append(
      ('solute', lambda x: observables.distribution_about_point(x, box, ladder.solute, num_bins))
    )
    radius_b = float(ladder.parameters[-1])
    result['inside_radius_b'] = {}
    for name, x in sets.items():
      inside = observables.distances_to_point(x, box, ladder.solute) < radius_b
      result['inside_radius_b'][name] = float(np.mean(np.sum(inside, axis=-1)))
  for kind, distribution in kinds:
    curves = {name: distribution(x) for name, x in sets.items()}
    result[kind] = dict(
      edges=next(iter(curves.values()))[0].tolist(),
      **{name: g.tolist() for name, (_, g) in curves.items()},
    )
  return result
