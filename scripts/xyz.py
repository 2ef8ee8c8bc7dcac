"""Export of configurations to extended XYZ, readable by ASE and OVITO.

  python -m scripts.xyz --samples=W/samples.npz --out=W/samples.xyz [--max_frames=100]

Each frame is the atom count, a comment line
  Lattice="Lx 0 0 0 Ly 0 0 0 Lz" Properties=species:S:1:pos:R:3 pbc="T T T" energy=U
and one `species x y z` line per atom. Positions are written as given (not
wrapped into the box), in the length unit of the box; floats use the shortest
representation that reads back exactly.
"""

import argparse
import sys

import numpy as np


def write_extxyz(path: str, positions, box, species: str = 'O', energies=None) -> int:
  """Writes frames of one species in an orthorhombic periodic box.

  Args:
    path: output file (overwritten).
    positions: (n, N, 3) configurations, length unit.
    box: (3,) box edges, length unit.
    species: chemical symbol of every atom (no whitespace or quotes).
    energies: optional (n,) energy per frame, written as `energy=`.

  Returns:
    the number of frames written.
  """
  positions = np.asarray(positions, np.float64)
  box = np.asarray(box, np.float64)
  if positions.ndim != 3 or positions.shape[-1] != 3:
    raise ValueError(f'positions must have shape (frames, N, 3), got {positions.shape}.')
  if box.shape != (3,) or not np.all(np.isfinite(box) & (box > 0)):
    raise ValueError(f'box must be 3 positive finite edge lengths, got {box}.')
  if not species or any(c.isspace() or c in '"\'=' for c in species):
    raise ValueError(
      f'species={species!r} must be a non-empty symbol without whitespace, quotes or "=".'
    )
  if energies is not None:
    energies = np.asarray(energies, np.float64)
    if energies.shape != positions.shape[:1]:
      raise ValueError(
        f'energies must have shape ({positions.shape[0]},) (one per frame), got {energies.shape}.'
      )
  lx, ly, lz = (repr(float(v)) for v in box)
  header = f'Lattice="{lx} 0 0 0 {ly} 0 0 0 {lz}" Properties=species:S:1:pos:R:3 pbc="T T T"'
  with open(path, 'w') as f:
    for i, frame in enumerate(positions):
      comment = header if energies is None else f'{header} energy={float(energies[i])!r}'
      f.write(f'{frame.shape[0]}\n{comment}\n')
      f.writelines(f'{species} {float(x)!r} {float(y)!r} {float(z)!r}\n' for x, y, z in frame)
  return positions.shape[0]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--samples', required=True, help='.npz with positions (n, N, 3), box (3,), optional energy (n,)'
  )
  parser.add_argument('--out', required=True, help='.xyz output path')
  parser.add_argument(
    '--max_frames', type=int, default=100, help='write at most this many leading frames'
  )
  parser.add_argument('--species', default='O', help='chemical symbol of the atoms')
  args = parser.parse_args(argv)
  if args.max_frames < 1:
    parser.error(f'--max_frames={args.max_frames} must be a positive integer.')
  with np.load(args.samples) as data:
    missing = {'positions', 'box'} - set(data.files)
    if missing:
      raise ValueError(
        f'{args.samples} lacks {sorted(missing)}; expected positions '
        f'(n, N, 3) and box (3,), found {sorted(data.files)}.'
      )
    positions = data['positions'][: args.max_frames]
    energies = data['energy'][: args.max_frames] if 'energy' in data.files else None
    box = data['box']
  count = write_extxyz(args.out, positions, box, args.species, energies)
  print(f'Wrote {count} frames of {positions.shape[1]} atoms to {args.out}.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
