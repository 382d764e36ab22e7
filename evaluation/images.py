"""What eval.py adds for image classification: per-class accuracy, the confusion-matrix figure, scikit-learn
baselines on the same split, and the model's training time.

  per_class_accuracy(preds, labels, names)    {'accuracy/<name>': fraction of that class's images right}
  confusion_matrix(preds, labels, n)          (n, n) counts: row = the true class, column = the predicted one
  plot_confusion(matrix, names, path, title)  a PNG (matplotlib, Agg backend: no display)
  baselines(kinds, train, splits)             {split: {'<kind>_accuracy': ...}}: scikit-learn models fitted on
                                              the training split's pixel_values, scored on each split
  training_seconds(workdir)                   wall time of the training steps, from metrics.jsonl

The baselines (config.eval.baselines; `configs/vit_digits.py` asks for both) see the same images as the model,
unaugmented and normalised by the same figures, flattened to one vector per image: the classic pixel-vector
baselines of scikit-learn's digits examples, computed by the same eval.py command as the ViT's figures.
scikit-learn is imported only when a baseline is asked for.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from data import tasks
from trainer import metrics as train_metrics


class Baseline(enum.Enum):
  """`config.eval.baselines`: scikit-learn classifiers of the flattened pixel_values."""
  LOGISTIC_REGRESSION = 'logistic_regression'  # multinomial, L2 (C=1), lbfgs
  RBF_SVM = 'rbf_svm'  # SVC with the RBF kernel, C=1, gamma='scale' (scikit-learn's defaults)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
  """{'accuracy/<name>': accuracy over the images of that class}, for the classes present in `labels`."""
  out = {}
  for k, name in enumerate(names):
    mine = labels == k
    if mine.any():
      out[f'accuracy/{name}'] = float(np.mean(predictions[mine] == k))
  return out


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) int64 counts: [true class, predicted class]; unlabelled examples (< 0) left out."""
  keep = labels >= 0
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels[keep].astype(np.int64), predictions[keep].astype(np.int64)), 1)
  return matrix


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
  """The confusion matrix as a PNG: counts in each cell, rows the true classes, columns the predicted ones."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')  # files only; never a display
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  n = len(names)
  side = min(4 + 0.45 * n, 24)
  fig, ax = plt.subplots(figsize=(side, side))
  ax.imshow(matrix, cmap='Blues')
  if n <= 30:  # beyond, the numbers would not be legible
    threshold = matrix.max() / 2
    for (i, j), count in np.ndenumerate(matrix):
      if count:
        ax.text(j, i, str(count), ha='center', va='center', fontsize=8,
                color='white' if count > threshold else 'black')
    ax.set_xticks(range(n), names, rotation=90 if max(len(x) for x in names) > 3 else 0)
    ax.set_yticks(range(n), names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _features(task: tasks.Task) -> tuple[np.ndarray, np.ndarray]:
  """(N, C*H*W) float32 pixel_values and (N,) labels of every example of `task`, in order."""
  examples = [task.transform(i, task.source[i]) for i in range(len(task.source))]
  return (np.stack([e['pixel_values'].reshape(-1) for e in examples]),
          np.array([int(e['label']) for e in examples]))


def baselines(kinds: Sequence[Baseline], train: tasks.Task,
              splits: Mapping[str, tasks.Task]) -> dict[str, dict[str, float]]:
  """{split: {'<kind>_accuracy': accuracy}} of each baseline fitted on `train` (built with augment=False) and
  scored on each split's labelled images."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.svm import SVC  # pylint: disable=import-outside-toplevel

  x_train, y_train = _features(train)
  scored = {split: _features(task) for split, task in splits.items()}
  out: dict[str, dict[str, float]] = {split: {} for split in splits}
  for kind in kinds:
    match kind:
      case Baseline.LOGISTIC_REGRESSION:
        model = LogisticRegression(max_iter=5000)
      case Baseline.RBF_SVM:
        model = SVC(kernel='rbf')
    model.fit(x_train, y_train)
    for split, (x, y) in scored.items():
      keep = y >= 0
      out[split][f'{kind.value}_accuracy'] = float(np.mean(model.predict(x[keep]) == y[keep]))
  return out


def training_seconds(workdir: Path) -> tuple[float, int, int] | None:
  """(seconds, first step, last step) between the first and the last training line of <workdir>/metrics.jsonl
  (their wall_time: the steps after the first, compiling excluded; a resumed run's pause included), or None
  without one."""
  path = workdir / train_metrics.JSONL_NAME
  if not path.is_file():
    return None
  rows = train_metrics.read_metrics(path, train_metrics.Split.TRAIN)
  if len(rows) < 2:
    return None
  return float(rows[-1]['wall_time'] - rows[0]['wall_time']), int(rows[0]['step']), int(rows[-1]['step'])
