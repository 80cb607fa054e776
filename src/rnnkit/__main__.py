"""``python -m rnnkit`` runs the ``rnnkit`` command."""

from rnnkit.cli import main

raise SystemExit(main())
