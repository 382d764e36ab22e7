"""The module-scoped fixtures of the HF parity tests (tests/test_hf.py, test_albert.py, test_vit.py): each case is
built (an HF model of a random small config, saved, imported) once per module, by whichever test asks first.

  get_case, case = hf_cases.fixtures(load_case, CASES)   # at module level: pytest finds them by name
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest


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
