"""The cascade's networks as plain PyTorch modules that nnU-Net builds from its plans (see :mod:`.factory`):
:class:`~.coarse3d.CoarseDeepLabGCN3D` (stage 1) and :class:`~.fine2d.ResidualUNet2D` (stage 2)."""
