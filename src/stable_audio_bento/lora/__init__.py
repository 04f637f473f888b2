"""LoRA adapters: files as the reference writes them, store entries tied to a base model,
and per-batch application to our engines with the reference's math. This package is the store
side (import against a base, listing, request names); ``engine.lora`` the engines' side."""
