"""Subject-model zoos: sampling, population-batched training, storage, loading and importing."""
