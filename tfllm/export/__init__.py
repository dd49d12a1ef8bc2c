"""Exports: TF-Serving SavedModels (`saved_model`, `causal_lm`) and TFLite (`tflite`)."""
