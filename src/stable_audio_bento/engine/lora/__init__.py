"""LoRA adapters as the engines use them: the reference's file format and adapter math, a
stored adapter's tensors, and per-batch application to a loaded engine's weights. The store
side (import against a base, listing, request names) is ``stable_audio_bento.lora``."""
