"""Compositions of techniques (``litevlm.py``: view selection -> token selection -> speculative decoding -> FP8)."""
