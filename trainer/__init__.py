"""The training loop's parts that are neither model nor data: the mesh, the optimizer, the sharded train
state and the jitted steps (checkpoints live in trainer/checkpoint.py)."""
