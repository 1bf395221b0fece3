"""Converters from the formats real checkpoints ship in (CTranslate2, ONNX, GGUF) to the ones crabzoo loads."""
