"""Platform entry points (HTTP, Lambda, edge) over the runtime; shipped inside every artifact.

Import-light by rule: nothing from the compiler, the targets or the CLI.
"""
