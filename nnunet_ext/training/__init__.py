"""nnU-Net trainer classes of the cascade (import them only where nnunetv2 and torch are wanted)."""
