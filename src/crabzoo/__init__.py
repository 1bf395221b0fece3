"""crabzoo: interchangeable components for audio-visual LLMs."""
__version__ = "0.1.0"
