"""Learned targeted FEP between two temperatures of the lj_32 FCC solid.

Train the map (samples all states first; rerun to resume):
  python -m experiments.tfep \
    --config=experiments/configs/tfep_solid.py:cpu --workdir=runs/tfep_solid_cpu
Table and plot:
  python -m scripts.tfep_report --workdir=runs/tfep_solid_cpu

lj_32 (FCC, density 1.28, cutoff 2.7) at β_A = 0.5 (the registry's T = 2) and
β_B = 0.35 (T ≈ 2.86): same box, so the map only has to widen the thermal
cloud; a 30 % temperature step keeps plain FEP poor (work std ≈ 2 kT) while
the solid stays solid. The ladder is linear in β. The map acts on each
particle's displacement from its lattice site, relative to particle 0
(`model.centre_on_sites`), where widening the thermal cloud is the same simple
function for every particle. Variants as in tfep_solvation.py, whose
`make_config` documents every key: `cpu` (table at 10³ samples per state,
about 6 min on two CPU cores), `cpu_1e4` (the `cpu` map, table at 10³ and
10⁴: 14 min of run and 5.5 min of report on two cores, 11.4 GiB peak RSS, a
4.9 GB samples.npz; docs/tfep_lj_32_cpu_1e4.md), `paper` and `tiny` (seconds;
for tests and smoke runs).
"""

from experiments.configs import tfep_solvation

BETA_A = 0.5
BETA_B = 0.35

_STATES = dict(lambda_a=BETA_A, lambda_b=BETA_B, num_states=6)
_SAMPLING = dict(step_size=0.005)


def _cpu() -> dict:
  return dict(
    states=_STATES,
    sampling=dict(_SAMPLING, burn_in=500, thin=5),
    model=dict(num_layers=2, centre_on_sites=True),
    train=dict(batch_size=32),
    # 200 held-out subsets: the MBAR reference over 6 × 202,000
    # samples is then ≥ 5× more precise than the table's spreads
    # (with 70 subsets it was 3.3×), and the variance ratio's 90 %
    # interval spans −21 %/+26 %. About 6 minutes on two CPU cores.
    evaluation=dict(num_subsets=200),
  )


def _cpu_1e4() -> dict:
  # The `cpu` map and training, with the table at 10³ and 10⁴ samples per
  # state: 200 held-out subsets of 10⁴ (and all 2000 disjoint ones of 10³),
  # i.e. 2,002,000 samples per state, so the reference error shrinks with
  # LBAR's spread at 10⁴ (about 1/√10 of its spread at 10³).
  cpu = _cpu()
  return dict(cpu, evaluation=dict(sample_sizes=(1000, 10_000), num_subsets=200))


def _paper() -> dict:
  paper = tfep_solvation.VARIANTS['paper'](tfep_solvation.PAIRS['paper'])  # its sizes
  paper.update(
    states=_STATES,
    sampling=dict(paper['sampling'], **_SAMPLING),
    model=dict(paper['model'], centre_on_sites=True, radial_bins=0),
  )
  return paper


def _tiny() -> dict:
  # Seconds: two states, 16 samples per state (12 in samples.npz, the last 4 held-out ones
  # drawn on their own, as `tfep_solvation.py:cpu` draws most of its ends'), a one-layer
  # width-8 map.
  return dict(
    states=dict(_STATES, num_states=2),
    sampling=dict(
      _SAMPLING,
      num_chains=2,
      num_train=8,
      num_ladder_held_out=4,
      burn_in=10,
      thin=1,
      num_leapfrog=2,
    ),
    model=dict(
      num_layers=1,
      centre_on_sites=True,
      transformer=dict(num_bins=4, embedding_size=8, num_frequencies=1),
    ),
    train=dict(batch_size=4, num_steps=20, log_every_steps=5, checkpoint_every_seconds=1e9),
    evaluation=dict(sample_sizes=(4,), num_subsets=2, batch_size=8),
  )


VARIANTS = {'cpu': _cpu, 'cpu_1e4': _cpu_1e4, 'paper': _paper, 'tiny': _tiny}


def get_config(arg: str = 'cpu'):
  """The lj_32 temperature-step config of variant `arg` (see VARIANTS)."""
  if arg not in VARIANTS:
    raise ValueError(f'variant={arg!r}; expected one of {", ".join(VARIANTS)}.')
  return tfep_solvation.make_config('lj_32', arg, **VARIANTS[arg]())
