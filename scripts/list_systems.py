"""Prints every named system: N, box, β, the perfect-lattice energy per particle, and its notes.

python -m scripts.list_systems
"""

import jax
import numpy as np

from systems import SYSTEM_NAMES, get_system


def main() -> None:
  print(
    f'{"name":14s} {"N":>4s} {"lattice":14s} {"box":>26s} {"beta":>9s} {"E/N (float64)":>14s} unit'
  )
  notes = []
  with jax.enable_x64(True):
    for name in SYSTEM_NAMES:
      s = get_system(name)
      e = float(s.energy(np.asarray(s.lattice))) / s.num_particles
      box = ' '.join(f'{b:8.4f}' for b in s.box)
      print(
        f'{name:14s} {s.num_particles:4d} {s.lattice_name:14s} {box:>26s} '
        f'{s.beta:9.5f} {e:14.6f} {s.energy_unit}'
      )
      notes += [f'note ({name}): {note}' for note in s.notes]
  for note in notes:
    print(note)


if __name__ == '__main__':
  main()
