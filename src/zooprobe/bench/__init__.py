"""Benchmarks, an application on top of the library: each prints numbers and writes them to a folder.

- `zoo`: population-batched vs one-at-a-time zoo training (``zooprobe zoo bench``);
- `encoder`: encoder throughput, GFLOP/s and probe R² (``zooprobe encoder bench``);
- `heads`: head training with and without the representation cache, step memory (``zooprobe bench heads``);
- `compare`: every head and baseline on identical splits (``zooprobe bench``).
"""
