"""Truncated-and-shifted Lennard-Jones FCC solids with the flows-for-solids model.

Run (small CPU variant):
  python -m experiments.train \
    --config=experiments/configs/lennard_jones.py:lj_32,cpu --workdir=runs/lj_32

Paper scale (accelerator):
  python -m experiments.train \
    --config=experiments/configs/lennard_jones.py:lj_256,paper --workdir=runs/lj_256

Scalable local flow from HMC samples and the energy (docs/scalable_flows.md):
  python -m experiments.train \
    --config=experiments/configs/lennard_jones.py:lj_256,local --workdir=runs/lj_256_local
  python -m scripts.free_energy --workdir=runs/lj_256_local --out=runs/lj_256_local/fe.json

Variants: `paper` (the published model and optimiser), `cpu` (small, for two CPU
cores), `flow_only` (below), `local` (the scalable flow: 6,000 steps of batch
32; on one of two CPU cores, 2026-12-07: 5 min of HMC samples, 38 min of
training, 7.5 min of free_energy; LBAR 3.10776 ± 0.00015, IS unreliable,
docs/standalone_flows.md),
`local_continued` (lj_256 only: the `local` run in runs/lj_256_local continued
for 10,000 steps from learning rate 5·10⁻⁴, 61 min on one core; it draws its
own HMC samples unless its workdir has them), which is the shipped model
experiments/pretrained/lj_256:

  python -m experiments.train \
    --config=experiments/configs/lennard_jones.py:lj_256,local_continued \
    --workdir=runs/lj_256_continued
  python -m scripts.free_energy --workdir=runs/lj_256_continued --num_flow_samples=131072 \
    --out=runs/lj_256_continued/fe.json

(11 min: LBAR 3.10798 ± 0.00008, IS 3.10785 ± 0.00095 but unreliable, 17
effective samples), and `local_from_256` (lj_500 only), which fine-tunes the lj_256 run
(`init_from` runs/lj_256_local, overridable with `--config.init_from=...`; the
`--init_from` flag wins) by 500 steps of reverse KL at learning rate 2·10⁻⁴:

  python -m experiments.train \
    --config=experiments/configs/lennard_jones.py:lj_500,local_from_256 --workdir=runs/lj_500
  python -m scripts.free_energy --workdir=runs/lj_500 --out=runs/lj_500/fe.json

took 24.2 min, then free_energy 49.3 min (2026-12-06, one of two cores), and
gave no usable estimate: βF/N 3.14538 ± 0.00153 (IS, ESS 3.9·10⁻⁵) and
3.12290 ± 0.00214 (LBAR, overlap 6.1·10⁻⁶), both marked unreliable
(docs/scalable_flows.md#results), from the first lj_256 model (1,500 steps of
batch 128). The shipped lj_256 model, unchanged, gives a reliable LBAR at
lj_500 (3.12283 ± 0.00018, 10.3 min; IS still unreliable):

  python -m scripts.free_energy --workdir=experiments/pretrained/lj_256 --system=lj_500 \
    --num_flow_samples=65536 --hmc_chains=32 --hmc_steps=1500 --out=runs/lj_500_fe.json

`flow_only` trains the local flow from the energy alone: reverse KL by its path
gradient, no HMC samples, 26,000 steps of batch 8 from learning rate 5·10⁻⁴ cut
by 0.3 at 13,000 and 19,500. At lj_256 it took 82 min on one core (2026-12-07) to
a reverse KL of 5.74 kT, where `local`, `local_continued` and 45 min of the path
gradient took 144 min to 5.35; its importance sampling passes the ESS rule but
lies 9σ from LBAR, so use LBAR (docs/standalone_flows.md, fifth round):

  python -m experiments.train \
    --config=experiments/configs/lennard_jones.py:lj_256,flow_only --workdir=runs/lj_256_flow_only
  python -m scripts.free_energy --workdir=runs/lj_256_flow_only --out=runs/lj_256_flow_only/fe.json

The best Lennard-Jones flow continues the shipped lj_256 model by the path
gradient alone, one variant per run (each starts from the run before; the step
counts are where wall-time limits stopped the runs that made the model):
`path_gradient` (5,523 steps of batch 32 from 2·10⁻⁴, 45 min on one core),
`path_gradient_batch8` (22,250 steps of batch 8, 70 min; reverse KL 4.40 kT)
and `path_gradient_batch8_continued` (19,060 steps of batch 8 from 10⁻⁴, 60 min;
4.13 kT), shipped as experiments/pretrained/lj_256_path_gradient_batch8_continued.
Its free_energy at 131,072 samples took 20 min on one core (2026-12-07): LBAR
3.10797 ± 0.00005, the tightest Lennard-Jones estimate here; IS 3.10864 ±
0.00025 passes the ESS rule (243 effective samples) but lies 2.6σ above LBAR,
and its Pareto k̂ of 0.97 says why (docs/standalone_flows.md, sixth round):

  for v in path_gradient path_gradient_batch8 path_gradient_batch8_continued; do
    python -m experiments.train \
      --config=experiments/configs/lennard_jones.py:lj_256,$v --workdir=runs/lj_256_$v
  done
  python -m scripts.free_energy --workdir=runs/lj_256_path_gradient_batch8_continued \
    --num_flow_samples=131072 --out=runs/lj_256_path_gradient_batch8_continued/fe.json

Any key can be overridden, e.g.
`--config.train.batch_size=64`; a model family's keys sit under
model.<conditioner>, e.g. `--config.model.transformer.compute_dtype=float32`.
"""

from experiments.configs import common

SYSTEMS = ('lj_32', 'lj_256', 'lj_500')

# Fourier frequencies of the conditioner embedding at paper scale, per N.
_PAPER_FREQUENCIES = {32: 8, 256: 16, 500: 32}
# Base noise in units of σ (published value).
_NOISE_SCALE = 0.01
# The `cpu` variant starts from the best isotropic width instead: the loss
# E_q[βU + ln q] of the lattice base alone (lj_32, 4096 samples) is 85.7 at
# σ = 0.02, 53.0 at 0.04 and 63.1 at 0.05, so a small flow need not spend its
# first layers on widening a 0.01 base. With 8 frequencies as well, the loss at
# step 550 is 50.2, against 53.5 for (0.01, 2 frequencies); the
# optimum −ln Z_fixed is ≈ 36.8 (docs/baselines/lj_32.json). After the 4000
# steps (11 min) the loss is 48.7 and ESS 0.02 %: flow importance sampling is
# 0.09 kT per particle off, but LBAR with HMC samples of the target recovers
# the Einstein-crystal βF/N within its error (docs/lj_32_report.md).
_CPU_NOISE_SCALE = 0.04


def _paper(system: str) -> dict:
  return dict(
    model=dict(
      transformer=dict(
        num_frequencies=_PAPER_FREQUENCIES[common.num_particles(system)],
        noise_scale=_NOISE_SCALE,
        compute_dtype=common.PAPER_COMPUTE_DTYPE,
      )
    ),
    train={},
    evaluation={},
  )


def _cpu(system: str) -> dict:
  del system
  return dict(
    model=dict(
      transformer=dict(
        num_layers=4, embedding_size=32, num_frequencies=8, noise_scale=_CPU_NOISE_SCALE
      )
    ),
    train=dict(
      num_steps=4000,
      learning_rate=1e-3,
      lr_decay_steps=(),
      ema_decay=0.99,
      checkpoint_every_seconds=60.0,
    ),
    evaluation=dict(every_steps=500, num_samples=8192, batch_size=2048),
  )


def _local(system: str, batch_size: int = 32, num_steps: int = 6000) -> dict:
  # Batch 32: at a fixed CPU time, four times the steps of a quarter of the shipped
  # run's batch 128 take the reverse KL at lj_256 from 22.9 to 15.7 kT
  # (docs/standalone_flows.md#ablation-at-a-fixed-cpu-time).
  del system
  return common.local_variant(
    num_neighbours=12,  # the first shell: every nearest neighbour is of another colour
    num_steps=num_steps,
    batch_size=batch_size,
    evaluation=dict(every_steps=1000, num_samples=8192, batch_size=1024),
    hmc=dict(num_chains=64, num_steps=3000, burn_in=200, thin=10, num_leapfrog=5, step_size=0.01),
    checkpoint_seconds=120.0,
  )


def _local_from_256(system: str) -> dict:
  if system != 'lj_500':
    raise ValueError(f'Variant local_from_256 is for lj_500, not {system!r}.')
  # The settings measured below (batch 128), as the run it starts from was trained.
  local = _local(system, batch_size=128, num_steps=1500)
  return common.fine_tune(local, 'runs/lj_256_local', 500, 250, 4096)


def _local_continued(system: str) -> dict:
  if system != 'lj_256':
    raise ValueError(f'Variant local_continued is for lj_256, not {system!r}.')
  # The `local` run's loss was still falling at its end: 10,000 more steps of the
  # same objective, from a lower learning rate (docs/standalone_flows.md).
  local = _local(system, num_steps=10_000)
  return dict(
    local,
    init_from='runs/lj_256_local',
    train=dict(local['train'], learning_rate=5e-4),
    evaluation=dict(local['evaluation'], every_steps=2500),
  )


def _flow_only(system: str) -> dict:
  # From the energy alone (common.flow_only: reverse KL by its path gradient, no HMC
  # samples) at batch 8 and learning rate 5·10⁻⁴: at lj_256 it reaches 7.97 kT in
  # 10,000 steps (34 min on one core), where `local` reaches 10.2 in 38 min
  # (docs/standalone_flows.md, fifth round).
  start = common.flow_only(_local(system), num_steps=26_000, every_steps=5000)
  return dict(start, train=dict(start['train'], batch_size=8, learning_rate=5e-4))


def _path_gradient_from(
  init_from: str,
  num_steps: int,
  batch_size: int,
  learning_rate: float,
  lr_decay_steps: tuple[int, ...],
  every_steps: int,
):
  """An lj_256 variant continuing the run in `init_from` (a workdir) by
  common.flow_only (reverse KL alone, by its path gradient): `num_steps` of
  `batch_size` from `learning_rate`, cut by 0.3 at `lr_decay_steps`
  (docs/standalone_flows.md, third to sixth rounds; the step counts are where
  those runs' wall-time limits stopped them)."""

  def variant(system: str) -> dict:
    if system != 'lj_256':
      raise ValueError(f'The path-gradient continuations are for lj_256, not {system!r}.')
    start = common.flow_only(_local(system), num_steps=num_steps, every_steps=every_steps)
    return dict(
      start,
      init_from=init_from,
      train=dict(
        start['train'],
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_decay_steps=lr_decay_steps,
      ),
    )

  return variant


VARIANTS = {
  'paper': _paper,
  'cpu': _cpu,
  'local': _local,
  'local_continued': _local_continued,
  'local_from_256': _local_from_256,
  'flow_only': _flow_only,
  # The chain from the shipped lj_256 model to the best Lennard-Jones flow.
  'path_gradient': _path_gradient_from(
    'experiments/pretrained/lj_256', 5523, 32, 2e-4, (4000, 6000), 1000
  ),
  'path_gradient_batch8': _path_gradient_from(
    'runs/lj_256_path_gradient', 22_250, 8, 2e-4, (13_000, 19_500), 5000
  ),
  'path_gradient_batch8_continued': _path_gradient_from(
    'runs/lj_256_path_gradient_batch8', 19_060, 8, 1e-4, (10_000, 15_000), 5000
  ),
}


def get_config(arg: str = 'lj_32,cpu'):
  """Returns the config for `<system>[,<variant>]` (variant defaults to paper)."""
  system, variant = common.parse_arg(arg, SYSTEMS, VARIANTS, 'paper')
  return common.make_config(system, variant, **VARIANTS[variant](system))
