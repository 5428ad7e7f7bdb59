"""Developer tools (run, demo, soak, smoke check, benchmarks): may import anything."""
