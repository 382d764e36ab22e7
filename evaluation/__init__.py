"""Evaluation: task metrics (numpy), generation metrics (sacrebleu, rouge-score), GLUE submission files.

  metrics         Metric enum; accuracy, f1, matthews_corr, pearson, spearman, compute; perplexity,
                  bits_per_byte
  text_metrics    bleu, rouge (their packages are imported on first use, so this import stays cheap)
"""

from evaluation.metrics import (Metric, accuracy, bits_per_byte, compute, f1, matthews_corr, pearson,
                                perplexity, spearman)
from evaluation.text_metrics import bleu, rouge

__all__ = ['Metric', 'accuracy', 'f1', 'matthews_corr', 'pearson', 'spearman', 'compute', 'perplexity',
           'bits_per_byte', 'bleu', 'rouge']
