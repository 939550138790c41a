from jepsen_style.cli import main

raise SystemExit(main())
