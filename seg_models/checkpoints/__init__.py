"""Checkpoints: read without executing code (reading), and the public layouts mapped onto ours (formats)."""
