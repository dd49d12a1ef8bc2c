"""Training entry points, one module per task."""
