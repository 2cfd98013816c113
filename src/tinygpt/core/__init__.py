"""Plumbing every layer uses: errors, atomic file writes, devices and precision, figures. Imports nothing of ours."""
