"""Serving: a small continuous-batching engine with chunked prefill over the paged KV cache
(``continuous_batching.py``), the readable specification of Orca / SARATHI-style scheduling. Serving at scale
belongs to vLLM or SGLang: see ``README.md``."""
