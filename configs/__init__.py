"""Runnable setups: one file per setup, each with `get_config(arg=None) -> ml_collections.ConfigDict`."""
