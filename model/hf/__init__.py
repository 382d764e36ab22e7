"""HF transformers checkpoints: `from_pretrained(dir)` -> (ModelConfig, params), `save_pretrained(cfg, params, dir)`.

  io.py        files (safetensors, sharded indexes, legacy .bin), the two directions, strictness and messages
  mapping.py   the engine: how a tensor lays out our arrays (Kind), table rows, FamilySpec
  bert.py, roberta.py, distilbert.py, albert.py, vit.py, gpt2.py, t5.py   one table, config.json reader and
               writer per HF model type
"""

from model.hf.io import SPECS, config_from_pretrained, from_pretrained, save_pretrained
from model.hf.mapping import CheckpointError

__all__ = ['CheckpointError', 'SPECS', 'config_from_pretrained', 'from_pretrained', 'save_pretrained']
