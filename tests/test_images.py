"""Images through the data pipeline, the run's checks and eval.py (issue 16): image sources (builtin:digits, the
TFDS catalog under mock_data), the image_classification examples (fit, normalisation, augmentation drawn from
(seed, epoch, index)), errors before anything compiles, the confusion matrix, and train.py + eval.py end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sklearn
import tensorflow_datasets as tfds
from PIL import Image

import model
from configs import vit_digits
from core.config import ConfigError
from data import examples, images, prepare, sources
from data.synthetic import synthetic_batch
from data.tasks import DataConfig, build_task
from evaluation import images as eval_images
from trainer import plan, runner

ROOT = Path(__file__).resolve().parents[1]
tfds.disable_progress_bar()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """builtin:digits built from the digits file of the installed scikit-learn (requirements.txt), a second."""
  path = tmp_path_factory.mktemp('tfds')
  prepare.build('digits', path, manual_dir=Path(sklearn.__file__).parents[1])
  return path


def _data(data_dir: Path, **fields: object) -> DataConfig:
  return DataConfig(**(dict(source='builtin:digits', objective='image_classification', seq_len=17,
                            data_dir=str(data_dir)) | fields))


def test_digits_examples_and_normalisation(data_dir: Path) -> None:
  """pixel_values (1, 8, 8) float32 and an int32 label; normalised by the training split's mean and std (every
  split alike), or by data.image_mean / image_std."""
  train = build_task(_data(data_dir), 'train', seed=0)
  assert train.tokenizer is None and train.info.kind is sources.TaskKind.IMAGE_CLASSIFICATION
  assert train.info.image_shape == (8, 8, 1) and train.info.num_classes == 10 and not train.info.horizontal_flips
  pixels = np.stack([train.source[i]['image'] for i in range(len(train.source))]).astype(np.float64)
  mean, std = pixels.mean(), pixels.std()
  example = train.transform(0, train.source[0])
  assert example['pixel_values'].shape == (1, 8, 8) and example['pixel_values'].dtype == np.float32
  assert example['label'].dtype == np.int32 and example['label'] == train.source[0]['label']
  expected = (train.source[0]['image'].transpose(2, 0, 1) - mean) / std
  np.testing.assert_allclose(example['pixel_values'], expected, rtol=1e-5, atol=1e-5)
  test = build_task(_data(data_dir), 'test', seed=0)
  np.testing.assert_allclose(test.transform(3, test.source[3])['pixel_values'],
                             (test.source[3]['image'].transpose(2, 0, 1) - mean) / std, rtol=1e-5, atol=1e-5)
  given = build_task(_data(data_dir, image_mean=(8.0,), image_std=(4.0,)), 'train', seed=0)
  np.testing.assert_array_equal(given.transform(0, given.source[0])['pixel_values'],
                                (train.source[0]['image'].transpose(2, 0, 1).astype(np.float32) - 8) / 4)
  with pytest.raises(ValueError, match=r"data.image_mean=\(1.0, 2.0, 3.0\), data.image_std=\(1.0, 1.0, 1.0\): "
                                       r"data.source='builtin:digits' has 1-channel images; give 1 values each"):
    build_task(_data(data_dir, image_mean=(1, 2, 3), image_std=(1, 1, 1)), 'train', seed=0)


def test_augmentation_is_drawn_from_seed_epoch_and_index(data_dir: Path) -> None:
  """The same (seed, position) gives the same image in any process; the next epoch (position + N) another crop;
  evaluation splits and augment=False never augment."""
  config = _data(data_dir, crop_padding=2, rotate=15.0)
  task, again = build_task(config, 'train', seed=3), build_task(config, 'train', seed=3)
  n = len(task.source)
  first = [task.transform(i, task.source[i])['pixel_values'] for i in range(8)]
  np.testing.assert_array_equal(first, [again.transform(i, again.source[i])['pixel_values'] for i in range(8)])
  second = [task.transform(n + i, task.source[i])['pixel_values'] for i in range(8)]
  assert sum(not np.array_equal(a, b) for a, b in zip(first, second)) >= 6  # 1 crop in 25 repeats
  other_seed = build_task(config, 'train', seed=4)
  assert any(not np.array_equal(a, other_seed.transform(i, other_seed.source[i])['pixel_values'])
             for i, a in enumerate(first))
  mean, std = images.channel_stats(n, lambda i: task.source[i]['image'])  # the run's figures (no data.image_mean)
  rng = examples.example_rng(3, 1, 5, examples.Stream.AUGMENT)  # epoch 1, index 5
  augmented = images.augment(task.source[5]['image'], rng, crop_padding=2, flip=False, rotate=15.0)
  expected = images.normalise(augmented, mean, std)
  np.testing.assert_allclose(task.transform(n + 5, task.source[5])['pixel_values'], expected, rtol=1e-6)
  plain = build_task(_data(data_dir), 'train', seed=3)
  for split_task in (build_task(config, 'validation', seed=3), build_task(config, 'train', seed=3, augment=False)):
    assert split_task.config.crop_padding == 0 and split_task.config.rotate == 0
  unaugmented = build_task(config, 'train', seed=3, augment=False)
  np.testing.assert_array_equal(unaugmented.transform(n + 5, unaugmented.source[5])['pixel_values'],
                                plain.transform(5, plain.source[5])['pixel_values'])


class _Draws:
  """A generator whose uniform draws are given (images.augment reads only rng.random)."""

  def __init__(self, *values: float) -> None:
    self.values = list(values)

  def random(self, size: int | None = None) -> float | np.ndarray:
    if size is None:
      return self.values.pop(0)
    out, self.values = np.array(self.values[:size]), self.values[size:]
    return out


def test_crop_flip_fit() -> None:
  image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
  # padding 1: offsets floor(u * 3); top 0, left 2: the image moved up-left... rows -1..2, columns 1..4
  cropped = images.augment(image, _Draws(0.0, 0.99), crop_padding=1, flip=False)
  np.testing.assert_array_equal(cropped[..., 0], [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]])
  flipped = images.augment(image, _Draws(0.49), crop_padding=0, flip=True)
  np.testing.assert_array_equal(flipped[..., 0], image[:, ::-1, 0])
  np.testing.assert_array_equal(images.augment(image, _Draws(0.5), crop_padding=0, flip=True), image)
  # rotate: the angle (2u - 1) * rotate degrees, counter-clockwise, drawn before the crop's offsets
  quarter = images.augment(image, _Draws(1.0), crop_padding=0, flip=False, rotate=90.0)
  np.testing.assert_array_equal(quarter[..., 0], np.rot90(image[..., 0]))
  turned = images.augment(image, _Draws(0.0, 0.0, 0.0), crop_padding=1, flip=False, rotate=90.0)[..., 0]
  np.testing.assert_array_equal(turned[1:, 1:], np.rot90(image[..., 0], -1)[:3, :3])
  square = np.pad(np.full((2, 2, 1), 16, np.uint8), ((3, 3), (3, 3), (0, 0)))  # a 2x2 block in the middle
  slanted = images.rotated(square, 10.0)  # interpolated, not rounded back to the 17 grey levels
  assert slanted.dtype == np.float32 and np.any(slanted % 1 != 0) and abs(slanted.sum() - square.sum()) < 8
  padded = images.fit(np.ones((2, 3, 1), np.uint8), 4, images.ImageFit.PAD)
  np.testing.assert_array_equal(padded[..., 0], [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
  wide = np.zeros((4, 8, 3), np.uint8)
  wide[:, 1:7] = 200  # the shorter side 4 -> 2, the width 8 -> 4: the centre columns 1..2 read input columns 1..6
  np.testing.assert_array_equal(images.fit(wide, 2, images.ImageFit.RESIZE), np.full((2, 2, 3), 200, np.uint8))
  with pytest.raises(ValueError, match=r'an image of 4x8 pixels does not fit in data.image_size=6 with '
                                       r'data.image_fit=pad'):
    images.fit(wide, 6, images.ImageFit.PAD)


@pytest.mark.parametrize('name, shape, flips', [('mnist', (1, 28, 28), False), ('cifar10', (3, 32, 32), True)])
def test_tfds_image_sources_with_mock_data(tmp_path: Path, name: str, shape: tuple[int, ...], flips: bool) -> None:
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    info = sources.task_info(f'tfds:{name}', data_dir=tmp_path)
    assert info.kind is sources.TaskKind.IMAGE_CLASSIFICATION and info.text_features == ()
    assert info.image_shape == shape[1:] + shape[:1] and info.num_classes == 10 and info.horizontal_flips == flips
    config = DataConfig(source=f'tfds:{name}', objective='image_classification', seq_len=17, data_dir=str(tmp_path),
                        crop_padding=2, flip=flips)
    task = build_task(config, 'train', seed=0)
    example = task.transform(0, task.source[0])
    assert example['pixel_values'].shape == shape and 0 <= example['label'] < 10


def test_images_of_differing_sizes_need_data_image_size(tmp_path: Path) -> None:
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    config = DataConfig(source='tfds:imagenette/160px', objective='image_classification', seq_len=17,
                        data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"data.source='tfds:imagenette/160px' holds images of differing sizes: set "
                                         r'data.image_size'):
      build_task(config, 'train', seed=0)
    task = build_task(DataConfig(**(vars(config) | dict(image_size=16))), 'validation', seed=0)
    assert task.transform(1, task.source[1])['pixel_values'].shape == (3, 16, 16)


def _run_config(data_dir: Path, **overrides: object):
  config = vit_digits.get_config()
  config.data.data_dir = str(data_dir)
  config.train.num_epochs, config.train.num_steps, config.train.batch_size = 0.0, 5, 8
  for path, value in overrides.items():
    section, field = path.split('__')
    config[section][field] = value
  return config


@pytest.mark.parametrize('overrides, error, message', [
    (dict(model__image_size=16, data__seq_len=65), ValueError,
     r"model.image_size=16, but data.source='builtin:digits' gives 8x8 images \(data.image_size=None: as stored\): "
     r'set --config.model.image_size=8, or --config.data.image_size=16'),
    (dict(model__num_channels=3), ValueError,
     r"model.num_channels=3, but data.source='builtin:digits' has 1-channel images: set "
     r'--config.model.num_channels=1'),
    (dict(model__num_labels=5), ValueError,
     r"model.num_labels=5, but data.source='builtin:digits' has 10 classes: set --config.model.num_labels=10"),
    (dict(data__seq_len=65), ValueError,
     r'data.seq_len=65, but the model runs \[CLS\] \+ 4 patches = 5 tokens \(model.image_size=8, '
     r'model.patch_size=4\): set --config.data.seq_len=5'),
    (dict(model__patch_size=3), ConfigError, r'model.patch_size=3: must divide model.image_size=8'),
    (dict(data__flip=True), ValueError,
     r"data.flip=True: a mirrored image of data.source='builtin:digits' is not one of its class"),
    (dict(data__rotate=200.0), ValueError,
     r'data.rotate=200.0: the largest rotation in degrees, a number in \[0, 180\)'),
    (dict(data__length_buckets=(9, 17)), ValueError,
     r'data.length_buckets=\(9, 17\): every image is the same sequence of patches'),
    (dict(data__objective='classification', data__crop_padding=0, eval__baselines=()), ValueError,
     r'model.inputs=patches reads images, but data.objective=classification gives token ids'),
])
def test_bad_inputs_are_errors_before_anything_compiles(data_dir: Path, tmp_path: Path, overrides: dict,
                                                        error: type[Exception], message: str) -> None:
  with pytest.raises(error, match=message):
    runner.build_run(_run_config(data_dir, **overrides), tmp_path)


def test_an_image_objective_on_a_text_source(data_dir: Path, tmp_path: Path) -> None:
  (tmp_path / 'train.tsv').write_text('text\tlabel\ngood film\t1\nbad film\t0\n')
  config = _run_config(data_dir, data__source=f'tsv:{tmp_path / "train.tsv"}')
  with pytest.raises(ValueError, match=r"data.objective=image_classification does not fit data.source='tsv:.*', a "
                                       r"classification dataset; .*image_classification reads an 'image' feature"):
    runner.build_run(config, tmp_path / 'run')
  text_model = _run_config(data_dir, model__inputs='tokens', model__image_size=None, model__patch_size=None,
                           model__num_channels=None, model__pooler=True, model__pooling='cls')
  with pytest.raises(ValueError, match=r'data.objective=image_classification feeds images \(pixel_values\), but '
                                       r'model.inputs=tokens reads token ids: set model.inputs=patches'):
    runner.build_run(text_model, tmp_path / 'run')


def test_synthetic_batch_and_dry_run_plan(data_dir: Path) -> None:
  """train.py --dry_run compiles the step on pixel_values of the model's shape; synthetic batches have the
  features and dtypes of real examples."""
  task = build_task(_data(data_dir), 'train', seed=0)
  real = task.transform(0, task.source[0])
  fake = synthetic_batch('image_classification', 2, 17, None, 1, num_labels=10, image_shape=(1, 8, 8))
  assert {k: (v.shape[1:], v.dtype) for k, v in fake.items()} == {k: (v.shape, v.dtype) for k, v in real.items()}
  config = _run_config(data_dir, model__num_layers=1)  # one layer: a quicker compile, the same batch
  planned = plan.plan(config)
  assert planned.batch_shapes == {'pixel_values': (8, 1, 8, 8), 'label': (8,)}
  assert planned.params == model.count_params(model.ModelConfig.from_dict(config.model)) and planned.model_flops > 0


def test_per_class_accuracy_and_confusion_png(tmp_path: Path) -> None:
  labels, predictions = np.array([0, 0, 1, 1, 1, 2, -1]), np.array([0, 1, 1, 1, 0, 2, 2])
  matrix = eval_images.confusion_matrix(predictions, labels, 3)
  np.testing.assert_array_equal(matrix, [[1, 1, 0], [1, 2, 0], [0, 0, 1]])
  assert eval_images.per_class_accuracy(predictions[:6], labels[:6], ('a', 'b', 'c', 'd')) == {
      'accuracy/a': 0.5, 'accuracy/b': 2 / 3, 'accuracy/c': 1.0}  # 'd' has no image
  path = eval_images.plot_confusion(matrix, ('a', 'b', 'c'), tmp_path / 'm.png', 'title')
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  with Image.open(path) as image:
    image.verify()


def test_train_and_eval_on_digits(data_dir: Path, tmp_path: Path) -> None:
  """train.py (5 steps of configs/vit_digits.py) then eval.py as a user runs them: accuracy, each class's, the
  confusion matrices, scikit-learn's baselines on the same split beside them, and the training time."""
  # One layer of width 32 (a quicker compile); eval.py is given the same model, as the trained one must be.
  workdir, same = tmp_path / 'vit', [f'--config.data.data_dir={data_dir}', '--config.model.num_layers=1',
                                     '--config.model.d_model=32', '--config.model.d_ff=64']
  train = [sys.executable, 'train.py', '--config', 'configs/vit_digits.py', f'--workdir={workdir}', *same,
           '--config.train.num_epochs=0', '--config.train.num_steps=5', '--config.train.batch_size=16',
           '--config.train.log_every=2']
  done = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'builtin:digits (image_classification): 1,463 training rows, 159 validation rows; 1x8x8 images' in done.stdout
  assert 'SentencePiece' not in done.stdout
  evaluate = [sys.executable, 'eval.py', '--config', 'configs/vit_digits.py', f'--workdir={workdir}', *same,
              "--config.eval.baselines=('rbf_svm',)"]
  done = subprocess.run(evaluate, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  out = workdir / 'eval' / 'step_5'
  saved = json.loads((out / 'metrics.json').read_text())
  for split, count in (('validation', 159), ('test', 175)):
    figures = saved[split]
    assert figures['examples'] == count and 0 <= figures['accuracy'] <= 1
    assert {f'accuracy/{d}' for d in range(10)} <= set(figures) and figures['rbf_svm_accuracy'] > 0.9
    with Image.open(out / f'{split}_confusion.png') as image:
      assert image.format == 'PNG' and min(image.size) > 100
  assert saved['training_seconds'] > 0
  assert 'test        rbf_svm_accuracy' in done.stdout and 'training time: ' in done.stdout
