"""Targets: one module per platform, turning a Bento into deployable files (see the issues)."""
