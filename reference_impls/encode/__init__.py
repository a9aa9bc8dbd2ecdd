"""Encoder-side techniques: ToMe (tome.py), VisionZip (visionzip.py), LiteVLM view selection
(litevlm_view_selection.py). Import the modules directly, e.g. ``from reference_impls.encode import tome``."""
