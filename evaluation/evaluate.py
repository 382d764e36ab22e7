"""Evaluation of a checkpoint, `evaluate_checkpoint(config, workdir, step=...)`: the task's official metrics,
predictions files, generated samples (eval.py is its program).

Restores the parameters of `--step` (latest, best by validation loss, or a number) with the config the run
was trained with (saved with the checkpoint; a given config may change only how and where it is evaluated,
see `effective_config`), onto the mesh of that config (any shape: the checkpoint's own mesh does not
matter), runs every example of `eval.splits` in order and reports (evaluation/config.py):
  classification / regression  accuracy, F1, Matthews correlation, Pearson, Spearman (as config.eval.metrics)
  image classification         accuracy (Matthews), each class's accuracy, <split>_confusion.png, and the
                               scikit-learn baselines of eval.baselines beside them, the training time
  language models              loss, perplexity, token accuracy; bits per byte for causal LMs; samples;
                               mlm_sop: its MLM and sentence-order losses, sentence-order accuracy
  sequence-to-sequence         loss, perplexity, and BLEU / chrF / ROUGE of generated text against the references,
                               with the BLEU and chrF of copying the source text (source_copy_*) beside them
  extractive QA                SQuAD's exact match and F1 of the answers gathered over every window of a question
                               (evaluation/qa.py), the word-overlap baseline's (overlap_*) beside them;
                               <split>_predictions.json ({id: text}) and <split>_nbest.json
It writes <workdir>/eval/step_<N>/metrics.json, a predictions TSV per split (index, prediction), the GLUE
submission files of `eval.predict_splits`, seq2seq and LM samples (<split>_samples.txt) and prints a table.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

import decoding
import objectives
from core import compile_cache
from core.paths import user_path
from data import tasks
from evaluation import metrics as M
from evaluation import generation, images, predict, qa, submission, text_metrics
from evaluation.config import EvalConfig
from objectives import Generation, Scoring
from trainer import checkpoint, runner
from trainer.config import TrainConfig, schema_defaults
from trainer.metrics import format_duration

Results = dict[str, dict[str, float]]


# Where eval.py's config fields come from (see effective_config). From the given config: those a resumed run
# may change (how and where it runs), less the training loop's own, plus this process's distributed start-up.
TRAINING_FIELDS: tuple[str, ...] = ('train.*', 'optim.*')
GIVEN_FIELDS: tuple[str, ...] = tuple(
    p for p in checkpoint.RUNTIME_FIELDS if not any(fnmatch.fnmatchcase(p, t) for t in TRAINING_FIELDS)
) + ('distributed.*',)


def effective_config(saved: ml_collections.ConfigDict | Mapping[str, Any],
                     given: ml_collections.ConfigDict | None = None, *,
                     where: str = 'the run') -> ml_collections.ConfigDict:
  """The config a checkpoint is evaluated with: `saved` (the config its run was trained with) and, of `given`
  (eval.py's --config with its overrides; None: the saved config as it is), only what may differ.

  - GIVEN_FIELDS come from `given`: eval.*, mesh.*, distributed.*, data.data_dir, data.worker_count and the
    model's execution fields (model/config.py EXECUTION_FIELDS): how and where it runs, not what it computes.
  - TRAINING_FIELDS (train.*, optim.*: batch size, warmup, steps, eval_batches, init_from, ...) come from
    `saved` whatever `given` says: they matter for training only (a given value that differs is named in a note).
  - Every other field (model.*, data.*) changes what is computed: `given` must hold the saved value, else a
    ConfigMismatchError names the fields. A field the saved config lacks (added since) counts as its default
    (trainer/config.schema_defaults).
  Without `given` there is no way to change eval.* from eval.py's command line: pass --config for that.
  """
  saved_json = checkpoint.config_to_json(saved)
  train = saved_json.get('train', {})
  if train.get('num_epochs') and train.get('num_steps'):  # saved before the two became exclusive: epochs won
    train['num_steps'] = 0
  if given is None:
    return ml_collections.ConfigDict(saved_json)
  diffs = checkpoint.config_differences(saved_json, given, allowed=GIVEN_FIELDS, defaults=schema_defaults())
  training = [d for d in diffs if _matches(d[0], TRAINING_FIELDS)]
  computed = [d for d in diffs if not _matches(d[0], TRAINING_FIELDS)]
  if computed:
    fields = ', '.join(f'{path} (trained {a!r}, given {b!r})' for path, a, b in computed)
    raise checkpoint.ConfigMismatchError(
        f'the config given differs from the one {where} was trained with in {fields}: these change what is '
        'computed and must match the trained run; set them back, or give no --config (the saved config is the '
        'default)')
  if training:
    runner.say('as trained, not as given (training only): ' + ', '.join(f'{p}={a!r}' for p, a, _ in training))
  given_json = checkpoint.config_to_json(given)
  for pattern in GIVEN_FIELDS:
    section, _, field = pattern.partition('.')
    if section not in given_json:
      continue
    if field == '*':  # the whole section as given (a section given in part means its defaults for the rest)
      saved_json[section] = given_json[section]
    else:
      for key in fnmatch.filter(given_json[section], field):
        saved_json.setdefault(section, {})[key] = given_json[section][key]
  return ml_collections.ConfigDict(saved_json)


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
  return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def trained_config(workdir: Path, step: str | int) -> tuple[int, ml_collections.ConfigDict | None]:
  """(the step number `step` names, the config saved with it): a missing workdir, one without a committed
  checkpoint and an unknown step are errors here, before anything is built or written."""
  if not workdir.is_dir():
    raise FileNotFoundError(f'--workdir {workdir}: no such folder{_sibling_hint(workdir)}; give the workdir of a '
                            'trained run')
  if not checkpoint.checkpoint_dir(workdir).is_dir():  # orbax is not even opened on a folder without runs
    raise FileNotFoundError(_no_checkpoint(workdir))
  with checkpoint.Checkpointer(workdir, read_only=True, best_metric='loss', best_mode='min') as ckpt:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(_no_checkpoint(workdir))
    resolved = ckpt.resolve_step(step)  # FileNotFoundError naming the steps there are
    return resolved, ckpt.saved_config(resolved)


def _no_checkpoint(workdir: Path) -> str:
  return (f'--workdir {workdir} holds no checkpoint{_sibling_hint(workdir)}: train first (python train.py --config '
          f'... --workdir {workdir})')


def _sibling_hint(workdir: Path) -> str:
  """' (did you mean <sibling>?)' for the closest-named run folder beside `workdir`, else ''."""
  try:
    runs = [p.name for p in workdir.parent.iterdir() if p != workdir and checkpoint.checkpoint_dir(p).is_dir()]
  except OSError:
    return ''
  close = difflib.get_close_matches(workdir.name, runs, n=1)
  return f' (did you mean {workdir.parent / close[0]}?)' if close else ''


def evaluate_checkpoint(config: ml_collections.ConfigDict | None, workdir: str | Path, *,
                        step: str | int = 'latest', out_dir: str | Path | None = None) -> Results:
  """Scores the checkpoint `step` of `workdir` on `eval.splits`; returns {split: {metric: value}}.

  `config` None evaluates with the config saved with the checkpoint; a given one may change eval.*, the mesh
  and other fields that do not change the scores (effective_config)."""
  workdir = user_path(workdir)
  resolved, saved = trained_config(workdir, step)
  if saved is None and config is None:
    raise FileNotFoundError(f'--workdir {workdir}: its checkpoint of step {resolved} holds no config; give the '
                            '--config it was trained with')
  if saved is not None:
    config = effective_config(saved, config, where=f'{workdir} (step {resolved})')
  eval_cfg = EvalConfig.from_config(config)
  compile_cache.enable(TrainConfig.from_dict(config.train).compilation_cache)  # before anything compiles
  run = runner.build_run(config, workdir)  # every input checked; nothing compiled yet
  # eval.generate over the task's defaults here, so that a setting the task cannot decode with fails before any
  # compile; the tokenizer is the run's (every split's task shares it).
  gen_cfg = (generation.generate_config(eval_cfg, run.task.tokenizer, run.data)
             if objectives.spec(run.data.objective).generation is not Generation.NONE else None)
  params = checkpoint.restore_params(workdir, run.abstract.params, resolved)
  out = user_path(out_dir) if out_dir else workdir / 'eval' / f'step_{resolved}'
  batch_size = eval_cfg.batch_size or run.train.batch_size
  predictor = predict.Predictor(run.module, run.mesh)
  results: Results = {}
  # Evaluation never augments, not even the training split. build_run built the first split's task already (the
  # run's evaluation during training): it is scored as it is, not read and tokenized a second time.
  split_tasks = {split: run.eval_task if i == 0 else
                 tasks.build_task(run.data, split, seed=run.train.seed, tokenizer=run.task.tokenizer, augment=False)
                 for i, split in enumerate(eval_cfg.splits)}
  for split, task in split_tasks.items():
    results[split] = score_split(run, predictor, params, task, eval_cfg, gen_cfg, batch_size, out / f'{split}.tsv')
  for split, key in zip(eval_cfg.predict_splits, eval_cfg.submission):
    task = tasks.build_task(run.data, split, seed=run.train.seed, tokenizer=run.task.tokenizer, augment=False)
    write_submission(run, predictor, params, task, key, batch_size, out / 'submission')
  extra: dict[str, Any] = {}
  if eval_cfg.baselines:
    train = tasks.build_task(run.data, tasks.TRAIN_SPLIT, seed=run.train.seed, augment=False)
    for split, figures in images.baselines(eval_cfg.baselines, train, split_tasks).items():
      results[split] |= figures
  if objectives.spec(run.data.objective).per_class and (timing := images.training_seconds(workdir)) is not None:
    extra['training_seconds'] = timing[0]
  if jax.process_index() == 0:
    submission.write_metrics_json(out / 'metrics.json', {'step': resolved, 'source': run.data.source, **results,
                                                         **extra})
    print(format_table(results, title=f'{run.data.source} step {resolved} ({out})'), flush=True)
    if 'training_seconds' in extra:
      seconds, first, last = timing
      print(f'training time: {seconds:.1f} s ({format_duration(seconds)}) from step {first} to step {last} '
            f'(metrics.jsonl wall_time; compiling and the first step excluded)', flush=True)
  return results


def score_split(run: runner.Run, predictor: predict.Predictor, params: Any, task: tasks.Task, eval_cfg: EvalConfig,
                gen_cfg: decoding.GenerateConfig | None, batch_size: int, predictions_path: Path) -> dict[str, float]:
  """The metrics of one split; classification and regression also write their predictions there. `gen_cfg`:
  how the objective's text is generated (generation.generate_config), None for those that generate none."""
  limit = eval_cfg.max_examples or None
  batches = predict.split_batches(task, batch_size, limit=limit)
  spec = objectives.spec(run.data.objective)
  if spec.scoring is Scoring.SPANS:
    return score_spans(task, predictor.span_logits(params, batches), eval_cfg, predictions_path)
  if spec.scoring in (Scoring.CLASSES, Scoring.VALUES):
    regression = spec.scoring is Scoring.VALUES
    preds = predictor.classes(params, batches, regression=regression)
    labels = _labels(task, len(preds))
    if jax.process_index() == 0:
      submission.write_predictions(predictions_path, preds, label_names=task.info.label_names or None,
                                   regression=regression)
    out = M.compute(eval_cfg.metrics, preds, labels) | {'examples': float(len(preds))}
    if spec.per_class:
      names = task.info.label_names or tuple(str(k) for k in range(task.info.num_classes))
      out |= images.per_class_accuracy(preds, labels, names)
      if jax.process_index() == 0:
        matrix = images.confusion_matrix(preds, labels, len(names))
        accuracy = np.trace(matrix) / max(matrix.sum(), 1)
        images.plot_confusion(matrix, names, predictions_path.with_name(f'{predictions_path.stem}_confusion.png'),
                              f'{task.config.source} {task.source.split}: accuracy {accuracy:.4f}')
    return out
  sums = predictor.token_sums(params, batches)
  loss, weight = float(sums['loss'].sum()), float(sums['weight'].sum())
  out = {'loss': loss / max(weight, 1.0), 'tokens': weight}
  if 'sop_loss' in sums:  # mlm_sop: loss is what it minimises, the MLM mean plus the sentence order's
    sop = float(sums['sop_loss'].sum()) / max(float(sums['sop_weight'].sum()), 1.0)
    out = {'loss': out['loss'] + sop, 'mlm_loss': out['loss'], 'sop_loss': sop, 'tokens': weight}
  for metric in eval_cfg.metrics:
    match metric:
      case M.Metric.PERPLEXITY:
        out['perplexity'] = M.perplexity(loss, weight)
      case M.Metric.ACCURACY:
        out['accuracy'] = float(sums['correct'].sum()) / max(weight, 1.0)
      case M.Metric.BITS_PER_BYTE:
        out['bits_per_byte'] = M.bits_per_byte(loss, target_bytes(task, limit))
      case M.Metric.SOP_ACCURACY:
        out['sop_accuracy'] = float(sums['sop_correct'].sum()) / max(float(sums['sop_weight'].sum()), 1.0)
  if spec.generation is Generation.TRANSLATION and set(eval_cfg.metrics) & set(objectives.TEXT_METRICS):
    hypotheses, references = generation.translate_split(run, params, task, gen_cfg, batch_size, limit)
    sources = [task.source[i][task.info.text_features[0]] for i in range(len(hypotheses))]
    out |= text_scores(hypotheses, references, eval_cfg.metrics)
    # The copy-the-source baseline: what a model that learnt nothing but copying would score (names, numbers and
    # shared words give it a floor well above 0 between related languages).
    out |= {f'source_copy_{k}': v for k, v in text_scores(sources, references, eval_cfg.metrics, rouge=False).items()}
    if jax.process_index() == 0:
      _write_texts(predictions_path, hypotheses)
      samples = [f'source:    {source}\ngenerated: {hyp}\nreference: {ref}'
                 for source, hyp, ref in zip(sources[:eval_cfg.num_samples], hypotheses, references)]
      if samples:
        predictions_path.with_name(f'{predictions_path.stem}_samples.txt').write_text(
            f'# {gen_cfg.strategy.value} decoding\n\n' + '\n\n'.join(samples) + '\n', encoding='utf-8')
      for sample in samples:
        print('  ' + sample.replace('\n', '\n  '), flush=True)
  if spec.generation is Generation.SAMPLES and eval_cfg.num_samples:
    samples = generation.lm_samples(run, params, task, gen_cfg, eval_cfg.num_samples, eval_cfg.prompt_len,
                                    jax.random.key(run.train.seed))
    if jax.process_index() == 0:
      text = '\n\n'.join(f'{prompt} >>> {continuation}' for prompt, continuation in samples)
      predictions_path.parent.mkdir(parents=True, exist_ok=True)
      predictions_path.with_name(f'{predictions_path.stem}_samples.txt').write_text(text + '\n')
      print(f'samples ({gen_cfg.strategy.value}):\n{text}', flush=True)
  return out


def score_spans(task: tasks.Task, logits: np.ndarray, eval_cfg: EvalConfig, predictions_path: Path
                ) -> dict[str, float]:
  """Extractive QA: SQuAD's EM and F1 of the answers from `logits` (F, T, 2), the first F features of the split,
  the word-overlap baseline's on the same questions, and <split>_predictions.json / _nbest.json."""
  nbest = qa.predict_answers(task.source, logits, n_best=eval_cfg.n_best, max_answer_length=eval_cfg.max_answer_length,
                             null_threshold=eval_cfg.null_threshold, unanswerable=task.info.unanswerable)
  golds = qa.golds_of(task.source.examples, list(nbest))
  wanted = set(eval_cfg.metrics)
  out = {k: v for k, v in qa.squad_scores(qa.best_answers(nbest), golds).items() if k in wanted}
  baseline = qa.squad_scores(qa.overlap_baseline(task.source.examples), golds)
  out |= {f'overlap_{k}': v for k, v in baseline.items() if k in wanted}
  out['questions'] = float(len(golds))
  if jax.process_index() == 0:
    qa.write_predictions(predictions_path.with_name(f'{predictions_path.stem}_predictions.json'), nbest)
  return out


def text_scores(hypotheses: list[str], references: list[str], metrics: tuple[M.Metric, ...], *,
                rouge: bool = True) -> dict[str, float]:
  """The text metrics among `metrics` (BLEU, chrF and, unless rouge=False, ROUGE) of hypotheses against references."""
  out = {}
  if M.Metric.BLEU in metrics:
    out['bleu'] = text_metrics.bleu(hypotheses, references)
  if M.Metric.CHRF in metrics:
    out['chrf'] = text_metrics.chrf(hypotheses, references)
  rouge_types = [m for m in metrics if m in (M.Metric.ROUGE1, M.Metric.ROUGE2, M.Metric.ROUGEL)]
  if rouge and rouge_types:
    out |= text_metrics.rouge(hypotheses, references, rouge_types)
  return out


def _write_texts(path: Path, texts: list[str]) -> None:
  """Generated texts as index<TAB>prediction rows (tabs and newlines inside a text become spaces)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = ['index\tprediction'] + [f'{i}\t{" ".join(t.split())}' for i, t in enumerate(texts)]
  path.write_text('\n'.join(rows) + '\n', encoding='utf-8')


def _labels(task: tasks.Task, count: int) -> np.ndarray:
  name = task.info.label_feature
  return np.asarray([task.source[i][name] for i in range(count)])


def target_bytes(task: tasks.Task, limit: int | None) -> int:
  """UTF-8 bytes of the text the model predicted (the weighted targets of each row, decoded): the
  denominator of bits per byte, which unlike perplexity compares models with different tokenizers."""
  total = 0
  for i in range(len(task.source) if limit is None else min(limit, len(task.source))):
    example = task.transform(i, task.source[i])
    ids = np.asarray(example['targets'])[np.asarray(example['loss_weights']) > 0]
    total += len(task.tokenizer.decode(ids).encode('utf-8'))
  return total


def write_submission(run: runner.Run, predictor: predict.Predictor, params: Any, task: tasks.Task, key: str, batch_size: int, folder: Path) -> Path:
  """The GLUE leaderboard file of task `key` ('sst2', 'mnli_matched', ...) from the predictions on `task`."""
  spec = submission.submission_spec(key)
  regression = objectives.spec(run.data.objective).scoring is Scoring.VALUES
  if spec.regression != regression:
    raise ValueError(f'eval.submission={key!r} expects {"scores" if spec.regression else "classes"}, but '
                     f'data.objective={run.data.objective.value}')
  names = task.info.label_names
  if spec.label_names not in (None, ('0', '1')) and tuple(names) != spec.label_names:
    raise ValueError(f'eval.submission={key!r}: the source names its classes {list(names)}, GLUE expects '
                     f'{list(spec.label_names)} in that order')
  preds = predictor.classes(params, predict.split_batches(task, batch_size), regression=regression)
  path = folder / spec.filename
  if jax.process_index() == 0:
    submission.write_predictions(path, preds, label_names=spec.label_names, regression=spec.regression)
    print(f'wrote {len(preds)} predictions of {task.config.source} {task.source.split} to {path}', flush=True)
  return path


def format_table(results: Mapping[str, Mapping[str, float]], title: str = '') -> str:
  """A plain-text table: one row per (split, metric)."""
  rows = [(split, name, _format_value(value)) for split, values in results.items() for name, value in values.items()]
  widths = [max(len(r[i]) for r in rows + [('split', 'metric', 'value')]) for i in range(3)]
  line = '  '.join('-' * w for w in widths)
  body = [f'{s:<{widths[0]}}  {m:<{widths[1]}}  {v:>{widths[2]}}' for s, m, v in rows]
  header = f'{"split":<{widths[0]}}  {"metric":<{widths[1]}}  {"value":>{widths[2]}}'
  return '\n'.join(([title] if title else []) + [header, line] + body)


def _format_value(value: float) -> str:
  if math.isfinite(value) and float(value).is_integer() and abs(value) >= 1:
    return f'{int(value):,}'
  return f'{value:.4f}'
