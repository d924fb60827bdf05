"""``python -m Rad4XCNNLogic`` runs the same command line as ``rad4xcnn``."""

from Rad4XCNNLogic.cli import main

raise SystemExit(main())
