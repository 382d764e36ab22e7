"""The module-scoped fixtures of the HF parity tests (tests/test_hf.py, test_albert.py, test_vit.py): each case is
built (an HF model of a random small config, saved, imported) once per module, by whichever test asks first.

  get_case, case = hf_cases.fixtures(load_case, CASES)   # at module level: pytest finds them by name
  m, hf_dir = hf_cases.saved_model('albert_mlm', 'AlbertForMaskedLM', kwargs, seed, tmp_path_factory)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

import model


@dataclasses.dataclass
class Case:
  """An HF model of a small config, its save_pretrained folder, inputs, HF's outputs under our names ('hidden',
  'pooled', 'logits', ...), and the same model imported into ours."""
  name: str
  hf_model: Any
  hf_dir: Path
  inputs: dict[str, np.ndarray]
  ref: dict[str, np.ndarray]
  cfg: model.ModelConfig
  params: Any


def fixtures(load_case: Callable[[str, pytest.TempPathFactory], Any],
             cases: Mapping[str, Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """`get_case` (name -> the loaded case, cached for the module) and `case` (parametrized over `cases`)."""

  @pytest.fixture(scope='module')
  def get_case(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    cache: dict[str, Any] = {}
    return lambda name: cache[name] if name in cache else cache.setdefault(name, load_case(name, tmp_path_factory))

  @pytest.fixture(scope='module', params=list(cases))
  def case(request: pytest.FixtureRequest, get_case: Callable[[str], Any]) -> Any:
    return get_case(request.param)

  return get_case, case


def saved_model(name: str, cls_name: str, kwargs: Mapping[str, Any], seed: int,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
  """An HF `cls_name` of config `kwargs`, every parameter perturbed (HF initialises biases to 0 and norms to 1: a
  mix-up of two of them would go unseen), in eval mode, saved with save_pretrained into a fresh folder."""
  torch.manual_seed(seed)
  hf_cls = getattr(transformers, cls_name)
  m = hf_cls(hf_cls.config_class(**kwargs)).eval()
  with torch.no_grad():
    for p in m.parameters():
      p.add_(0.1 * torch.randn_like(p))
  hf_dir = tmp_path_factory.mktemp(name)
  m.save_pretrained(hf_dir)
  return m, hf_dir
