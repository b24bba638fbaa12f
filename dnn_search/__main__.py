from dnn_search.cli import main

raise SystemExit(main())
