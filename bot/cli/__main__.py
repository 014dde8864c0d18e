"""`python -m bot.cli`: the same as the `rotabot` command."""

from bot.cli.main import main

raise SystemExit(main())
