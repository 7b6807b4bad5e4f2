"""The folder nnUNet_extTrainer points at: nnU-Net imports this file as a top-level module and finds the trainers."""

from nnunet_ext.training.baselines import nnUNetTrainerTimeBudget  # noqa: F401
from nnunet_ext.training.trainers import nnUNetTrainerSpine, nnUNetTrainerSpineCoarse, nnUNetTrainerSpineFine  # noqa: F401
from nnunet_ext.training.variants import (  # noqa: F401
    nnUNetTrainerSpineCoarseBinary,
    nnUNetTrainerSpineCoarseBinaryCpu,
    nnUNetTrainerSpineCoarseBinaryShort,
    nnUNetTrainerSpineCoarseCpu,
    nnUNetTrainerSpineCoarseDemo,
    nnUNetTrainerSpineCoarseShort,
    nnUNetTrainerSpineCoarseSmoke,
    nnUNetTrainerSpineFineBinary,
    nnUNetTrainerSpineFineBinaryCpu,
    nnUNetTrainerSpineFineBinaryShort,
    nnUNetTrainerSpineFineCpu,
    nnUNetTrainerSpineFineDemo,
    nnUNetTrainerSpineFineShort,
    nnUNetTrainerSpineFineSmoke,
)
