"""Developer tools (run, demo, soak, smoke check, benchmarks, the node-under-test probe): may import anything."""
