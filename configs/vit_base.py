"""ViT-B/16 (Dosovitskiy et al. 2021): 224x224 images in 16x16 patches (196 + [CLS] = 197 tokens), 12 pre-LN
layers of d_model 768, a 1,000-class classifier on the final hidden state at [CLS] (HF's ViTForImageClassification,
as google/vit-base-patch16-224).

Command:
  python describe.py --config configs/vit_base.py   # parameters and a timed forward pass
Expected: 86,567,656 parameters (ViTForImageClassification, 1,000 classes); describe.py also prints 86,389,248 for
HF's ViTModel (no head, with pooler). data.seq_len is the sequence the model runs (1 + 196 patches), which the FLOPs
/ MFU accounting reads; ImageNet's images differ in size: data.image_size=224 resizes their shorter side and takes
the centre square (data/images.py).
"""

from __future__ import annotations

import ml_collections

from configs.presets import make_config, vit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # no variants
  return make_config(
      vit('b', head='classifier', num_labels=1000),
      data=dict(source='tfds:imagenet2012', objective='image_classification', seq_len=197, image_size=224),
      # The paper's ImageNet-1k recipe (its Table 3): Adam, lr 3e-3, weight decay 0.3, batch 4096, 300 epochs.
      optim=dict(learning_rate=3e-3, warmup_steps=10_000, weight_decay=0.3),
      train=dict(num_steps=93_835, batch_size=4096))
