"""corral's benchmarks; see README "Performance" and "Memory estimates"."""
