"""Batch scoring: a verified Bento run in-process over Arrow record batches, locally, on Spark or on Ray.

One `Scorer` (scorer.py) turns a record batch into the Bento's outputs with the same checks as the
HTTP contract; the engines only decide where it runs: `local` (streaming files through worker
processes), `spark` (`mapInArrow`, one session per Python worker) and `ray` (`map_batches`, one
session per actor). Nothing here starts a server or speaks HTTP.
"""
