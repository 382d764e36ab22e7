"""Helpers every package may import (data/, model/, trainer/, evaluation/, the mains); it imports none of them."""
