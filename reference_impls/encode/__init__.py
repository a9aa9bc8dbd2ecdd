"""Encoder-side techniques: ToMe (tome.py), VisionZip (visionzip.py), LiteVLM view selection
(litevlm_view_selection.py), FOCUS keyframe selection (focus.py), LongVU adaptive resolution (longvu.py), InternVL's
dynamic tiling (dynamic_tiling.py) and pixel-shuffle projector (pixel_shuffle.py), FastViT / FastViTHD (fastvit.py).
Import the modules directly, e.g. ``from reference_impls.encode import tome``."""
