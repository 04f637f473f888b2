"""LoRA adapters: files as the reference writes them, store entries tied to a base model,
and per-batch application to our engines with the reference's math."""
