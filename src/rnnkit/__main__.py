"""``python -m rnnkit`` runs the ``rnnkit`` command."""

from rnnkit.cli import main

if __name__ == "__main__":  # not when a process spawned by multiprocessing imports it
    raise SystemExit(main())
