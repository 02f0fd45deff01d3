"""Tools that run artifacts and Bentos on this machine or move them elsewhere.

The Lambda Runtime API emulator and `invoke`, `flash` to a device, the S3 remote store, and
reading a Bento back out of an artifact. They sit above the targets (they run what targets build)
and below the CLI, which is one of their clients.
"""
