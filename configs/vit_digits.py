"""A small ViT trained from scratch on scikit-learn's 8x8 handwritten digits (builtin:digits), on a CPU in minutes.

Each 8x8 image is cut into 4x4 patches: [CLS] + 4 patches = 5 tokens through 4 pre-LN layers of width 64, the
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
Expected: ViT test accuracy 0.9714 (seed 0; validation 1.0000), 0.9733 +- 0.0088 over seeds 0, 1, 2 (test 0.9714,
0.9829, 0.9657; validation 1.0000, 0.9937, 0.9937), beside scikit-learn's logistic regression 0.9657 and RBF SVM
0.9886 on the same test split (validation 0.9686 / 0.9811); 175 test images, so one image is 0.57 points.
Training: 2m49s-3m27s per seed by metrics.jsonl on the 2-core CPU shared with other jobs; 202,186 parameters.
Measured 2026-11-30. How the patch size was chosen, on validation (seed 0, this recipe otherwise): 2x2 patches
(17 tokens) 0.9811 validation / 0.9543 test; with rotations up to 15 degrees (data.rotate=15) 0.9937 / 0.9429
(seed 1: 0.9748 / 0.9314); with dropout 0.1 too 0.9686 / 0.9429; without the crops 0.9623 / 0.9543; 4x4 patches
1.0000 / 0.9714. Earlier: [CLS] pooling, lr 1e-3, 60 epochs 0.950 / 0.931; mean pooling, 100 epochs 0.975 / 0.949.
"""

from __future__ import annotations

import ml_collections

from configs.presets import CPU_TINY_MODEL, make_config, vit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      vit('tiny', image_size=8, patch_size=4, num_channels=1, head='classifier', num_labels=10, d_model=64,
          num_heads=4, d_ff=256, num_layers=4, pooling='mean', **CPU_TINY_MODEL),
      data=dict(source='builtin:digits', objective='image_classification', seq_len=5, crop_padding=1),
      optim=dict(learning_rate=2e-3, warmup_steps=100, weight_decay=0.05),
      train=dict(num_epochs=150.0, batch_size=64, log_every=50, eval_every=250, eval_batches=10,
                 checkpoint_every=1000),
      eval=dict(splits=('validation', 'test'), baselines=('logistic_regression', 'rbf_svm')))
