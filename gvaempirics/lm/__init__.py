"""Language-model experiments: butterfly effects of SGD noise in greedy generation (paper Sec. 4.2)."""
