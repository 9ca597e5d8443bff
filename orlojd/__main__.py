"""`python -m orlojd` runs the same CLI as the `orlojd` console script."""

from orlojd.cli import main

main()
