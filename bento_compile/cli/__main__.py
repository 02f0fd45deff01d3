"""`python -m bento_compile.cli`: the same as the `bento-compile` command."""

from bento_compile.cli import main

main()
