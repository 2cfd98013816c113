"""Evaluation: likelihood, calibration, inspection, comparison with Hugging Face GPT-2, speed."""
