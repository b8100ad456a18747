"""``python -m symcoherence.cli``: the ``symcoherence`` command."""

from symcoherence.cli import main

raise SystemExit(main())
