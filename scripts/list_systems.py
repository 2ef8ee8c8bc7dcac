"""Prints every named system: N, box, β and the perfect-lattice energy per particle.

python -m scripts.list_systems
"""

import warnings

import jax
import numpy as np

from systems import SYSTEM_NAMES, get_system


def main() -> None:
  print(
    f'{"name":14s} {"N":>4s} {"lattice":14s} {"box":>26s} {"beta":>9s} {"E/N (float64)":>14s} unit'
  )
  with warnings.catch_warnings(record=True) as caught, jax.enable_x64(True):
    warnings.simplefilter('always')
    for name in SYSTEM_NAMES:
      s = get_system(name)
      e = float(s.energy(np.asarray(s.lattice))) / s.num_particles
      box = ' '.join(f'{b:8.4f}' for b in s.box)
      print(
        f'{name:14s} {s.num_particles:4d} {s.lattice_name:14s} {box:>26s} '
        f'{s.beta:9.5f} {e:14.6f} {s.energy_unit}'
      )
  for w in caught:
    print(f'note: {w.message}')


if __name__ == '__main__':
  main()
