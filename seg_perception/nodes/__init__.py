"""The executables: one lifecycle node class per task, the camera stand-in, an example consumer."""
