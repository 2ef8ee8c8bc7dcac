"""Shared pieces of the solid-flow configs: argument parsing and the config skeleton.

A config argument has the form `<system>[,<variant>]`, e.g. `mw_cubic_8,cpu`.
The model section holds every registered solid family's keys under
`model.<family>` (flows.registry); `model.conditioner` picks the one read, so
`--config.model.conditioner=local` switches family, and a family's key is
overridden as e.g. `--config.model.transformer.compute_dtype=float32` or
`--config.model.local.num_neighbours=14`.
"""

from collections.abc import Callable, Mapping

import ml_collections

from experiments.configs import base
from flows import registry

# Paper-scale models multiply in bfloat16 (float32 accumulation, everything
# else float32), as float32 matmuls at default precision do on TPUs anyway:
# 1.9-2.4x faster paper-scale steps on a CPU with AMX (docs/performance.md), and
# GPUs' bfloat16 peak is far above their float32 one. The small variants keep
# float32.
PAPER_COMPUTE_DTYPE = 'bfloat16'


def parse_arg(
  arg: str,
  systems: tuple[str, ...],
  variants: Mapping[str, Callable[[str], dict]],
  default_variant: str,
) -> tuple[str, str]:
  """Splits `<system>[,<variant>]` and checks both names.

  Raises:
    ValueError: naming an unknown system or variant and listing the known ones.
  """
  parts = [p.strip() for p in (arg or '').split(',') if p.strip()]
  if not parts or len(parts) > 2:
    raise ValueError(
      f'Config argument {arg!r} must be "<system>[,<variant>]"; '
      f'systems: {", ".join(systems)}; variants: '
      f'{", ".join(variants)}.'
    )
  system = parts[0]
  variant = parts[1] if len(parts) == 2 else default_variant
  if system not in systems:
    raise ValueError(f'Unknown system {system!r} for this config; known: {", ".join(systems)}.')
  if variant not in variants:
    raise ValueError(f'Unknown variant {variant!r}; known: {", ".join(variants)}.')
  return system, variant


def num_particles(system: str) -> int:
  """N of a named system, from its name's suffix (`mw_cubic_64` -> 64)."""
  return int(system.rsplit('_', 1)[1])


def local_variant(
  num_neighbours: int,
  num_steps: int,
  evaluation: dict,
  hmc: dict,
  checkpoint_seconds: float,
  batch_size: int = 128,
) -> dict:
  """The `local` variant's sections: the scalable flow trained on the mixed objective.

  Four local coupling layers on the harmonic base (flows/local/spec.py defaults,
  docs/scalable_flows.md), half reverse KL and half forward KL on HMC
  samples, `num_steps` of `batch_size`, the learning rate cut by 0.3 at half
  and at three quarters of `num_steps`.
  """
  return dict(
    model=dict(conditioner='local', local=dict(num_neighbours=num_neighbours)),
    train=dict(
      batch_size=batch_size,
      num_steps=num_steps,
      learning_rate=1e-3,
      lr_decay_steps=(num_steps // 2, 3 * num_steps // 4),
      lr_decay_factor=0.3,
      ema_decay=0.99,
      forward_kl_weight=0.5,
      checkpoint_every_seconds=checkpoint_seconds,
    ),
    evaluation=evaluation,
    hmc=hmc,
  )


def flow_only(variant: dict, num_steps: int = 16_000, every_steps: int = 4000) -> dict:
  """`variant` trained from the energy alone (docs/standalone_flows.md, third round):
  reverse KL with its path gradient, no HMC samples, `num_steps` of batch 32, the
  learning rate cut at half and three quarters, evaluations every `every_steps`."""
  return dict(
    variant,
    train=dict(
      variant['train'],
      batch_size=32,
      num_steps=num_steps,
      lr_decay_steps=(num_steps // 2, 3 * num_steps // 4),
      forward_kl_weight=0.0,
      path_gradient=True,
    ),
    evaluation=dict(variant['evaluation'], every_steps=every_steps),
  )


def fine_tune(
  variant: dict,
  init_from: str,
  num_steps: int,
  every_steps: int,
  num_samples: int,
  learning_rate: float = 2e-4,
) -> dict:
  """`variant` fine-tuning another run of the family (`init_from`, a workdir) by
  reverse KL alone: `learning_rate` cut by the variant's factor at half and three
  quarters of `num_steps`, evaluations of `num_samples` every `every_steps` (and at
  the end)."""
  return dict(
    variant,
    init_from=init_from,
    train=dict(
      variant['train'],
      forward_kl_weight=0.0,
      num_steps=num_steps,
      learning_rate=learning_rate,
      lr_decay_steps=(num_steps // 2, 3 * num_steps // 4),
    ),
    evaluation=dict(variant['evaluation'], every_steps=every_steps, num_samples=num_samples),
  )


def make_config(
  system: str,
  variant: str,
  *,
  model: dict,
  train: dict,
  evaluation: dict,
  hmc: dict | None = None,
  init_from: str = '',
) -> ml_collections.ConfigDict:
  """Builds the full config; every key is documented here once (the train section in
  experiments/configs/base.py, each model family's keys in flows/<family>/spec.py).

  Args:
    system: a name known to `systems.get_system`.
    variant: the variant name, stored for the record.
    model: overrides of the model section below (nested: model.<family>.<key>).
    train: overrides of the train section (base.train_section).
    evaluation: overrides of the eval section below.
    hmc: overrides of the hmc section below.
    init_from: a run directory to start a fresh run from (experiments.train).
  """
  config = ml_collections.ConfigDict()
  config.system = system  # named system (systems.get_system)
  config.variant = variant  # which variant of this config file
  config.seed = 42  # seeds parameters, sampling and evaluation
  config.init_from = init_from  # fresh runs start from this run's parameters ('': none)

  config.model = ml_collections.ConfigDict(
    base.merged(
      dict(
        conditioner='transformer',  # the flow family (flows.registry): 'transformer'
        # (flows.SolidFlow) or 'local' (flows.LocalSolidFlow); only model.<conditioner> is read
        remat=True,  # rematerialise each layer (less memory; faster on CPU)
        **registry.default_sections('solid'),  # model.<family>.*: flows/<family>/spec.py
      ),
      model,
    )
  )
  config.train = base.train_section('solid', train)

  config.hmc = ml_collections.ConfigDict(
    dict(  # HMC samples of the target, drawn once into the workdir (forward KL)
      num_chains=64,  # independent chains, started on the lattice
      num_steps=2000,  # production steps per chain (a multiple of 10·thin, >= 20·thin)
      burn_in=200,  # steps of equilibration and step-size adaptation
      thin=10,  # store every thin-th step
      num_leapfrog=5,  # leapfrog steps per proposal
      step_size=0.05,  # initial leapfrog step (length unit), adapted during burn-in
    )
  )
  config.hmc.update(hmc or {})

  config.eval = ml_collections.ConfigDict(
    dict(
      every_steps=5000,  # evaluate every this many steps (and at end)
      num_samples=16384,  # fresh flow samples per evaluation
      batch_size=4096,  # samples per compiled evaluation call
      stop_at_stderr=0.0,  # stop once βF/N stderr <= this (0: never)
    )
  )
  config.eval.update(evaluation)
  return config
