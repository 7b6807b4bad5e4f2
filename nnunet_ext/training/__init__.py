"""nnU-Net trainer classes of the cascade (import them only where nnU-Net and torch are wanted)."""
