"""Inputs of `scripts.tfep_report`: config, samples, held-out works and trained map of a run.

Reading never samples: a missing samples.npz is an error naming the
experiments.tfep command that draws it. Works (kT) come from works.npz, computed
from the latest checkpoint if missing or stale.
"""

import dataclasses
import json
import os

import ml_collections

from experiments import tfep_stages
from systems import ladders


@dataclasses.dataclass(frozen=True)
class TfepRun:
  """config: the run's ConfigDict. ladder: its λ states. data: samples.npz
  (tfep_stages.load_samples: `samples` (K, n, N, 3), `reduced` (K, K, n) and the
  sampler's diagnostics). works: tfep_stages.compute_works (kT, and the map's
  `step`). bijector: the trained map (moving average of its parameters)."""

  config: ml_collections.ConfigDict
  ladder: ladders.Ladder
  data: dict
  works: dict
  bijector: object


def read_run(workdir: str) -> TfepRun:
  """Reads the run directory `workdir` of experiments.tfep (works.npz may be written)."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise FileNotFoundError(
      f'--workdir={workdir} has no config.json; run python -m experiments.tfep first.'
    )
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  ladder = tfep_stages.make_ladder(config)
  data = tfep_stages.load_samples(config, ladder, workdir)  # never samples by itself
  works = tfep_stages.compute_works(config, ladder, data, workdir)
  bijector, _ = tfep_stages.restore_map(config, ladder, workdir)
  return TfepRun(config, ladder, data, works, bijector)
