"""``python -m epoch.cli``."""

from epoch.cli import main

main()
