"""Benchmarks: direct calls, bare forwarders and the gateway against one fast local upstream.

`python -m bench [--quick] [--out bench/results]`; see bench/README.md.
"""
