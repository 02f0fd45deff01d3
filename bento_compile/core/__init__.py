"""The floor of the build side: errors, the bento.yaml schema, the local store, signing, SBOMs, file helpers.

Everything above (compiler, targets, tools, CLI) may import this; it imports only the runtime
(whose manifest and trust checks it shares) and never anything above it. It does not ship in artifacts.
"""
