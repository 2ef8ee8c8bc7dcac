"""Monatomic-water (mW) ice, cubic and hexagonal, with the flows-for-solids model.

Run (small CPU variant, minutes on a laptop):
  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_8,cpu --workdir=runs/mw_cubic_8

Paper scale (accelerator):
  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_64,paper --workdir=runs/mw_cubic_64

Scalable local flow from HMC samples and the energy (docs/scalable_flows.md),
then both free-energy estimates:
  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_64,local --workdir=runs/mw_cubic_64
  python -m scripts.free_energy --workdir=runs/mw_cubic_64 --out=runs/mw_cubic_64/fe.json

Variants: `paper` (the published model and optimiser), `cpu` (small, tuned to
finish on two CPU cores), `tutorial` (the public tutorial's model and optimiser,
for like-for-like speed comparisons), `tiny` (seconds; for tests and smoke
runs), `local` (the scalable flow, mixed objective; the same weights run at
every size of a family), `local_tiny` (seconds), and `flow_only` with its
fine-tunes (below).
Times of `local` measured here on one of two CPU cores (2026-12-05, the
other core busy), training + free_energy: mw_cubic_64 16.8 + 5.6 min,
mw_hex_64 22.0 + 8.9 min.

The larger sizes fine-tune those runs (docs/scalable_flows.md#results): the
variants `local_from_64` (mw_cubic_216, mw_hex_216) and `local_from_216`
(mw_cubic_512) carry their `init_from` (a workdir, overridable with
`--config.init_from=...`; the `--init_from` flag wins) and the flags of the
measured runs (reverse KL only, learning rate 2·10⁻⁴ cut at half and three
quarters of the steps):

  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_216,local_from_64 \
    --workdir=runs/mw_cubic_216  # from runs/mw_cubic_64: 600 steps
  python -m scripts.free_energy --workdir=runs/mw_cubic_216 --out=runs/mw_cubic_216/fe.json

took 11.0 min, then free_energy 32.6 min, for βF/N −25.08256 ± 0.00031
(importance sampling, ESS 0.0036) and −25.08251 ± 0.00007 (LBAR, overlap
0.054). `mw_hex_216,local_from_64` (from runs/mw_hex_64; k 12 -> 14) took 11.0
+ 35.6 min: −25.08981 ± 0.00063 (IS, UNRELIABLE: 54 effective samples) and
−25.09002 ± 0.00008 (LBAR, overlap 0.043).
`mw_cubic_512,local_from_216` (from runs/mw_cubic_216: 240 steps, 2048
evaluation samples) took 17.6 min (2026-12-06, both cores busy), then
`scripts.free_energy --num_flow_samples=4096 --hmc_chains=16 --hmc_steps=600`
14.1 min: −25.05939 ± 0.00058 (IS, UNRELIABLE: 11 effective samples) and
−25.06166 ± 0.00025 (LBAR, overlap 0.015, 960 HMC samples). The 64 (cubic)
and 216 (hexagonal) models also evaluate at 512 unchanged with `--system` (the
same free_energy flags: 22.2 min for mw_cubic_512, 13.0 min for mw_hex_512).
No ice flow gives a reliable importance-sampling estimate at 512 yet
(docs/scalable_flows.md#results).

The shipped hexagonal models (experiments/pretrained/mw_hex_64 and mw_hex_216)
were trained at batch 32, with `--config.train.batch_size=32
--config.train.num_steps=8000 '--config.train.lr_decay_steps=(4000,6000)'` at 64
and `--config.train.batch_size=32 --config.train.num_steps=2400` at 216 (30 min
in all on one core, with importance sampling from 131,072 flow samples, which
is reliable at 216: docs/standalone_flows.md). The variants keep batch 128,
with which the cubic records above were measured.

`flow_only` (mw_cubic_64, mw_hex_64) trains the same flow from the energy alone:
reverse KL with its path gradient (`train.path_gradient`, experiments/training.py),
16,000 steps of batch 32, learning rate 10⁻³ cut by 0.3 at 8,000 and 12,000, no
HMC samples. At mw_cubic_64 it reaches a reverse KL of 0.30 kT (ESS 0.46) in
34 min on one core, where `local` at batch 32 reached 0.88 after 8,000 steps
(docs/standalone_flows.md, third round). Its weights run unchanged at the
larger cubic sizes (`--system`); `flow_only_from_64` (216) fine-tunes such a run
(runs/<family>_64_flow_only) with the same objective, which hexagonal ice
needs for its 14 neighbours above N = 64:

  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_64,flow_only \
    --workdir=runs/mw_cubic_64_flow_only
  python -m scripts.free_energy --workdir=runs/mw_cubic_64_flow_only --system=mw_cubic_512 \
    --flow_only --num_flow_samples=131072 --out=runs/mw_cubic_512_flow_only.json

At 512 a transferred model's importance sampling is refused (a heavy tail of
the weights), and `flow_only_at_512` (mw_cubic_512, mw_hex_512) fine-tunes the
64 run there: 3,000 path-gradient steps of batch 4 at learning rate 2·10⁻⁴.
Hexagonal ice needs more (its 64 model has 12 neighbours, 14 at 512):
`flow_only_at_512_continued` (mw_hex_512) runs 6,000 more from 5·10⁻⁴
(docs/standalone_flows.md, fourth round; one core, 2026-12-07):

  python -m experiments.train \
    --config=experiments/configs/monatomic_water.py:mw_cubic_512,flow_only_at_512 \
    --workdir=runs/mw_cubic_512_flow_only_at_512  # from runs/mw_cubic_64_flow_only
  python -m scripts.free_energy --workdir=runs/mw_cubic_512_flow_only_at_512 --flow_only \
    --target_stderr=5e-4 --num_flow_samples=32768 --max_flow_samples=131072 --out=F.json

took 23 min of training, then 9.0 min for −25.06155 ± 0.00014 (reliable, 210
effective samples; shipped as experiments/pretrained/mw_cubic_512_flow_only_at_512).
mw_hex_512 (from runs/mw_hex_64_flow_only, then from its own `flow_only_at_512`
run) took 18 + 34 min of training and gives −25.06448 ± 0.00014 from 65,536
samples (183 effective samples, but 39 by the spread of the log-weights:
refused by the judgement of 2026-12-08; shipped as
experiments/pretrained/mw_hex_512_flow_only_at_512_continued).
`flow_only_at_512_more` (mw_hex_512) continues it at 2·10⁻⁴: 9,000 steps were
planned with cuts at 4,500 and 6,750, and a 45-min wall limit stopped the run at
4,114, before the first cut; the variant names those steps. Its importance
sampling at 131,072 samples, −25.06477 ± 0.00014, is judged reliable (232
effective samples, 201 by the spread; 36 min on one core; shipped as
experiments/pretrained/mw_hex_512_flow_only_at_512_more; docs/standalone_flows.md,
eighth round).

Any key can be overridden, e.g. `--config.train.batch_size=64`; a model
family's keys sit under model.<conditioner>, e.g.
`--config.model.transformer.compute_dtype=float32` (the `paper` variant in
float32) or `--config.model.local.num_neighbours=14`.
"""

from experiments.configs import common

SYSTEMS = (
  'mw_cubic_8',
  'mw_cubic_64',
  'mw_cubic_216',
  'mw_cubic_512',
  'mw_hex_64',
  'mw_hex_216',
  'mw_hex_512',
)

# Fourier frequencies of the conditioner embedding at paper scale, per N.
_PAPER_FREQUENCIES = {8: 8, 64: 8, 216: 16, 512: 24}


def _paper(system: str) -> dict:
  return dict(
    model=dict(
      transformer=dict(
        num_frequencies=_PAPER_FREQUENCIES[common.num_particles(system)],
        compute_dtype=common.PAPER_COMPUTE_DTYPE,
      )
    ),
    train={},
    evaluation={},
  )


def _cpu(system: str) -> dict:
  del system
  return dict(
    model=dict(transformer=dict(num_layers=4, embedding_size=32, num_frequencies=2)),
    train=dict(
      num_steps=2000,
      learning_rate=1e-3,
      lr_decay_steps=(1000, 1500),
      lr_decay_factor=0.3,
      ema_decay=0.99,
      log_every_steps=50,
      checkpoint_every_seconds=60.0,
    ),
    evaluation=dict(every_steps=250, num_samples=16384, batch_size=8192),
  )


def _tutorial(system: str) -> dict:
  del system
  return dict(
    model=dict(transformer=dict(num_layers=4, embedding_size=32, num_frequencies=2, num_bins=16)),
    train=dict(num_steps=2000, learning_rate=1e-3, lr_decay_steps=()),
    evaluation=dict(every_steps=500),
  )


def _tiny(system: str) -> dict:
  del system
  return dict(
    model=dict(
      transformer=dict(num_layers=1, embedding_size=8, num_frequencies=1, num_bins=4, num_blocks=1)
    ),
    train=dict(
      batch_size=16,
      num_steps=20,
      learning_rate=1e-3,
      lr_decay_steps=(),
      log_every_steps=5,
      checkpoint_every_seconds=1e9,
    ),
    evaluation=dict(every_steps=10_000, num_samples=64, batch_size=64),
  )


def _local_neighbours(system: str) -> int:
  """Conditioning neighbours of the local flow: the other colour's sites up to
  1.915 d_nn (5.14 Å). Cubic ice: 4 + 12 at every N. Hexagonal ice: 4 + 1 + 9,
  but the N = 64 box is two cells (8.8 Å) wide in x, so two pairs of that
  shell are one site under the minimum image there: 12 at N = 64, 14 above."""
  if system.startswith('mw_cubic'):
    return 16
  return 12 if common.num_particles(system) == 64 else 14


def _local(system: str) -> dict:
  return common.local_variant(
    num_neighbours=_local_neighbours(system),
    num_steps=2000,
    evaluation=dict(every_steps=250, num_samples=16384, batch_size=2048),
    hmc=dict(num_chains=64, num_steps=2000, burn_in=200, thin=10, num_leapfrog=5),
    checkpoint_seconds=60.0,
  )


def _local_tiny(system: str) -> dict:
  tiny, local = _tiny(system), _local(system)['model']
  return dict(
    model=dict(
      local,
      local=dict(local['local'], num_layers=1, num_bins=4, embedding_size=8, filter_width=4),
    ),
    train=dict(tiny['train'], forward_kl_weight=0.5),
    evaluation=tiny['evaluation'],
    hmc=dict(num_chains=4, num_steps=40, burn_in=10, thin=2, num_leapfrog=2),
  )


def _flow_only_start(system: str) -> dict:
  """`local` trained from the energy alone (common.flow_only), at any size."""
  return common.flow_only(_local(system))


def _flow_only(system: str) -> dict:
  if common.num_particles(system) != 64:
    raise ValueError(
      f'Variant flow_only trains at N = 64, not {system!r}; larger sizes fine-tune it.'
    )
  return _flow_only_start(system)


def _flow_only_batch4(system: str) -> dict:
  """`flow_only` at batch 4: a step at N = 512 costs about what one of batch 32 does
  at 64, and the path gradient's low variance makes small batches pay there.
  Evaluations in batches of 1,024 samples, to bound memory at that size."""
  start = _flow_only_start(system)
  return dict(
    start,
    train=dict(start['train'], batch_size=4),
    evaluation=dict(start['evaluation'], batch_size=1024),
  )


def _local_from(
  smaller: int,
  systems: tuple[str, ...],
  num_steps: int,
  every: int,
  samples: int,
  start=_local,
  name: str = '',
  run_suffix: str = '',
  learning_rate: float = 2e-4,
):
  """The variant `name` (default `local_from_<smaller>`) for `systems`: `start` (a
  variant function) fine-tuning runs/<family>_<smaller><run_suffix> by common.fine_tune
  (module docstring)."""
  name = name or f'local_from_{smaller}'

  def variant(system: str) -> dict:
    if system not in systems:
      raise ValueError(f'Variant {name} is for {", ".join(systems)}, not {system!r}.')
    family = system.rsplit('_', 1)[0]
    init_from = f'runs/{family}_{smaller}{run_suffix}'
    return common.fine_tune(start(system), init_from, num_steps, every, samples, learning_rate)

  return variant


def _flow_only_at_512_more(system: str) -> dict:
  start = _local_from(
    512,
    ('mw_hex_512',),
    4114,  # where the run's wall limit stopped it (module docstring)
    3000,
    8192,
    start=_flow_only_batch4,
    name='flow_only_at_512_more',
    run_suffix='_flow_only_at_512_continued',
  )(system)
  return dict(start, train=dict(start['train'], lr_decay_steps=(4500, 6750)))


VARIANTS = {
  'paper': _paper,
  'cpu': _cpu,
  'tutorial': _tutorial,
  'tiny': _tiny,
  'local': _local,
  'local_tiny': _local_tiny,
  'local_from_64': _local_from(64, ('mw_cubic_216', 'mw_hex_216'), 600, 300, 4096),
  'local_from_216': _local_from(216, ('mw_cubic_512',), 240, 240, 2048),
  'flow_only': _flow_only,
  'flow_only_from_64': _local_from(
    64,
    ('mw_cubic_216', 'mw_hex_216'),
    2400,
    1200,
    4096,
    start=_flow_only_start,
    name='flow_only_from_64',
    run_suffix='_flow_only',
  ),
  'flow_only_at_512': _local_from(
    64,
    ('mw_cubic_512', 'mw_hex_512'),
    3000,
    1000,
    8192,
    start=_flow_only_batch4,
    name='flow_only_at_512',
    run_suffix='_flow_only',
  ),
  'flow_only_at_512_continued': _local_from(
    512,
    ('mw_hex_512',),
    6000,
    3000,
    8192,
    start=_flow_only_batch4,
    name='flow_only_at_512_continued',
    run_suffix='_flow_only_at_512',
    learning_rate=5e-4,
  ),
  'flow_only_at_512_more': _flow_only_at_512_more,
}


def get_config(arg: str = 'mw_cubic_8,cpu'):
  """Returns the config for `<system>[,<variant>]` (variant defaults to paper)."""
  system, variant = common.parse_arg(arg, SYSTEMS, VARIANTS, 'paper')
  return common.make_config(system, variant, **VARIANTS[variant](system))
