from sloserve.cli import main

raise SystemExit(main())
