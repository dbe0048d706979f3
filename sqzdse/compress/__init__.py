"""Deep Compression and DSD: the weight codec (codec), magnitude pruning (prune), Dense-Sparse-Dense (dsd), the whole
pipeline (pipeline).
"""
