"""Prompts and completions kept (encrypted) for applications whose data policy asks for it,
per-subject data keys, erasure by key destruction, and rotation of the master key."""
