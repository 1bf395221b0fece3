"""Data: typed samples, the AV-UIE v2 reader, media decoding and the embedded AVSynth benchmark.

Submodules are imported on demand (``crabzoo.data.avuie``, ``crabzoo.data.media``, ``crabzoo.data.avsynth``) so
that importing :mod:`crabzoo.data` stays cheap.
"""
