"""Evaluation: task metrics (numpy), generation metrics (sacrebleu, rouge-score), GLUE submission files.

  metrics         Metric enum; accuracy, f1, matthews_corr, pearson, spearman, compute; perplexity,
                  bits_per_byte
  text_metrics    bleu, chrf, rouge (their packages are imported on first use, so this import stays cheap)
  submission      GLUE leaderboard TSVs (write/read_predictions, submission_spec/filename) and
                  write_metrics_json
"""

from evaluation.metrics import (Metric, accuracy, bits_per_byte, compute, f1, matthews_corr, pearson,
                                perplexity, spearman)
from evaluation.submission import (SubmissionSpec, read_predictions, submission_filename, submission_spec,
                                   write_metrics_json, write_predictions)
from evaluation.text_metrics import bleu, chrf, rouge

__all__ = ['Metric', 'accuracy', 'f1', 'matthews_corr', 'pearson', 'spearman', 'compute', 'perplexity',
           'bits_per_byte', 'bleu', 'chrf', 'rouge', 'SubmissionSpec', 'submission_spec', 'submission_filename',
           'write_predictions', 'read_predictions', 'write_metrics_json']
