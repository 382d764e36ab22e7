"""Distillation (trainer/distill.py): the loss against a naive numpy reference, steps that lower the KL and never
touch the teacher, the student from every other teacher layer, the config errors, and a run from a teacher workdir
that resumes (reloading the teacher)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import numpy as np
import pytest

import model
from configs import bert_tiny
from core.config import ConfigError
from objectives import LossKind
from tests.test_step import FAST_COMPILE, OPTIM, SHARDED, SINGLE, _mesh, make_batch
from tests.tiny import TINY
from trainer import checkpoint, distill, metrics, runner
from trainer.distill import DistillConfig
from trainer.optim import make_optimizer
from trainer.step import StepConfig, abstract_train_state, compile_train_step, init_train_state, shardings_of

CLASSIFIER = TINY['bert'].replace(head='classifier', num_labels=3, pooler=True, lm_head_bias=False)


def random_params(cfg: model.ModelConfig, seed: int) -> dict:
  """Parameters of `cfg`'s shapes, every one random (numpy: seconds faster than an eager init)."""
  shapes = jax.eval_shape(lambda: model.init_params(model.build(cfg), jax.random.key(0)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jax.numpy.asarray(rng.normal(size=s.shape).astype(s.dtype)), shapes)


# --- the loss ---------------------------------------------------------------------------------------------------

def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max()
  return x - np.log(np.exp(x).sum())


def _reference_loss(cfg: DistillConfig, kind: LossKind, s_logits, t_logits, s_hidden, t_hidden, valid, batch):
  """KL * T^2 + hard cross-entropy (each a weighted mean) + (1 - cosine) (mean over valid tokens), one loop per
  position, in float64."""
  s_logits, t_logits, s_hidden, t_hidden = (np.asarray(x, np.float64) for x in (s_logits, t_logits, s_hidden,
                                                                                  t_hidden))
  if kind is LossKind.TOKENS:
    weights, labels = np.asarray(batch['loss_weights'], np.float64), np.asarray(batch['targets'])
  else:
    labels = np.asarray(batch['label'])
    weights = (labels >= 0).astype(np.float64)
  kl = hard = 0.0
  temp = cfg.temperature
  for index in np.ndindex(weights.shape):
    log_t, log_s = _log_softmax(t_logits[index] / temp), _log_softmax(s_logits[index] / temp)
    kl += weights[index] * temp ** 2 * np.sum(np.exp(log_t) * (log_t - log_s))
    hard += weights[index] * -_log_softmax(s_logits[index])[max(labels[index], 0)]
  cos = 0.0
  for index in np.ndindex(valid.shape):
    s, t = s_hidden[index], t_hidden[index]
    cos += valid[index] * (1 - s @ t / (np.linalg.norm(s) * np.linalg.norm(t)))
  total = weights.sum()
  return cfg.alpha_kl * kl / total + cfg.alpha_hard * hard / total + cfg.alpha_cos * cos / valid.sum()


@pytest.mark.parametrize('kind', [LossKind.TOKENS, LossKind.CLASSIFICATION])
def test_the_loss_equals_a_naive_reference(kind: LossKind):
  rng = np.random.default_rng(0)
  b, t, d, v = 3, 5, 6, 7
  valid = np.ones((b, t), np.float32)
  valid[0, 3:] = 0  # padding: no cosine there
  hidden = [rng.normal(size=(b, t, d)).astype(np.float32) for _ in range(2)]
  if kind is LossKind.TOKENS:
    logits = [rng.normal(size=(b, t, v)).astype(np.float32) * 3 for _ in range(2)]
    weights = (rng.random((b, t)) < 0.5).astype(np.float32) * valid
    weights[1, 1] = 0.5  # a fractional weight counts by its value
    batch = {'targets': rng.integers(0, v, (b, t)).astype(np.int32), 'loss_weights': weights}
  else:
    logits = [rng.normal(size=(b, v)).astype(np.float32) * 3 for _ in range(2)]
    batch = {'label': np.array([2, -1, 5], np.int32)}  # an unlabelled example weighs 0 in the KL too
  cfg = DistillConfig(teacher='t', temperature=2.5, alpha_kl=0.7, alpha_hard=0.2, alpha_cos=0.4)
  sums = distill.distillation_sums(cfg, kind, {'logits': logits[0], 'hidden': hidden[0]},
                                   {'logits': logits[1], 'hidden': hidden[1]}, batch, valid)
  weight = float(np.sum(batch['loss_weights'])) if kind is LossKind.TOKENS else 2.0
  loss = distill.distillation_loss(cfg, sums, weight, sums['tokens'])
  want = _reference_loss(cfg, kind, logits[0], logits[1], hidden[0], hidden[1], valid, batch)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  # The student's own distribution is the teacher's: no KL, whatever T.
  same = distill.distillation_sums(cfg, kind, {'logits': logits[1], 'hidden': hidden[1]},
                                   {'logits': logits[1], 'hidden': hidden[1]}, batch, valid)
  assert abs(float(same['kl'])) < 1e-5 and abs(float(same['cos'])) < 1e-5


# --- the step ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('objective,student_cfg,teacher_cfg,max_targets,mesh_shape', [
    ('classification', CLASSIFIER.replace(num_layers=1), CLASSIFIER, 0, SHARDED),
    # The LM heads at the masked positions alone; one device (the sharded teacher is the case above).
    ('mlm', TINY['bert'].replace(num_layers=1), TINY['bert'], 6, SINGLE),
])
def test_distillation_steps_lower_the_kl_and_leave_the_teacher_untouched(objective, student_cfg, teacher_cfg,
                                                                         max_targets, mesh_shape):
  mesh = _mesh(mesh_shape)
  module, teacher_module = model.build(student_cfg), model.build(teacher_cfg)
  tx, schedule = make_optimizer(OPTIM)
  abstract = abstract_train_state(module, tx, mesh)
  teacher_abstract = abstract_train_state(teacher_module, tx, mesh).params
  teacher_params = jax.device_put(random_params(teacher_cfg, seed=3), shardings_of(teacher_abstract))
  before = jax.tree.map(np.array, teacher_params)
  teacher = distill.Teacher('tiny', teacher_module, teacher_params)
  cfg = StepConfig(objective=objective, max_targets=max_targets,
                   distill=DistillConfig(teacher='tiny', alpha_kl=1.0, alpha_hard=0.1, alpha_cos=0.5))
  batch = mesh.to_global(make_batch(objective))
  step = compile_train_step(module, tx, schedule, cfg, mesh, abstract, batch, FAST_COMPILE, teacher=teacher)
  state = init_train_state(module, tx, jax.random.key(0), abstract, FAST_COMPILE)
  history = []
  for _ in range(8):
    state, m = step(state, batch, jax.random.key(1), teacher.params)
    history.append({k: float(v) for k, v in m.items()})
  kl = [h['distill_kl'] for h in history]
  assert kl[-1] < 0.5 * kl[0], kl
  first = history[0]
  np.testing.assert_allclose(first['loss'], first['distill_kl'] + 0.1 * first['distill_hard']
                             + 0.5 * first['distill_cos'], rtol=1e-5)
  assert all(math.isfinite(h['accuracy']) for h in history)
  # The teacher: bit-identical, still in its shardings, and no part of the student's state.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, teacher.params), before)
  assert shardings_of(teacher.params) == shardings_of(teacher_abstract)
  assert jax.tree.structure(state.params) == jax.tree.structure(abstract.params)


# --- the student from every other layer ------------------------------------------------------------------------------

@pytest.mark.parametrize('teacher_scanned,student_scanned', [(False, False), (True, False), (False, True)])
def test_alternate_layers_copy_teacher_layers_0_2_4(teacher_scanned: bool, student_scanned: bool):
  teacher_cfg = TINY['bert'].replace(num_layers=6, scan_layers=teacher_scanned)
  student_cfg = teacher_cfg.replace(num_layers=3, scan_layers=student_scanned, head='classifier', num_labels=2,
                                    pooler=True, lm_head_bias=False)
  teacher = random_params(teacher_cfg, seed=1)
  student = random_params(student_cfg, seed=2)
  params, note = distill.alternate_layers(teacher, teacher_cfg, student, student_cfg)
  assert jax.tree.structure(params) == jax.tree.structure(student)
  got, taught, own = (model.unstack_layers(jax.tree.map(np.asarray, p)) for p in (params, teacher, student))
  assert sorted(k for k in got['encoder'] if k.startswith('layers_')) == ['layers_0', 'layers_1', 'layers_2']
  for i in range(3):
    jax.tree.map(np.testing.assert_array_equal, got['encoder'][f'layers_{i}'], taught['encoder'][f'layers_{2 * i}'])
  rest = {k: v for k, v in got['encoder'].items() if not k.startswith('layers_')}  # positions, type embeddings, norm
  assert rest
  jax.tree.map(np.testing.assert_array_equal, rest, {k: taught['encoder'][k] for k in rest})
  np.testing.assert_array_equal(got['token_embed']['embedding'], taught['token_embed']['embedding'])
  # Copies: the step donates the student's state while it reads the teacher's buffers.
  assert (params['token_embed']['embedding'].unsafe_buffer_pointer()
          != teacher['token_embed']['embedding'].unsafe_buffer_pointer())
  # The teacher's MLM head has no place in a classifier; the classifier and pooler keep their own initialisation.
  assert 'mlm_dense' not in got
  jax.tree.map(np.testing.assert_array_equal, got['classifier'], own['classifier'])
  assert 'teacher layers [0, 2, 4] copied into student layers [0, 1, 2]' in note and "'classifier/bias'" in note


def test_alternate_layers_copy_a_head_of_the_same_shape():
  teacher_cfg = TINY['bert'].replace(num_layers=4)
  student_cfg = teacher_cfg.replace(num_layers=2)
  taught = random_params(teacher_cfg, seed=1)
  params, _ = distill.alternate_layers(taught, teacher_cfg, random_params(student_cfg, seed=2), student_cfg)
  for name in ('mlm_dense', 'mlm_norm', 'lm_bias'):
    jax.tree.map(np.testing.assert_array_equal, params[name], taught[name])


# --- errors, each naming the field ----------------------------------------------------------------------------------

@pytest.mark.parametrize('values,message', [
    (dict(teacher='t', temperature=0.0), r'distill.temperature=0.0: must be a number > 0'),
    (dict(teacher='t', temperature=-1), r'distill.temperature=-1: must be a number > 0'),
    (dict(teacher='t', alpha_kl=0, alpha_hard=0, alpha_cos=0),
     r'distill.alpha_kl, distill.alpha_hard and distill.alpha_cos are all 0'),
    (dict(teacher='t', alpha_cos=-0.5), r'distill.alpha_cos=-0.5: a loss weight must be a number >= 0'),
    (dict(init_student='alternate_layers'), r'distill.init_student=alternate_layers .* distill.teacher is empty'),
    (dict(init_student='every_other'), r"distill.init_student='every_other': unknown student initialisation"),
    (dict(temprature=2.0), r"distill config: unknown field\(s\) \['temprature'\].*'temprature' -> 'temperature'"),
])
def test_a_bad_distill_section_names_the_field(values, message):
  with pytest.raises(ConfigError, match=message):
    DistillConfig.from_dict(values)


_WIDE = CLASSIFIER.replace(d_model=64, num_heads=4)


@pytest.mark.parametrize('student,teacher,values,message', [
    (CLASSIFIER, CLASSIFIER.replace(vocab_size=202), {},
     r"distill.teacher='t' has model.vocab_size=202 but the student has model.vocab_size=101: .*share one tokenizer"),
    (CLASSIFIER, TINY['bert'], {},
     r"distill.teacher='t' is a family=encoder model with head=lm, the student family=encoder with head=classifier"),
    (CLASSIFIER, CLASSIFIER.replace(num_labels=2), {},
     r"distill.teacher='t' predicts model.num_labels=2 classes, the student 3: set --config.model.num_labels=2"),
    (CLASSIFIER, _WIDE, {}, r'distill.alpha_cos=1.0: .*teacher\'s model.d_model=64 and the student\'s 32: set '
     r'--config.distill.alpha_cos=0'),
    (CLASSIFIER, _WIDE, dict(alpha_cos=0, init_student='alternate_layers'),
     r'distill.init_student=alternate_layers .* teacher has model.d_model=64 and the student 32: set '
     r'--config.model.d_model=64'),
    (CLASSIFIER, CLASSIFIER, dict(init_student='alternate_layers'),
     r"the student's model.num_layers=2 takes teacher layers 0, 2, but the teacher has 2: set "
     r'--config.model.num_layers=1 \(or fewer\)'),
    (CLASSIFIER.replace(num_layers=3), CLASSIFIER.replace(num_layers=4), dict(init_student='alternate_layers'),
     r"model.num_layers=3 takes teacher layers 0, 2, 4, but the teacher has 4: set --config.model.num_layers=2"),
])
def test_a_teacher_this_student_cannot_learn_from_names_the_field(student, teacher, values, message):
  with pytest.raises(ConfigError, match=message):
    distill.check_teacher(DistillConfig(teacher='t', **values), student, teacher)


def test_distillation_of_regression_or_chunked_logits_names_the_field():
  on = DistillConfig(teacher='runs/t')
  with pytest.raises(ValueError, match=r"distill.teacher='runs/t': data.objective=regression predicts a number"):
    StepConfig(objective='regression', distill=on)
  with pytest.raises(ValueError, match=r'train.logits_chunk=8: distillation .* set --config.train.logits_chunk=0'):
    StepConfig(objective='mlm', logits_chunk=8, distill=on)


# --- a run from a teacher workdir -------------------------------------------------------------------------------------

def _classifier_config(num_layers: int, steps: int):
  config = bert_tiny.get_config()
  config.model.update(d_model=32, num_heads=2, d_ff=64, num_layers=num_layers, max_len=64, vocab_size=30522,
                      head='classifier', num_labels=2, pooler=True, lm_head_bias=False)
  config.data.update(source='builtin:movie_sentiment/binary', objective='classification', seq_len=32,
                     tokenizer='wordpiece')
  config.train.update(batch_size=8, num_steps=steps, eval_batches=1, eval_every=steps, log_every=1)
  config.optim.warmup_steps = 1
  return config


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A workdir of ours holding a 2-layer classifier's checkpoint and config, as train.py leaves it (written
  directly: training it first would only add compiles)."""
  path = tmp_path_factory.mktemp('teacher')
  config = _classifier_config(num_layers=2, steps=2)
  params = jax.tree.map(lambda x: 0.1 * x, random_params(model.ModelConfig.from_dict(config.model), seed=5))
  with checkpoint.Checkpointer(path, config=config) as ckpt:
    ckpt.save(2, {'step': np.int32(2), 'params': params}, force=True)
  return path


def _student_config(teacher: Path | str, steps: int):
  config = _classifier_config(num_layers=1, steps=steps)
  config.distill.update(teacher=str(teacher), init_student='alternate_layers')
  return config


def test_a_run_distils_from_a_teacher_workdir(teacher_dir: Path, tmp_path: Path, capsys, monkeypatch):
  for name in ('compile_train_step', 'compile_eval_step', 'init_train_state'):  # XLA's backend passes buy nothing here
    monkeypatch.setattr(runner, name, functools.partial(getattr(runner, name), compiler_options=FAST_COMPILE))
  config = _student_config(teacher_dir, steps=3)
  final = runner.train_and_evaluate(config, tmp_path)
  out = capsys.readouterr().out
  assert f'distill.teacher {teacher_dir}: 2 layers, d_model 32' in out
  assert 'teacher layers [0] copied into student layers [0]' in out
  assert set(final) == {'loss', 'accuracy'}  # the student's own metrics, as any classifier's
  rows = [r for r in metrics.read_metrics(tmp_path / metrics.JSONL_NAME, metrics.Split.TRAIN) if 'loss' in r]
  assert [r['step'] for r in rows] == [1, 2, 3]
  assert all({'distill_kl', 'distill_hard', 'distill_cos', 'accuracy'} <= set(r) for r in rows)
  # The checkpoint is the student's state alone (it restores onto it, as a resume does), and the run's config
  # names the teacher: building the run again (a resume) reloads it as it is in its workdir.
  run = runner.build_run(config, tmp_path, with_teacher=True)
  with checkpoint.Checkpointer(tmp_path, read_only=True) as ckpt:
    assert ckpt.restore(run.abstract).step == 3
  saved_teacher = checkpoint.restore_params(teacher_dir, checkpoint.abstract(run.teacher.params))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, run.teacher.params),
               jax.tree.map(np.asarray, saved_teacher))


def test_an_hf_teacher_is_loaded_onto_the_mesh(tmp_path: Path):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64, num_labels=2)
  hf_model = transformers.BertForSequenceClassification(hf_config)
  hf_model.save_pretrained(tmp_path / 'hf')
  run = runner.build_run(_student_config(tmp_path / 'hf', steps=1), tmp_path / 'run', with_teacher=True)
  params = run.teacher.params
  np.testing.assert_array_equal(params['token_embed']['embedding'],
                                hf_model.bert.embeddings.word_embeddings.weight.detach().numpy())
  np.testing.assert_array_equal(params['classifier']['kernel'], hf_model.classifier.weight.detach().numpy().T)
  teacher_abstract = abstract_train_state(run.teacher.module, make_optimizer(OPTIM)[0], run.mesh).params
  assert shardings_of(run.teacher.params) == shardings_of(teacher_abstract)
  assert run.teacher.module.cfg.head is model.Head.CLASSIFIER and run.teacher.module.cfg.num_layers == 2


def test_a_teacher_path_that_is_no_checkpoint_names_the_field(tmp_path: Path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match=r"distill.teacher='.*empty' is neither an HF checkpoint directory "
                                       r'\(config.json\) nor a workdir of ours with a checkpoint: set '
                                       r'--config.distill.teacher'):
    runner.build_run(_student_config(tmp_path / 'empty', steps=1), tmp_path / 'run', with_teacher=True)


def test_init_from_and_alternate_layers_together_name_both_fields(tmp_path: Path):
  config = _student_config('runs/t', steps=1)
  config.train.init_from = 'runs/x'
  with pytest.raises(ValueError, match=r"train.init_from='runs/x' and distill.init_student=alternate_layers both set"):
    runner.build_run(config, tmp_path)
