"""ViT-S/4 on CIFAR-10 from scratch (tfds:cifar10): 32x32 images in 4x4 patches ([CLS] + 64 = 65 tokens), 12
pre-LN layers of width 384, for users with the TFDS catalog and a GPU.

Recipe in the spirit of DeiT's for small data (Touvron et al. 2021): AdamW, lr 1e-3 for batch 512 with 5 epochs of
warmup and cosine decay, weight decay 0.05, 200 epochs, random crops of the image padded by 4 pixels and horizontal
flips (He et al. 2016's CIFAR augmentation; no RandAugment, mixup or stochastic depth here).

Command:
  tfds build cifar10 --data_dir ~/tensorflow_datasets --file_format array_record   # once, needs TensorFlow
  python train.py --config configs/vit_cifar10.py --workdir runs/vit_cifar10 --config.model.dtype=bfloat16
  python eval.py --workdir runs/vit_cifar10
Expected: not measured yet (ViT-S trained from scratch on CIFAR-10 with this light augmentation is reported
around 80-90% test accuracy in the literature; stronger augmentation is what closes the gap to CNNs).
"""

from __future__ import annotations

import ml_collections

from configs.presets import make_config, vit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      vit('s', image_size=32, patch_size=4, num_channels=3, head='classifier', num_labels=10),
      data=dict(source='tfds:cifar10', objective='image_classification', seq_len=65, crop_padding=4, flip=True),
      optim=dict(learning_rate=1e-3, warmup_steps=490, weight_decay=0.05),  # 5 epochs of 98 steps
      train=dict(num_epochs=200, batch_size=512, log_every=100, eval_every=1000, eval_batches=20,
                 checkpoint_every=2000),
      eval=dict(splits=('test',)))
