"""From a request to audio: planning, coalescing, audio in, the model registry."""
