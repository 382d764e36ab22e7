"""ViT as a config of the shared encoder (model.inputs=patches): against HF transformers' ViT classes built from small
random configs (odd image and patch sizes, 1 and 3 channels), the patching against a naive reference, position
interpolation against HF's, the ViT-B/16 size, and bad inputs."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from jax.sharding import PartitionSpec

import model
from core.config import ConfigError
from model import hf
from model.layers import PatchEmbed
from model.positions import bicubic_weights, interpolate_grid_positions
from tests import hf_cases
from trainer import metrics

B = 2
_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=15,
            patch_size=5, num_channels=3)
# name: (HF class, HF config kwargs, scan_layers of our import)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    'model': ('ViTModel', _VIT, True),  # with the pooler
    'cls4_grey': ('ViTForImageClassification', {**_VIT, 'num_channels': 1, 'image_size': 12, 'patch_size': 3,
                                                 'num_labels': 4, 'hidden_act': 'gelu_new'}, False),
}


@dataclasses.dataclass
class Case:
  name: str
  hf_model: Any
  hf_dir: Path
  pixels: np.ndarray
  ref: dict[str, np.ndarray]
  cfg: model.ModelConfig
  params: Any


@torch.no_grad()
def hf_outputs(m: Any, pixels: np.ndarray, interpolate: bool = False) -> dict[str, np.ndarray]:
  """HF's outputs under our names: hidden, pooled (ViTModel's pooler), logits (the classifier)."""
  out = m(pixel_values=torch.from_numpy(pixels), interpolate_pos_encoding=interpolate)
  if isinstance(out, transformers.modeling_outputs.ImageClassifierOutput):
    return {'logits': out.logits.numpy()}
  return {'hidden': out.last_hidden_state.numpy(), 'pooled': out.pooler_output.numpy()}


def our_outputs(cfg: model.ModelConfig, params: Any, pixels: np.ndarray, interpolate: bool = False) -> dict[str, Any]:
  out = jax.jit(model.build(cfg).apply, static_argnames='interpolate_pos_encoding')(
      {'params': params}, pixel_values=pixels, interpolate_pos_encoding=interpolate)
  return {k: np.asarray(v) for k, v in out.items()}


def assert_close(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float = 1e-4) -> None:
  for key, r in ref.items():
    assert ours[key].shape == r.shape, (key, ours[key].shape, r.shape)
    err = np.abs(ours[key] - r).max()
    assert err <= atol, f'{key}: max |ours - HF| = {err:.3g} > {atol}'


def _pixels(cfg: dict[str, Any], seed: int, size: int | tuple[int, int] | None = None) -> np.ndarray:
  height, width = (size, size) if isinstance(size, int) else size or (cfg['image_size'],) * 2
  return np.random.default_rng(seed).standard_normal((B, cfg['num_channels'], height, width)).astype(np.float32)


def load_case(name: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
  cls_name, kwargs, scan = CASES[name]
  m, hf_dir = hf_cases.saved_model(name, cls_name, kwargs, list(CASES).index(name), tmp_path_factory)
  pixels = _pixels(kwargs, seed=len(name))
  cfg, params = hf.from_pretrained(hf_dir, scan_layers=scan)
  return Case(name, m, hf_dir, pixels, hf_outputs(m, pixels), cfg, params)


get_case, case = hf_cases.fixtures(load_case, CASES)


def test_import_matches_hf(case: Case) -> None:
  _, kwargs, scan = CASES[case.name]
  assert case.cfg.inputs is model.Inputs.PATCHES and case.cfg.norm_placement is model.NormPlacement.PRE
  assert (case.cfg.image_size, case.cfg.patch_size, case.cfg.num_channels, case.cfg.scan_layers) == (
      kwargs['image_size'], kwargs['patch_size'], kwargs['num_channels'], scan)
  assert_close(our_outputs(case.cfg, case.params, case.pixels), case.ref)


def test_export_round_trip(case: Case, tmp_path: Path) -> None:
  """HF -> ours -> our save_pretrained -> HF: the same outputs, no missing or unexpected keys."""
  hf.save_pretrained(case.cfg, case.params, tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  assert config['model_type'] == 'vit' and config['architectures'] == [type(case.hf_model).__name__]
  reloaded, info = type(case.hf_model).from_pretrained(tmp_path, output_loading_info=True)
  assert {k: v for k, v in info.items() if v} == {}
  assert_close(hf_outputs(reloaded.eval(), case.pixels), case.ref, atol=1e-5)


def test_interpolated_positions_match_hf(case: Case) -> None:
  """Another resolution with interpolate_pos_encoding=True: HF's bicubic resize of the grid, up, down and to an
  oblong grid."""
  kwargs = CASES[case.name][1]
  side, p = kwargs['image_size'], kwargs['patch_size']
  for size in (side + 2 * p, side - p, (side - p, side + 3 * p)):
    pixels = _pixels(kwargs, seed=len(str(size)), size=size)
    assert_close(our_outputs(case.cfg, case.params, pixels, interpolate=True),
                 hf_outputs(case.hf_model, pixels, interpolate=True))


def test_interpolation_keeps_the_table_at_the_original_resolution(case: Case) -> None:
  table = model.unstack_layers(case.params)['encoder']['position_embed']['embedding']
  grid = case.cfg.patch_grid
  assert interpolate_grid_positions(table, grid, grid) is table
  # The resize itself is the identity on its own grid, and the model's output does not change either.
  for n in (1, 2, 3, 14):
    np.testing.assert_array_equal(bicubic_weights(n, n), np.eye(n))
  plain = our_outputs(case.cfg, case.params, case.pixels)
  assert_close(our_outputs(case.cfg, case.params, case.pixels, interpolate=True), plain, atol=0.0)


def test_legacy_checkpoint_names_are_read(get_case, tmp_path: Path) -> None:
  """Published checkpoints use transformers 4's names (vit.encoder.layer.{i}.attention.attention.query, ...)."""
  c = get_case('model')
  legacy = {'q_proj': 'attention.query', 'k_proj': 'attention.key', 'v_proj': 'attention.value',
            'o_proj': 'output.dense'}
  tensors = safetensors.numpy.load_file(c.hf_dir / 'model.safetensors')
  renamed = {}
  for name, x in tensors.items():
    parts = name.split('.')
    if parts[0] == 'layers':  # ViTModel saves without the 'vit.' prefix
      i, rest = parts[1], '.'.join(parts[2:])
      for new, old in legacy.items():
        rest = rest.replace(f'attention.{new}', f'attention.{old}')
      rest = rest.replace('mlp.fc1', 'intermediate.dense').replace('mlp.fc2', 'output.dense')
      name = f'encoder.layer.{i}.{rest}'
    renamed[name] = x
  assert 'encoder.layer.1.attention.attention.query.weight' in renamed
  assert 'encoder.layer.1.attention.output.dense.weight' in renamed and 'encoder.layer.0.output.dense.bias' in renamed
  path = tmp_path / 'legacy'
  path.mkdir()
  (path / 'config.json').write_text((c.hf_dir / 'config.json').read_text())
  safetensors.numpy.save_file(renamed, path / 'model.safetensors', metadata={'format': 'pt'})
  cfg, params = hf.from_pretrained(path)
  assert_close(our_outputs(cfg, params, c.pixels), c.ref)


def test_strict_import(get_case, tmp_path: Path) -> None:
  c = get_case('cls4_grey')

  def copy(name: str, edit=None, **config: Any) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / 'config.json').write_text(json.dumps({**json.loads((c.hf_dir / 'config.json').read_text()), **config}))
    tensors = safetensors.numpy.load_file(c.hf_dir / 'model.safetensors')
    if edit:
      edit(tensors)
    safetensors.numpy.save_file(tensors, path / 'model.safetensors', metadata={'format': 'pt'})
    return path

  with pytest.raises(hf.CheckpointError, match=r'missing from the file: vit\.embeddings\.cls_token'):
    hf.from_pretrained(copy('missing', lambda t: t.pop('vit.embeddings.cls_token')))
  pooler = {'vit.pooler.dense.weight': np.ones((32, 32), np.float32)}  # ViTForImageClassification has no pooler
  with pytest.raises(hf.CheckpointError, match=r'no parameter takes: vit\.pooler\.dense\.weight'):
    hf.from_pretrained(copy('extra', lambda t: t.update(pooler)))
  with pytest.raises(hf.CheckpointError, match=r'config\.json sets qkv_bias=False; only True is supported'):
    hf.from_pretrained(copy('qkv', qkv_bias=False))
  with pytest.raises(hf.CheckpointError, match=r'config\.json sets image_size=\[12, 15\]; only square sizes'):
    hf.from_pretrained(copy('oblong', image_size=[12, 15]))
  with pytest.raises(hf.CheckpointError, match=r'patch_embeddings\.projection\.weight has shape \(32, 1, 3, 3\); '
                                               r'ViTForImageClassification with this config needs \(32, 3, 3, 3\)'):
    hf.from_pretrained(copy('channels', num_channels=3))


def test_export_refuses_what_vit_cannot_express(get_case, tmp_path: Path) -> None:
  c = get_case('cls4_grey')
  with pytest.raises(hf.CheckpointError, match=r"ViTForImageClassification cannot express this config: "
                                               r"pooling='mean' \(HF gives 'cls'\)"):
    hf.save_pretrained(c.cfg.replace(pooling='mean'), c.params, tmp_path)


# Our side alone.
_TINY = model.ModelConfig.from_dict(importlib.import_module('configs.presets').vit(
    'tiny', image_size=15, patch_size=5, num_channels=3, head='classifier', num_labels=3, d_model=32, num_heads=4,
    d_ff=48))


@pytest.fixture(scope='module')
def tiny_params() -> Any:
  return jax.jit(lambda rng: model.init_params(model.build(_TINY), rng))(jax.random.key(0))


def test_patching_equals_a_naive_reference() -> None:
  """The reshape + dense is, patch by patch, the flattened pixels times the kernel (a Conv2d of stride = kernel)."""
  p, c, h, w, d = 3, 2, 6, 9, 5
  module = PatchEmbed(p, c, d, use_bias=True, std=0.5, dtype='float32', param_dtype='float32')
  pixels = jnp.asarray(np.random.default_rng(0).standard_normal((2, c, h, w)), jnp.float32)
  params = module.init(jax.random.key(1), pixels)['params']
  params = jax.tree.map(lambda x: x + 0.3, nn.unbox(params))  # a non-zero bias
  out = np.asarray(module.apply({'params': params}, pixels))
  kernel, bias = np.asarray(params['proj']['kernel']), np.asarray(params['proj']['bias'])
  expected = [np.asarray(params['cls_token'])]
  for i in range(h // p):
    for j in range(w // p):
      patch = np.asarray(pixels)[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (B, C, p, p)
      expected.append(np.einsum('bcxy,cxyd->bd', patch, kernel) + bias)
  expected[0] = np.broadcast_to(expected[0], (2, d))
  np.testing.assert_allclose(out, np.stack(expected, axis=1), rtol=1e-5, atol=1e-5)
  weight = torch.from_numpy(np.moveaxis(kernel, -1, 0).copy())  # HF's Conv2d layout (D, C, p, p)
  conv = torch.nn.functional.conv2d(torch.from_numpy(np.array(pixels)), weight, torch.from_numpy(np.array(bias)),
                                    stride=p)
  np.testing.assert_allclose(out[:, 1:], conv.flatten(2).transpose(1, 2).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('pooling', ['cls', 'mean'])
def test_classifier_reads_the_pooled_hidden_state(pooling: str, tiny_params: Any) -> None:
  """No pooler: the classifier on the final norm at [CLS] (HF's), or on the mean of the patch tokens; head_only
  computes only [CLS] in the last layer, and only when that is all the classifier reads."""
  cfg = _TINY.replace(pooling=pooling)
  pixels = jnp.asarray(_pixels(dict(num_channels=3, image_size=15), seed=3))
  module = model.build(cfg)
  out = module.apply({'params': tiny_params}, pixel_values=pixels)
  hidden = out['hidden']
  pooled = hidden[:, 0] if pooling == 'cls' else hidden[:, 1:].mean(axis=1)
  kernel, bias = tiny_params['classifier']['kernel'], tiny_params['classifier']['bias']
  np.testing.assert_allclose(out['logits'], pooled @ kernel + bias, rtol=1e-5, atol=1e-5)
  head_only = module.apply({'params': tiny_params}, pixel_values=pixels, head_only=True)
  assert head_only['hidden'].shape[1] == (1 if pooling == 'cls' else 10)
  np.testing.assert_allclose(head_only['logits'], out['logits'], rtol=1e-5, atol=1e-5)


def test_vit_b16_parameter_count() -> None:
  """configs/vit_base.py: ViT-B/16 as HF's ViTModel counts it (pooler, no head), and the ImageNet classifier."""
  cfg = model.ModelConfig.from_dict(importlib.import_module('configs.vit_base').get_config().model)
  assert model.count_params(cfg.replace(head='none', num_labels=0, pooler=True)) == 86_389_248
  assert model.count_params(cfg) == 86_567_656  # ViTForImageClassification, 1,000 classes
  with torch.device('meta'):
    ref = transformers.ViTModel(transformers.ViTConfig())
  assert sum(p.numel() for p in ref.parameters()) == 86_389_248


def test_presets_have_the_published_shapes() -> None:
  presets = importlib.import_module('configs.presets')
  for size, (d, layers, heads) in {'ti': (192, 12, 3), 's': (384, 12, 6), 'b': (768, 12, 12)}.items():
    cfg = model.ModelConfig.from_dict(presets.vit(size))
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.d_ff, cfg.patch_size, cfg.image_size) == (
        d, layers, heads, 4 * d, 16, 224)
    assert cfg.position_rows == 197


def test_flops_count_the_patch_projection_and_the_sequence() -> None:
  d, ff, L, c, p, labels = 32, 48, 2, 3, 5, 3
  t = 1 + 9  # [CLS] + a 3x3 grid
  layer = t * (4 * d * d + 2 * d * ff) + 2 * d * t * t
  last = t * 2 * d * d + (2 * d * d + 2 * d * ff) + 2 * d * t  # [CLS] alone in the last layer (head_only)
  assert metrics.forward_macs(_TINY, t) == (L - 1) * layer + last + 9 * c * p * p * d + d * labels
  assert metrics.forward_macs(_TINY.replace(pooling='mean'), t) == L * layer + 9 * c * p * p * d + d * labels


@pytest.mark.parametrize('shape, interpolate, message', [
    ((2, 3, 16, 15), True, r'pixel_values of 16x15 pixels: model\.patch_size=5 must divide the height and the width'),
    ((2, 1, 15, 15), False, r'has 1 channels but model\.num_channels=3: convert the images'),
    ((2, 3, 20, 20), False, r'pixel_values of 20x20 pixels, but model\.image_size=15: the position table holds a '
                            r'3x3 grid of patches; .* or pass interpolate_pos_encoding=True'),
    ((2, 3, 10, 10), False, r'pixel_values of 10x10 pixels, but model\.image_size=15'),
])
def test_bad_images_name_the_field_and_the_fix(shape: tuple[int, ...], interpolate: bool, message: str,
                                               tiny_params: Any) -> None:
  with pytest.raises(ValueError, match=message):
    model.build(_TINY).apply({'params': tiny_params}, pixel_values=jnp.zeros(shape),
                             interpolate_pos_encoding=interpolate)


def test_inputs_of_the_other_kind_are_an_error(tiny_params: Any) -> None:
  module, ids = model.build(_TINY), jnp.zeros((2, 10), jnp.int32)
  with pytest.raises(ValueError, match=r'model\.inputs=patches reads pixel_values \(batch, channels, height, width\) '
                                       r'alone(?!, not)'):
    module.apply({'params': tiny_params}, input_ids=ids)
  with pytest.raises(ValueError, match=r'alone, not attention_mask\b'):
    module.apply({'params': tiny_params}, pixel_values=jnp.zeros((2, 3, 15, 15)), attention_mask=ids)
  with pytest.raises(ValueError, match=r'model\.inputs=tokens reads input_ids, not pixel_values'):
    model.build(_TINY.replace(inputs='tokens', image_size=None, patch_size=None, num_channels=None, pooler=True)).init(
        jax.random.key(0), pixel_values=jnp.zeros((2, 3, 15, 15)))


@pytest.mark.parametrize('change, message', [
    (dict(image_size=16), r'model\.patch_size=5: must divide model\.image_size=16'),
    (dict(num_channels=None), r'model\.num_channels=None: model\.inputs=patches needs it as a positive integer'),
    (dict(family='decoder', head='none', num_labels=0), r"model\.inputs='patches': patches feed an encoder"),
    (dict(position='rope'), r"model\.position='rope': model\.inputs=patches has a learned table"),
    (dict(num_token_types=2), r'model\.num_token_types=2: model\.inputs=patches has no tokens'),
    (dict(head='lm', num_labels=0), r"model\.head='lm': model\.inputs=patches has no tokens, so no vocabulary"),
    (dict(inputs='tokens', pooler=True), r'model\.image_size=15: only applies to model\.inputs=patches'),
    (dict(inputs='tokens', image_size=None, patch_size=None, num_channels=None, pooler=True, pooling='mean'),
     r"model\.pooling='mean': averages the patch tokens of model\.inputs=patches"),
])
def test_bad_configs_name_the_field(change: dict[str, Any], message: str) -> None:
  with pytest.raises(ConfigError, match=message):
    _TINY.replace(**change)


def test_sharded_forward_equals_one_device(tiny_params: Any) -> None:
  """Every new parameter and activation carries logical names: on a (data, fsdp, tensor) = (2, 2, 2) mesh the
  patch kernel, [CLS] and position table are sharded by 'embed', and the forward pass (with an interpolated table)
  equals the single-device one."""
  import optax  # pylint: disable=import-outside-toplevel
  from trainer.mesh import MeshConfig  # pylint: disable=import-outside-toplevel
  from trainer.step import abstract_train_state, shardings_of  # pylint: disable=import-outside-toplevel
  ctx = MeshConfig(data=2, fsdp=2, tensor=2).context()
  module = model.build(_TINY)
  abstract = abstract_train_state(module, optax.sgd(0.1), ctx).params
  assert abstract['patch_embed']['proj']['kernel'].sharding.spec == PartitionSpec(None, None, None, 'fsdp')
  assert abstract['patch_embed']['cls_token'].sharding.spec == PartitionSpec('fsdp')
  assert abstract['encoder']['position_embed']['embedding'].sharding.spec == PartitionSpec(None, 'fsdp')
  params = jax.device_put(tiny_params, shardings_of(abstract))
  rows = np.random.default_rng(5).standard_normal((ctx.batch_devices, 3, 20, 20)).astype(np.float32)
  pixels = jax.device_put(rows, ctx.batch_sharding(4))
  with ctx.active():
    sharded = jax.jit(module.apply, static_argnames='interpolate_pos_encoding')(
        {'params': params}, pixel_values=pixels, interpolate_pos_encoding=True)
  single = module.apply({'params': tiny_params}, pixel_values=rows, interpolate_pos_encoding=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), sharded, single)


def test_describe_runs_a_vit_config() -> None:
  """describe.py on configs/vit_base.py shrunk from the command line: images in, [CLS] + patches counted."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  shrink = ['--config.model.num_layers=1', '--config.model.d_model=32', '--config.model.num_heads=2',
            '--config.model.d_ff=64', '--config.model.image_size=32', '--config.model.num_labels=5']
  result = subprocess.run([sys.executable, 'describe.py', '--config', 'configs/vit_base.py', *shrink, '--batch_size=2'],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '3x32x32 images in 16x16 patches: [CLS] + 4 = 5 tokens' in result.stdout
  assert "forward (2x5)" in result.stdout and "'logits': (2, 5)" in result.stdout
