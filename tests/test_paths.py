"""core.paths.user_path: paths as users type them, made absolute once."""

from __future__ import annotations

import pytest

from core.paths import user_path


@pytest.mark.parametrize('given, want', [('runs/x', 'cwd/runs/x'), ('./runs/../runs/x/', 'cwd/runs/x'),
                                         ('~/runs/x', 'home/runs/x'), ('~', 'home'), ('/abs/x', '/abs/x')])
def test_user_path(tmp_path, monkeypatch, given, want):
  (tmp_path / 'cwd').mkdir()
  monkeypatch.chdir(tmp_path / 'cwd')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  got = user_path(given)
  assert got.is_absolute()
  assert str(got) == (want if want.startswith("/") else str(tmp_path / want))
