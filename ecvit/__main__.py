from ecvit.cli import main

raise SystemExit(main())
