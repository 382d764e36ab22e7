"""sweep.py and plot.py end to end: a 2x2 grid run two cells at a time, its report, a re-run that launches
nothing, an interrupted cell that resumes, the printed commands, failing cells, and every bad sweep spec.

The cells are tiny GPTs (1 layer, width 32, 16 tokens, batch 4, 4 steps) on one CPU device, sharing one
SentencePiece vocabulary (trained once, here) and one XLA compilation cache. The grid's first axis
(train.keep) leaves the compiled programs alone, so the first two cells (learned and rope positions) compile
the two programs and the other two find them in the cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

from configs import gpt_tiny
from data import tasks
from trainer import report, sweep, sweep_cells

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'configs/gpt_tiny.py'
SWEEPS = ('train.keep=2,3', 'model.position=learned,rope')
VARIANTS = ('keep=2,position=learned', 'keep=2,position=rope', 'keep=3,position=learned', 'keep=3,position=rope')
TINY = ('--config.model.d_model=32', '--config.model.num_heads=2', '--config.model.d_ff=64',
        '--config.model.num_layers=1', '--config.model.max_len=64', '--config.model.vocab_size=600',
        '--config.data.seq_len=16', '--config.train.batch_size=4', '--config.train.eval_batches=1',
        '--config.train.num_steps', '4',  # a value as the next argument: passed on verbatim as well
        '--config.train.log_every=1', '--config.train.eval_every=2', '--config.train.checkpoint_every=2')
TIMEOUT = 300


@pytest.fixture(scope='module')
def env(tmp_path_factory) -> dict[str, str]:
  """One CPU device (conftest's eight would not divide batch 4), no XLA backend optimisations (half of each
  compile, nothing gained for these tiny models) and a compilation cache for the cells."""
  xla_flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', ''))
  xla_flags = (xla_flags + ' --xla_backend_optimization_level=0').strip()
  return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags,
              JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('xla_cache')),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


@pytest.fixture(scope='module')
def overrides(tmp_path_factory) -> tuple[str, ...]:
  """TINY with a 600-piece BPE vocabulary trained once, for every cell."""
  data = gpt_tiny.get_config().data
  data.tokenizer, data.seq_len = 'sentencepiece:auto,vocab_size=600,algorithm=bpe', 16
  folder = tmp_path_factory.mktemp('tokenizer')
  tasks.build_task(tasks.DataConfig.from_dict(data), 'train', seed=0, tokenizer_dir=folder)
  (model_file,) = folder.glob('*.model')
  return TINY + (f'--config.data.tokenizer=sentencepiece:{model_file}',)


def program(name: str, args: list[str] | tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, name, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT)


def sweep_args(workdir: Path, overrides: tuple[str, ...], *extra: str) -> list[str]:
  return ['--config', CONFIG, *(f'--sweep={s}' for s in SWEEPS), '--workdir', str(workdir), *extra, *overrides]


@dataclasses.dataclass(frozen=True)
class Swept:
  workdir: Path
  printed: list[str]  # --print_commands
  first: subprocess.CompletedProcess  # the sweep, --parallel 2
  logs: dict[str, str]  # every cell's train.log after it
  second: subprocess.CompletedProcess  # the same command again
  logs_after_second: dict[str, str]
  loss_before: float  # the interrupted cell's final loss before it was interrupted
  unfinished_report: str  # sweep.py --report's results.md while that cell was unfinished
  third: subprocess.CompletedProcess  # the same command once more: the interrupted cell resumes


def read_logs(workdir: Path) -> dict[str, str]:
  return {v: (workdir / v / 'seed_0' / 'train.log').read_text() for v in VARIANTS}


@pytest.fixture(scope='module')
def swept(env, overrides, tmp_path_factory) -> Swept:
  workdir = tmp_path_factory.mktemp('sweep') / 'pos'
  printed = program('sweep.py', sweep_args(workdir, overrides, '--print_commands'), env)
  assert printed.returncode == 0, printed.stderr
  first = program('sweep.py', sweep_args(workdir, overrides, '--parallel=2'), env)
  assert first.returncode == 0, first.stdout + first.stderr
  logs = read_logs(workdir)
  second = program('sweep.py', sweep_args(workdir, overrides, '--parallel=2'), env)
  logs_after_second = read_logs(workdir)
  # A cell killed after its checkpoint of step 2: no done.json, no checkpoint 4 (metrics of steps 3-4 remain,
  # as a killed run leaves them; the resumed run drops them).
  cell = workdir / VARIANTS[1] / 'seed_0'
  loss_before = json.loads((cell / 'done.json').read_text())['final']['loss']
  (cell / 'done.json').unlink()
  shutil.rmtree(cell / 'checkpoints' / '4')
  reported = program('sweep.py', ['--report', str(workdir)], env)
  assert reported.returncode == 0, reported.stderr
  unfinished_report = (workdir / 'results.md').read_text()
  third = program('sweep.py', sweep_args(workdir, overrides, '--parallel=2'), env)
  return Swept(workdir, printed.stdout.splitlines(), first, logs, second, logs_after_second, loss_before,
               unfinished_report, third)


def test_print_commands_are_plain_train_commands(swept, overrides):
  expected = []
  for variant in VARIANTS:
    keep, position = re.fullmatch(r'keep=(\d),position=(\w+)', variant).groups()
    expected.append(shlex.join([sys.executable, str(ROOT / 'train.py'), '--config', str(ROOT / CONFIG), '--workdir',
                                str(swept.workdir / variant / 'seed_0'), f'--config.train.keep={keep}',
                                f'--config.model.position={position}', '--config.train.seed=0', *overrides]))
  assert swept.printed == expected
  # ... and they are what the sweep ran: each log starts with its command.
  for variant, line in zip(VARIANTS, expected):
    assert swept.logs[variant].splitlines()[0].endswith(line)


def test_grid_runs_every_cell_and_reports(swept):
  out = swept.first.stdout
  assert len(re.findall(r'^\[\d/4\] start ', out, re.MULTILINE)) == 4
  assert len(re.findall(r'^\[\d/4\] done .*: validation loss \d+\.\d{4}$', out, re.MULTILINE)) == 4
  assert '[4/4] done' in out
  for variant in VARIANTS:
    done = json.loads((swept.workdir / variant / 'seed_0' / 'done.json').read_text())
    assert done['step'] == 4 and done['final']['loss'] > 0
  md = (swept.workdir / 'results.md').read_text()
  table = [line for line in md.splitlines() if line.startswith('| ')]
  assert table[0] == ('| variant | seeds | val loss | val accuracy | val perplexity | params | tokens/s | wall time | '
                      'best step | status |')
  rows = [[c.strip() for c in line.strip('|').split('|')] for line in table[1:]]
  assert sorted(r[0].strip('`') for r in rows) == sorted(VARIANTS)
  losses = [float(r[2]) for r in rows]
  assert losses == sorted(losses)  # sorted by final validation loss
  assert all(r[1] == '1/1' and r[8] == '4' and r[9] == 'done' for r in rows)
  # The parameter count is the runner's (its 'initialising N parameters' line); learned positions add 64 x 32.
  params = {r[0].strip('`'): int(r[5].replace(',', '')) for r in rows}
  for variant in VARIANTS:
    assert f'initialising {params[variant]:,} parameters' in swept.logs[variant]
  assert params['keep=2,position=learned'] - params['keep=2,position=rope'] == 64 * 32
  results = json.loads((swept.workdir / 'results.json').read_text())
  assert [v['variant'] for v in results['variants']] == [r[0].strip('`') for r in rows]
  (seed,) = results['variants'][0]['seeds']
  assert seed['seed'] == 0 and seed['state'] == 'finished' and seed['tokens_per_sec'] > 0
  assert results['variants'][0]['final']['loss'] == {'mean': pytest.approx(losses[0], abs=1e-4), 'std': None}
  with Image.open(swept.workdir / 'curves.png') as image:
    image.verify()
  with Image.open(swept.workdir / 'curves.png') as image:
    assert image.format == 'PNG' and image.size == (1280, 420)


def test_rerun_launches_nothing(swept):
  assert swept.second.returncode == 0, swept.second.stderr
  assert ' start ' not in swept.second.stdout
  assert len(re.findall(r': finished earlier, validation loss', swept.second.stdout)) == 4
  assert swept.logs_after_second == swept.logs


def test_interrupted_cell_resumes(swept):
  variant = VARIANTS[1]
  row = next(line for line in swept.unfinished_report.splitlines() if f'`{variant}`' in line)
  assert row.endswith('| unfinished: seed 0 unfinished (step 2/4) |') and '| 0/1 |' in row
  assert swept.third.returncode == 0, swept.third.stderr
  out = swept.third.stdout
  assert re.findall(r'^\[\d/4\] start (.*)$', out, re.MULTILINE) == [f'{variant}/seed_0 (resuming from step 2)']
  assert len(re.findall(r': finished earlier', out)) == 3
  log = (swept.workdir / variant / 'seed_0' / 'train.log').read_text()
  assert 'resumed from step 2' in log
  done = json.loads((swept.workdir / variant / 'seed_0' / 'done.json').read_text())
  assert done['final']['loss'] == pytest.approx(swept.loss_before, abs=1e-5)  # resumed exactly


def test_other_spec_in_the_workdir_is_an_error(swept, env, overrides):
  before = sorted(p.name for p in swept.workdir.iterdir())
  result = program('sweep.py', sweep_args(swept.workdir, overrides, '--seeds=2'), env)
  assert result.returncode == 2
  assert result.stderr.count('\n') == 1
  assert 'sweep.json holds another sweep: seeds [0] there, [0, 1] here' in result.stderr
  assert sorted(p.name for p in swept.workdir.iterdir()) == before


def test_plot_draws_sweeps_and_runs(swept, env, tmp_path):
  out = tmp_path / 'compare.png'
  result = program('plot.py', [str(swept.workdir), str(swept.workdir / VARIANTS[0] / 'seed_0'), f'--out={out}'], env)
  assert result.returncode == 0, result.stderr
  with Image.open(out) as image:
    image.verify()
  with Image.open(out) as image:
    assert image.format == 'PNG' and image.size == (1280, 840)
  _, series = report.workdir_series([swept.workdir, swept.workdir / VARIANTS[0] / 'seed_0'])
  assert [s.label for s in series] == [f'pos/{v}' for v in VARIANTS] + [f'pos/{VARIANTS[0]}/seed_0']


def test_failed_cell_is_reported_and_the_sweep_exits_1(env, overrides, tmp_path):
  # data.seq_len=16 does not fit a learned position table of 8: train.py fails once it has read the data.
  result = program('sweep.py', ['--config', CONFIG, '--sweep=model.max_len=8', '--workdir', str(tmp_path / 's'),
                                *(o for o in overrides if 'max_len' not in o)], env)
  assert result.returncode == 1
  assert re.search(r'^\[1/1\] FAILED max_len=8/seed_0 \(exit 2\): train.py: error: data.seq_len=16 exceeds '
                   r'model.max_len=8', result.stdout, re.MULTILINE)
  assert re.fullmatch(r'sweep.py: error: 1 of 1 cells failed \(.*\): max_len=8/seed_0: train.py: error: '
                      r'data.seq_len=16 exceeds model.max_len=8.*\n', result.stderr)
  assert (tmp_path / 's' / 'results.md').is_file()


@pytest.mark.parametrize('args', [['--sweep', 'model.position'], ['--sweep', 'model.position=learnt']],
                         ids=['malformed', 'rejected_value'])
def test_bad_spec_fails_in_one_line_and_creates_nothing(env, tmp_path, args):
  result = program('sweep.py', ['--config', CONFIG, *args, '--workdir', str(tmp_path / 's')], env)
  assert result.returncode == 2
  assert re.fullmatch(rf'sweep.py: error: --sweep {args[1]}[:=].*\n', result.stderr)
  assert not (tmp_path / 's').exists()


BAD_SPECS = [
    (['model.position'], None, (), r"--sweep model.position: expected <section>.<field>=<value>,<value>"),
    (['model.position='], None, (), r'--sweep model.position=: an empty value'),
    (['model.position=rope,rope'], None, (), r'--sweep model.position=rope,rope: rope given twice'),
    (['model.position=rope', 'model.position=learned'], None, (),
     r'--sweep model.position=learned: model.position is swept twice \(also --sweep model.position=rope\)'),
    (['model.postion=rope'], None, (),
     r"--sweep model.postion=rope: model config: unknown field\(s\) \['postion'\].*did you mean 'postion' -> "
     r"'position'\?"),
    (['modle.position=rope'], None, (), r"--sweep modle.position=rope: top-level config: .*'modle' -> 'model'"),
    (['model=rope'], None, (), r'--sweep model=rope: model is a section'),
    (['model.position=learned,learnt'], None, (),
     r"--sweep model.position=learned,learnt: model.position='learnt': unknown position; valid values are"),
    (['model.d_model=32,abc'], None, (), r"--sweep model.d_model=32,abc: .*--config.model.d_model=abc: invalid"),
    (['model.d_model=32,032'], None, (), r"--sweep model.d_model=32,032: '32' and '032' are the same value"),
    (['model.num_heads=3'], None, (), r'--sweep model.num_heads=3: model.num_heads=3: must divide d_model=128'),
    (['model.position=rope'], 0, (), r'--seeds=0: must be >= 1'),
    (['distill.temperature=2,0'], None, (), r'--sweep distill.temperature=2,0: distill.temperature=0.0: must be a number > 0'),
    (['train.seed=1,2'], 2, (), r'--seeds=2 and --sweep train.seed=1,2: both set the seeds'),
    (['model.position=rope'], None, ('--config.model.position=learned',),
     r'--config.model.position=learned: model.position is set by --sweep model.position=rope as well'),
    (['model.position=rope'], None, ('--config.train.seed=3',),
     r'--config.train.seed=3: the sweep sets train.seed'),
    (['model.position=rope', 'model.norm_placement=pre', 'model.num_heads=3,4'], None, (),
     r'--sweep model.num_heads=3,4: model.num_heads=3: must divide'),
    (['model.d_model=36', 'model.num_heads=4,8'], None, (),  # each value fits the config; 36 and 8 do not
     r'--sweep model.d_model=36 --sweep model.num_heads=4,8: the cell d_model=36,num_heads=8/seed_0: '
     r'model.num_heads=8: must divide d_model=36'),
]


@pytest.mark.parametrize('sweeps,seeds,extra,message', BAD_SPECS)
def test_bad_spec_names_it(sweeps, seeds, extra, message, tmp_path):
  base = sweep.load_config(str(ROOT / CONFIG), extra)
  with pytest.raises(sweep.SweepError) as error:
    spec = sweep.make_spec(str(ROOT / CONFIG), sweeps, seeds=seeds, overrides=extra, base=base)
    sweep.plan(spec, tmp_path / 's')
  assert re.match(message, str(error.value)), str(error.value)
  assert '\n' not in str(error.value)


def test_variant_names_are_filesystem_safe(tmp_path):
  spec = sweep.Spec(str(ROOT / CONFIG), (sweep.Axis.parse('data.tokenizer=a/b:c,d e'),
                                          sweep.Axis.parse('eval.max_examples=0,1')), (0, 1), ())
  assert [name for name, _ in sweep.variants(spec)] == [
      'tokenizer=a_b_c,max_examples=0', 'tokenizer=a_b_c,max_examples=1', 'tokenizer=d_e,max_examples=0',
      'tokenizer=d_e,max_examples=1']
  assert [c.name for c in sweep.cells(spec, tmp_path)][:3] == [
      'tokenizer=a_b_c,max_examples=0/seed_0', 'tokenizer=a_b_c,max_examples=1/seed_0',
      'tokenizer=d_e,max_examples=0/seed_0']
  clash = sweep.Spec(spec.config, (sweep.Axis.parse('data.tokenizer=a/b,a:b'),), (0,), ())
  with pytest.raises(sweep.SweepError, match=r"\['a/b'\] and \['a:b'\] both make the folder name 'tokenizer=a_b'"):
    sweep.variants(clash)


def test_cell_state_without_done_json(tmp_path):
  """A cell run outside the sweep (a printed command) counts as finished by its checkpoint and evaluation."""
  (tmp_path / 'checkpoints' / '4').mkdir(parents=True)
  (tmp_path / 'metrics.jsonl').write_text(
      '{"step": 4, "split": "train", "wall_time": 1.0, "loss": 2.0}\n'
      '{"step": 4, "split": "eval", "wall_time": 2.0, "loss": "NaN"}\n{"step": 5, "spl')  # a line being written
  assert sweep_cells.cell_state(tmp_path, 4) == (sweep_cells.CellState.FINISHED, 4)
  assert sweep_cells.cell_state(tmp_path, 6) == (sweep_cells.CellState.PARTIAL, 4)
  done = sweep_cells.mark_done(tmp_path)
  assert json.loads((tmp_path / 'done.json').read_text()) == {'step': 4, 'final': {'loss': 'NaN'}, 'wall_time_s': 1.0}
  assert done['step'] == 4


def test_config_overrides_are_taken_verbatim():
  argv = ['sweep.py', '--config', CONFIG, '--config.train.num_steps', '4', '--sweep=model.position=rope',
          "--config.data.tokenizer=sentencepiece:auto,vocab_size=600", '--workdir', 'x']
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values, sys_argv=argv)
  flags.DEFINE_multi_string('sweep', [], '', flag_values=values)
  flags.DEFINE_string('workdir', None, '', flag_values=values)
  values(argv)
  assert sweep.config_overrides(argv, values) == (
      '--config.train.num_steps', '4', '--config.data.tokenizer=sentencepiece:auto,vocab_size=600')


def write_run(workdir: Path, evals: dict[int, float], rates: list[float], *, done: bool, checkpoint: int = 0) -> None:
  """A cell's metrics.jsonl (eval losses by step, train rates a second apart) and its done.json / checkpoint."""
  workdir.mkdir(parents=True)
  rows = [{'step': i + 1, 'split': 'train', 'wall_time': 10.0 + i, 'tokens_per_sec': r} for i, r in enumerate(rates)]
  rows += [{'step': s, 'split': 'eval', 'wall_time': 20.0 + s, 'loss': loss} for s, loss in evals.items()]
  (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  if done:
    sweep_cells.mark_done(workdir)
  if checkpoint:
    (workdir / 'checkpoints' / str(checkpoint)).mkdir(parents=True)


def test_report_of_two_seeds_with_an_unfinished_one(tmp_path):
  spec = sweep.Spec(str(ROOT / CONFIG), (sweep.Axis.parse('model.position=learned,rope'),), (0, 1),
                    ('--config.train.num_steps=4',))
  sweep.save_spec(spec, tmp_path)
  write_run(tmp_path / 'position=learned' / 'seed_0', {2: 5.0, 4: 4.0}, [100, 300, 200], done=True)
  write_run(tmp_path / 'position=learned' / 'seed_1', {2: 5.2, 4: 4.2}, [400], done=True)
  write_run(tmp_path / 'position=rope' / 'seed_0', {2: 4.5, 4: 3.5}, [100], done=True)
  write_run(tmp_path / 'position=rope' / 'seed_1', {2: 4.4}, [100], done=False, checkpoint=2)
  report.write(spec, tmp_path)
  rows = [line for line in (tmp_path / 'results.md').read_text().splitlines() if line.startswith('| `')]
  # rope first: (3.5 + 4.4) / 2 < (4.0 + 4.2) / 2; gpt_tiny's parameters as its docstring states them.
  assert rows == [
      '| `position=rope` | 1/2 | 3.9500 ± 0.6364 | 1,420,800 | 100 | 13s | 4 | '
      'unfinished: seed 1 unfinished (step 2/4) |',
      '| `position=learned` | 2/2 | 4.1000 ± 0.1414 | 1,453,568 | 300 | 14s | 4 | done |']
  learned = json.loads((tmp_path / 'results.json').read_text())['variants'][1]
  assert learned['final']['loss'] == {'mean': pytest.approx(4.1), 'std': pytest.approx(0.02 ** 0.5)}
  assert [(s['seed'], s['final'], s['tokens_per_sec'], s['best_step']) for s in learned['seeds']] == [
      (0, {'loss': 4.0}, 200, 4), (1, {'loss': 4.2}, 400, 4)]
  with Image.open(tmp_path / 'curves.png') as image:
    assert image.size == (1280, 420)


def test_swept_seeds_are_the_seeds(tmp_path):
  base = sweep.load_config(str(ROOT / CONFIG), ())
  spec = sweep.make_spec(str(ROOT / CONFIG), ['train.seed=3,5'], seeds=None, overrides=(), base=base)
  assert (spec.axes, spec.seeds) == ((), (3, 5))
  planned = sweep.plan(spec, tmp_path)
  assert [p.cell.name for p in planned] == ['base/seed_3', 'base/seed_5']
  assert sweep.command(spec, planned[1].cell)[-1] == '--config.train.seed=5'
  assert planned[0].num_steps == 300
