"""Profile builders, the GPU inventory and the AIDC spawners."""
