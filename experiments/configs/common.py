"""Shared pieces of the experiment configs: argument parsing and the config skeleton.

A config argument has the form `<system>[,<variant>]`, e.g. `mw_cubic_8,cpu`.
"""

from collections.abc import Callable, Mapping

import ml_collections

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
  num_neighbours: int, num_steps: int, evaluation: dict, hmc: dict, checkpoint_seconds: float
) -> dict:
  """The `local` variant's sections: the scalable flow trained on the mixed objective.

  Four local coupling layers on the harmonic base (docs/scalable_flows.md),
  half reverse KL and half forward KL on HMC samples, the learning rate cut
  by 0.3 at half and at three quarters of `num_steps`.
  """
  return dict(
    model=dict(
      conditioner='local',
      base='harmonic',
      num_layers=4,
      num_bins=8,
      embedding_size=32,
      num_neighbours=num_neighbours,
      filter_width=16,
      spline_range=5.0,
    ),
    train=dict(
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


def make_config(
  system: str, variant: str, *, model: dict, train: dict, evaluation: dict, hmc: dict | None = None
) -> ml_collections.ConfigDict:
  """Builds the full config; every key is documented here once.

  Args:
    system: a name known to `systems.get_system`.
    variant: the variant name, stored for the record.
    model: overrides of the model section below.
    train: overrides of the train section below.
    evaluation: overrides of the eval section below.
    hmc: overrides of the hmc section below.
  """
  config = ml_collections.ConfigDict()
  config.system = system  # named system (systems.get_system)
  config.variant = variant  # which variant of this config file
  config.seed = 42  # seeds parameters, sampling and evaluation

  config.model = ml_collections.ConfigDict(
    dict(
      conditioner='transformer',  # 'transformer' (flows.SolidFlow) or 'local' (LocalSolidFlow)
      base='lattice',  # transformer: 'lattice'; local: 'harmonic' or 'isotropic' Gaussian
      num_layers=24,  # flow layers; each = shift + 2 spline couplings (local: 1 per colour)
      num_bins=16,  # bins of each rational-quadratic spline
      embedding_size=256,  # conditioner width (transformer, or local context and MLPs)
      num_heads=2,  # attention heads
      num_blocks=2,  # transformer blocks per conditioner
      num_frequencies=8,  # circular Fourier frequencies of the embedding
      noise_scale=0.2,  # std of the base noise about sites (lattice, isotropic bases; length)
      num_neighbours=16,  # local: conditioning neighbours of other colours (closes a shell)
      filter_width=16,  # local: hidden width of the filter MLP of lattice offsets
      spline_range=5.0,  # local: splines act on [-B, B] base standard deviations
      use_layernorm=False,  # layer norm in the transformer (published: off)
      remat=True,  # rematerialise each layer (less memory; faster on CPU)
      compute_dtype='float32',  # transformer matmuls: 'float32' or 'bfloat16' (mixed precision)
    )
  )
  config.model.update(model)

  config.train = ml_collections.ConfigDict(
    dict(
      batch_size=128,  # samples per step (sharded over devices)
      num_steps=1_000_000,  # total optimiser steps
      learning_rate=7e-5,  # Adam learning rate
      lr_decay_steps=(250_000, 500_000),  # steps at which lr is multiplied ...
      lr_decay_factor=0.1,  # ... by this factor
      lr_warmup_steps=0,  # linear warm-up from 0 (0: none)
      adam_b2=0.999,  # Adam second-moment decay
      max_gradient_norm=1e4,  # global-norm gradient clipping
      ema_decay=0.0,  # evaluations use an EMA of the parameters (0: none)
      max_consecutive_nonfinite=20,  # stop after this many skipped steps in a row
      log_every_steps=50,  # training metrics row every this many steps
      checkpoint_every_seconds=300.0,  # checkpoint period (and at the end)
      checkpoint_every_steps=0,  # also every this many steps (0: off)
      max_checkpoints_to_keep=3,  # older checkpoints are deleted
      max_wall_seconds=0.0,  # stop (evaluated, saved) after this wall time across resumes (0: off)
      forward_kl_weight=0.0,  # w: (1-w)·reverse KL + w·forward KL on HMC samples (0: energy only)
    )
  )
  config.train.update(train)

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
