"""Learned targeted free-energy perturbation: the map between two states and its works."""

from flows.targeted.map import (
  TargetedMap,
  estimate,
  forward_work,
  lbar_loss,
  lfep_loss,
  reverse_work,
)

__all__ = ['TargetedMap', 'estimate', 'forward_work', 'lbar_loss', 'lfep_loss', 'reverse_work']
