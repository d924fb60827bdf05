"""``python -m Rad4XCNNLogic`` runs the same command line as ``rad4xcnn``."""

from .cli import main

raise SystemExit(main())
