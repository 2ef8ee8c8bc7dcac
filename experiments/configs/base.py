"""What every experiment config (solid flows and TFEP maps) shares, written once:
the train section, and the nested update of a section by a variant's overrides."""

from collections.abc import Mapping

import ml_collections

# Keys of the train section that one kind of config only reads.
SOLID_ONLY_TRAIN_KEYS = ('forward_kl_weight', 'path_gradient', 'renyi2_weight')
TFEP_ONLY_TRAIN_KEYS = ('loss',)


def merged(defaults: Mapping, overrides: Mapping) -> dict:
  """`defaults` updated by `overrides`, nested sections merged key by key.

  Raises:
    ValueError: naming an override key that `defaults` lacks.
  """
  out = dict(defaults)
  for key, value in overrides.items():
    if key not in out:
      raise ValueError(f'Unknown config key {key!r}; known: {", ".join(out)}.')
    if isinstance(out[key], Mapping) and isinstance(value, Mapping):
      value = merged(out[key], value)
    out[key] = value
  return out


def train_section(kind: str, overrides: Mapping) -> ml_collections.ConfigDict:
  """The train section of a 'solid' or 'tfep' config, with `overrides` (the config
  file's defaults, then its variant's) applied."""
  if kind not in ('solid', 'tfep'):
    raise ValueError(f"kind={kind!r}; expected 'solid' or 'tfep'.")
  train = dict(
    loss='lbar',  # TFEP: 'lbar' (two-sided) or 'lfep' (one-sided)
    batch_size=128,  # samples per step, sharded over devices (TFEP: of A and of B each)
    num_steps=1_000_000,  # total optimiser steps
    learning_rate=7e-5,  # Adam learning rate
    lr_decay_steps=(250_000, 500_000),  # steps at which lr is multiplied ...
    lr_decay_factor=0.1,  # ... by this factor
    lr_warmup_steps=0,  # linear warm-up from 0 (0: none)
    adam_b2=0.999,  # Adam second-moment decay
    max_gradient_norm=1e4,  # global-norm gradient clipping
    ema_decay=0.0,  # evaluations (TFEP: the works) use an EMA of the parameters (0: none)
    max_consecutive_nonfinite=20,  # stop after this many skipped steps in a row
    log_every_steps=50,  # training metrics row every this many steps
    checkpoint_every_seconds=300.0,  # checkpoint period (and at the end)
    checkpoint_every_steps=0,  # also every this many steps (0: off)
    max_checkpoints_to_keep=3,  # older checkpoints are deleted
    max_wall_seconds=0.0,  # stop (evaluated, saved) after this wall time across resumes (0: off)
    forward_kl_weight=0.0,  # solid: w, (1-w)·reverse KL + w·forward KL on HMC samples
    path_gradient=False,  # solid: path gradient of the reverse KL (experiments.training)
    renyi2_weight=0.0,  # solid: λ, + λ·Rényi-2 divergence on the flow batch (experiments.training)
  )
  drop = TFEP_ONLY_TRAIN_KEYS if kind == 'solid' else SOLID_ONLY_TRAIN_KEYS
  kept = {k: v for k, v in train.items() if k not in drop}
  return ml_collections.ConfigDict(merged(kept, overrides))
