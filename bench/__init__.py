"""The benchmark: p2pwall against the kernel alone and a minimal C NFQUEUE reader, on the lab.

``python -m bench.run`` (or ``make bench``); see ``bench/RESULTS.md`` for the last recorded run.
"""
