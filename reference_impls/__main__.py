"""``python -m reference_impls list`` / ``run`` (see ``reference_impls/cli.py``)."""

from reference_impls.cli import main

raise SystemExit(main())
