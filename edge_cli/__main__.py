from edge_cli import main

raise SystemExit(main())
