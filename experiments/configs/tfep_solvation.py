"""Learned targeted FEP: growing a repulsive solute in a Lennard-Jones solvent.

Train the map (samples all states first; rerun to resume):
  python -m experiments.tfep \
    --config=experiments/configs/tfep_solvation.py:cpu --workdir=runs/tfep_solvation_cpu
Table and plot:
  python -m scripts.tfep_report --workdir=runs/tfep_solvation_cpu

Variants: `cpu` (table at 10³ samples per state, 25 held-out subsets, in
about 11 min on two CPU cores: 8 min of sampling, 2.4 min of training,
then 14 s of report, on an AMD EPYC; 25 subsets rather than 10 mean 45,000
samples per state, for a reference error 5.8× below the smallest spread
(4.7–6.7× with 30,000) and a narrower interval for the variance ratio) and
`cpu_1e4` (the `cpu` map and training, with the table at 10³ and 10⁴ samples
per state: 40 held-out subsets of 10⁴ and all 400 disjoint ones of 10³, so
420,000 samples per state for a reference 6× below the smallest spread; about
56 min of run and 2.7 min of report on two CPU cores, 46 min of it sampling,
5.6 GiB peak RSS, a 3.8 GB samples.npz) and `paper` (10³, 10⁴, 10⁵ samples
per state and a paper-sized model; for an accelerator), and `cpu_local` (the
`cpu` run with the column conditioner (model.conditioner='column', called
'local' before), flows.targeted.column_coupling, in place of the transformer:
one ColumnCoupling layer of width 32 with cylinders of radius 2.5 σ, whose
training step takes about as long as `cpu`'s; same sampler, so the
samples.npz of a `cpu` workdir may be copied into its workdir to skip
sampling).

State A is R_A = 2.597 σ; state B is R_B = 2.75 σ, where plain FEP from A fails
(Kish ESS of the A→B weights 0.19 % over 10⁴ held-out A samples, 1.0 % on
average over blocks of 10³; R_B = 2.7 σ gave 0.9 % at 10³, too close to the 1 %
line). The map starts with a RadialSpline about the solute
(`model.radial_bins`): growing the solute shrinks the solvent's free volume by
about 13 %, and a per-particle move along the rays from the solute takes up
most of that (held-out mean work 3.1 kT against 4.1 kT with one coupling layer
alone and 6.8 kT unmapped). Sampling uses long HMC trajectories (20 leapfrog
steps per stored sample): with 3 steps and thin 4 the chains decorrelated so
slowly that the reference ΔF drifted by 0.15 kT along the run.
`make_config` is the skeleton shared with tfep_solid.py; its train section is
experiments/configs/base.py's, and a coupling family's keys sit under
model.<conditioner>, e.g. `--config.model.transformer.embedding_size=64` or
`--config.model.column.cutoff=2.0`.
"""

import ml_collections

from experiments.configs import base
from flows import registry

R_A = 2.597
R_B = 2.75


# The TFEP configs' train defaults (the keys are documented in experiments/configs/base.py).
TRAIN = dict(
  batch_size=16,
  num_steps=1000,
  learning_rate=5e-4,
  lr_decay_steps=(),
  max_gradient_norm=100.0,
  checkpoint_every_seconds=120.0,
  max_checkpoints_to_keep=2,
)


def make_config(
  benchmark: str,
  variant: str,
  *,
  states: dict,
  sampling: dict,
  model: dict,
  train: dict,
  evaluation: dict,
) -> ml_collections.ConfigDict:
  """The full TFEP config; each section's defaults are overridden by its dict."""
  config = ml_collections.ConfigDict()
  config.benchmark = benchmark  # 'solvation' or 'lj_32' (systems.ladders.LADDERS)
  config.variant = variant  # variant name, for the record
  config.seed = 0  # seeds sampling, parameters and minibatches

  config.states = ml_collections.ConfigDict(
    dict(
      lambda_a=R_A,  # λ of state A (solute radius in σ, or β in 1/ε)
      lambda_b=R_B,  # λ of state B
      num_states=6,  # states on the linear λ ladder A..B, ends included (MBAR)
    )
  )
  config.states.update(states)

  config.sampling = ml_collections.ConfigDict(
    dict(
      num_chains=50,  # HMC chains per state
      num_train=2000,  # samples of A and of B for training (rest held out)
      burn_in=300,  # HMC steps of equilibration with step-size adaptation
      thin=4,  # HMC steps between stored samples
      num_leapfrog=3,  # leapfrog steps per HMC proposal
      step_size=0.01,  # initial leapfrog step (σ), adapted during burn-in
    )
  )
  config.sampling.update(sampling)

  config.model = ml_collections.ConfigDict(
    base.merged(
      dict(
        conditioner='transformer',  # the coupling layers (flows.registry map families):
        # 'transformer' (flows.CouplingLayer) or 'column' (flows.targeted.column_coupling,
        # cylinders of neighbours; no centre_on_sites); only model.<conditioner> is read
        num_layers=1,  # coupling layers (each after a RadialSpline if any); 0: radial only
        radial_bins=0,  # bins of a RadialSpline before each layer (0: none)
        centre_on_sites=False,  # act on displacements from lattice sites (solids only)
        **registry.default_sections('map'),  # model.<family>.*: flows/targeted/spec.py
      ),
      model,
    )
  )
  config.train = base.train_section('tfep', dict(TRAIN, **train))

  config.eval = ml_collections.ConfigDict(
    dict(
      sample_sizes=(1000,),  # samples per state of each estimate
      num_subsets=5,  # disjoint held-out subsets of the largest size (smaller
      # sizes use every disjoint block the held-out samples hold)
      batch_size=500,  # configurations per compiled energy/map call
    )
  )
  config.eval.update(evaluation)
  return config


def _cpu() -> dict:
  return dict(
    states={},
    sampling=dict(num_train=20_000, num_leapfrog=20, thin=1, burn_in=500),
    model=dict(radial_bins=8),
    train=dict(batch_size=32, num_steps=2000, learning_rate=1e-3),
    evaluation=dict(num_subsets=25),
  )


def _cpu_1e4() -> dict:
  cpu = _cpu()  # same sampler, map and training
  return dict(cpu, evaluation=dict(sample_sizes=(1000, 10_000), num_subsets=40))


def _paper() -> dict:
  return dict(
    states=dict(num_states=8),
    sampling=dict(num_chains=500, num_train=100_000, burn_in=1000, thin=10, num_leapfrog=5),
    model=dict(
      num_layers=8,
      radial_bins=16,
      transformer=dict(num_bins=16, embedding_size=128, num_frequencies=8, num_blocks=2),
    ),
    train=dict(
      batch_size=256,
      num_steps=50_000,
      learning_rate=1e-4,
      lr_decay_steps=(25_000, 40_000),
      lr_warmup_steps=1000,
      checkpoint_every_seconds=600.0,
    ),
    evaluation=dict(sample_sizes=(1000, 10_000, 100_000), batch_size=2000),
  )


# The `cpu` map with column couplings (flows.targeted.column_coupling) in place of the
# transformer's, sized to train in about the time of `cpu`.
CPU_COLUMN_MODEL = dict(conditioner='column', num_layers=1, column=dict(width=32, cutoff=2.5))


def _cpu_local() -> dict:
  cpu = _cpu()  # same sampler (and samples), training and table; column couplings
  return dict(cpu, model=dict(cpu['model'], **CPU_COLUMN_MODEL))


VARIANTS = {'cpu': _cpu, 'cpu_1e4': _cpu_1e4, 'cpu_local': _cpu_local, 'paper': _paper}


def get_config(arg: str = 'cpu') -> ml_collections.ConfigDict:
  """The solvation config of variant `arg` (see VARIANTS)."""
  if arg not in VARIANTS:
    raise ValueError(f'variant={arg!r}; expected one of {", ".join(VARIANTS)}.')
  return make_config('solvation', arg, **VARIANTS[arg]())
