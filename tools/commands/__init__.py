"""One module per ``python -m tools`` command (see tools/cli.py)."""
