"""A small ViT trained from scratch on scikit-learn's 8x8 handwritten digits (builtin:digits), on a CPU in minutes.

Each 8x8 image is cut into 2x2 patches: [CLS] + 16 patches = 17 tokens through 4 pre-LN layers of width 64, the
classifier on the mean patch (pooling=mean).
AdamW, lr 2e-3 after 100 warmup steps then cosine decay, weight decay 0.05, 150 epochs of batch 64, random crops of
the image padded by one pixel (no flips: a mirrored digit is another shape). The trainer has no label smoothing.
The normalisation is measured on the training split (data/images.py).

Command:
  python -m data.prepare digits          # once (fetches the scikit-learn wheel with pip)
  python train.py --config configs/vit_digits.py --workdir runs/vit_digits
  python eval.py --config configs/vit_digits.py --workdir runs/vit_digits
eval.py scores the validation and test splits: accuracy, each class's, a confusion-matrix PNG per split, and
scikit-learn's logistic regression and RBF SVM fitted on the same training images (eval.baselines), and prints
the ViT's training time.
Expected: ViT accuracy 0.9811 validation, 0.9543 test (measured once: seed 0, 3,429 steps), beside scikit-learn's
logistic regression 0.9686 / 0.9657 and RBF SVM 0.9811 / 0.9886 on the same splits: the test figure is below the
97% the issue asks for. Training time: 21m10s by metrics.jsonl on a shared 2-core CPU under a load of ~10 (about 4
min of CPU: a 60-epoch run took 98 s); 202,186 parameters. Tuning so far (validation / test): [CLS], lr 1e-3, 60
epochs 0.950 / 0.931; mean pooling, lr 2e-3, 100 epochs 0.975 / 0.949; this config 0.981 / 0.954.
"""

from __future__ import annotations

import ml_collections

from configs.presets import CPU_TINY_MODEL, make_config, vit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      vit('tiny', image_size=8, patch_size=2, num_channels=1, head='classifier', num_labels=10, d_model=64,
          num_heads=4, d_ff=256, num_layers=4, pooling='mean', **CPU_TINY_MODEL),
      data=dict(source='builtin:digits', objective='image_classification', seq_len=17, crop_padding=1),
      optim=dict(learning_rate=2e-3, warmup_steps=100, weight_decay=0.05),
      train=dict(num_epochs=150.0, batch_size=64, log_every=50, eval_every=250, eval_batches=10,
                 checkpoint_every=1000),
      eval=dict(splits=('validation', 'test'), baselines=('logistic_regression', 'rbf_svm')))
