"""``python -m reference_impls list`` / ``run`` (see ``reference_impls/cli.py``)."""

from .cli import main

raise SystemExit(main())
