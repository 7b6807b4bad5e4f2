"""Trainer variants: class attributes only (each stage-2 class reads the stage-1 class of the same name with
``Coarse`` for ``Fine``; :class:`~.trainers.nnUNetTrainerSpineFine`).

* ``...Binary``: the paper's single-class model M_SC (datasets converted with ``spine-convert --binary``).
* ``...Cpu``: the CPU recipe for real scans (with ``spine-nnunet plan --preset cpu``; docs/benchmarks.md, "CPU
  recipe"): both stages of a 2-fold cross-validation of the multiclass cascade, at most 3200 + 4200 iterations per
  fold, as many as fit in each stage's wall-time budget (since the twenty-third session; 1600 + 2100 before),
  both in bfloat16 on a CPU that has it (stage 2 sees 2 neighbouring sagittal slices each side as extra channels and
  adds the Dice of "any vertebra" and, since the twenty-fifth session, its cross-entropy near the outline to its
  per-level loss, weighted 3 since the thirty-ninth; both draw half their training cases balanced over the
  annotated levels, :mod:`.sampling`, "Twenty-second session"):
  67-79 minutes with 2300 stage-2 iterations on the 2-core VMs of 2026-12-02 and -03 (target 75; "Tenth" to
  "Sixteenth session"), hence 2100 from the seventeenth (66 minutes on its VM); the twenty-third's VM, 3150 + 3230-3400
  iterations in the budgets: 64 minutes, cross-validation multiclass 0.881, binary 0.900, levels 265 of 271; with the
  outline's cross-entropy (twenty-fifth): 63 minutes, 0.899, 0.908, 271 of 271. Each
  stage runs its epochs inside a
  wall-time budget per fold (:attr:`~.time_budget.TimeBudget.time_budget_s`: 840 + 1000 s; training in bfloat16:
  650 + 1200 s, ``time_budget_bfloat16_s``), fewer where they do not
  fit: on a 2-core machine without native bfloat16 an iteration costs 1.6-2.7x ("Eighteenth session"), and stage 2
  trains the narrower 8-96 network there (``network_features_float32``, "Twentieth session"); nnU-Net's
  progress plot every 10 epochs (:attr:`~.progress_plot.ProgressPlots.progress_plot_every`);
  ``...BinaryCpu``: the same for M_SC with a shorter schedule, 800 + 1400 iterations (budgets 280 + 760 s; its
  stage 2 also 8-96 without native bfloat16, not measured on M_SC): both folds in 45 minutes on 2 cores (stage 1
  finds the spine and names no levels; docs/benchmarks.md, "Thirteenth
  session").
* ``...Short``: 500 iterations (20 epochs of 25; stage 2: 1000) with AdamW, enough for phantoms (``...BinaryShort``:
  the same for M_SC); ``...Smoke``: 2 x 5
  iterations, a checkpoint every epoch, for CI; ``...Demo``: what ``spine-nnunet demo`` trains on CPU (375 and 750
  iterations).
"""

from __future__ import annotations

from .trainers import nnUNetTrainerSpineCoarse, nnUNetTrainerSpineFine

# ruff: noqa: N801 - nnU-Net's trainer naming convention


class nnUNetTrainerSpineCoarseBinary(nnUNetTrainerSpineCoarse):
    expected_num_classes = 2


class nnUNetTrainerSpineFineBinary(nnUNetTrainerSpineFine):
    expected_num_classes = 2


class nnUNetTrainerSpineCoarseShort(nnUNetTrainerSpineCoarse):
    epochs, iterations_per_epoch, val_iterations_per_epoch = 20, 25, 5
    optimizer_kind, learning_rate = "adam", 3e-3


class nnUNetTrainerSpineFineShort(nnUNetTrainerSpineFine):
    epochs, iterations_per_epoch, val_iterations_per_epoch = 40, 25, 5  # the end levels need more than 500
    optimizer_kind, learning_rate = "adam", 3e-3


class nnUNetTrainerSpineCoarseBinaryShort(nnUNetTrainerSpineCoarseShort):
    expected_num_classes = 2


class nnUNetTrainerSpineFineBinaryShort(nnUNetTrainerSpineFineShort):
    expected_num_classes = 2


class nnUNetTrainerSpineCoarseSmoke(nnUNetTrainerSpineCoarse):
    epochs, iterations_per_epoch, val_iterations_per_epoch, checkpoint_every = 2, 5, 2, 1
    optimizer_kind, learning_rate = "adam", 3e-3


class nnUNetTrainerSpineFineSmoke(nnUNetTrainerSpineFine):
    epochs, iterations_per_epoch, val_iterations_per_epoch, checkpoint_every = 2, 5, 2, 1
    optimizer_kind, learning_rate = "adam", 3e-3


class nnUNetTrainerSpineCoarseDemo(nnUNetTrainerSpineCoarse):
    epochs, iterations_per_epoch, val_iterations_per_epoch = 15, 25, 4
    optimizer_kind, learning_rate = "adam", 3e-3
    progress_plot_every = 10  # 1.2-1.6 s per drawing on 2 cores (nnunet_ext/training/progress_plot.py)


class nnUNetTrainerSpineFineDemo(nnUNetTrainerSpineFine):
    epochs, iterations_per_epoch, val_iterations_per_epoch = 30, 25, 4
    optimizer_kind, learning_rate = "adam", 3e-3
    progress_plot_every = 10


class nnUNetTrainerSpineCoarseCpu(nnUNetTrainerSpineCoarse):
    # at most 3200 iterations, as many as fit in the budget below: stage 2 follows stage 1's levels, and 960 counted
    # fewer right than 1600 ("Fourth session"), 1600 fewer than 3150 (stage 1 alone: levels 241 -> 251 of 271,
    # "Twenty-third session"); 1600 until then, which a fast bfloat16 CPU trained in 290 of its 650 s
    epochs, iterations_per_epoch, val_iterations_per_epoch = 40, 80, 5
    optimizer_kind, learning_rate = "adam", 3e-3
    cpu_bfloat16 = True  # 8 % less per iteration ("Sixth session"), given to the wider stage 2 ("Tenth session")
    contrast_inversion_probability = 0.3  # levels named alike in T1, TIRM and water images: cross-validation levels
    # 246 -> 258 of 271 with the same stage 2 (docs/benchmarks.md, "Sixteenth session")
    rare_level_sampling = 0.5  # half the draws balanced over the annotated levels: S1 (annotated in 2-3 of 24
    # training cases per fold) from 8-12 % of the draws to 18-20 %, T11/T12 from 21-33 % to 36-46 %; both stages
    # with it against neither: levels 255 -> 258 of 271, multiclass 0.840 -> 0.861, binary 0.895 -> 0.891
    # (docs/benchmarks.md, "Twenty-second session")
    adjacent_level_weight = 1.0  # S1 asked for below an annotated L5 (partial_loss.adjacent_level_presence_penalty):
    # stage 1 names a body below L5 "S1" in 46 of 48 CV cases (12-31 without) and the count runs up from it; the
    # recipe trained anew with it: 0.895 / 0.905, 271 of 271 levels (the last training without it 0.843 / 0.905, 252;
    # earlier ones 0.872-0.899, 263-271), about 5 % fewer stage-1 iterations in the budget (docs/benchmarks.md,
    # "Thirty-third session"; one training)
    time_budget_s = 840.0  # 40 epochs of at most 40 iterations, fewer where they do not fit in 840 s per fold: on a
    # CPU without native bfloat16 an iteration costs 1.6-1.7x, and the recipe would take far over 75 min ("Eighteenth
    # session"); 510 s then, 500 in the nineteenth, 600 in the twentieth (1020-1083 iterations: levels 82.7 %), 840
    # since the twenty-first (1466-1489 iterations: levels 91.1 %, multiclass 0.759 -> 0.818; training 66.3 min, the
    # whole benchmark run 83.0 min with stage 2's 1000 s)
    progress_plot_every = 10  # nnU-Net's progress.png costs 1.2-1.6 s per epoch on 2 cores: a tenth of an epoch here
    time_budget_bfloat16_s = 650.0  # training in bfloat16 (0.36 s per iteration and 1.3 s per epoch besides on the
    # seventeenth and nineteenth sessions' VMs: about 630 s): the whole schedule, and a slower bfloat16 VM still inside
    # 75 min ("Nineteenth session")


class nnUNetTrainerSpineFineCpu(nnUNetTrainerSpineFine):
    # at most 4200 iterations, as many as fit in the budget below (2100 until the twenty-third session, which a fast
    # bfloat16 CPU trained in 655-690 of its 1200 s; 3400-3640 in the budget there: binary Dice 0.891 -> 0.899 with
    # the same stage 1, "Twenty-third session"); 3 validation batches per epoch (checkpoint_best and the pseudo-Dice
    # curve only; spine-predict uses checkpoint_final)
    epochs, iterations_per_epoch, val_iterations_per_epoch = 42, 100, 3
    optimizer_kind, learning_rate = "adam", 2e-3  # 4e-3 on one stage 1: cross-validation 0.881 / 0.905 -> 0.876 /
    # 0.900, the training loss no lower ("Fortieth session")
    # rotation and scaling: the paper's +-5 degrees and 5 % (nnUNetTrainerSpine); nnU-Net's 0.7-1.4 and its 3D +-30 on
    # one stage 1: 0.879 / 0.902 -> 0.870 / 0.901, levels 267 -> 262 of 271, the fit to the training cases the same
    # (docs/benchmarks.md, "Forty-ninth session")
    foreground_oversampling = 0.5  # most sagittal slices hold no vertebra; 0.8 on one stage 1: 0.870 / 0.901, levels
    # 266 -> 263 of 271, heights further off ("Forty-first session")
    validate_after_training = False  # 8-10 min per fold on 2 cores, and spine-predict + spine-evaluate do it again
    neighbour_slices = 2  # 2.5D: binary Dice and heights better on real scans, same cost ("Seventh session")
    cpu_bfloat16 = True  # the preset's 16-128 stage 2 at about the cost of 8-96 in float32 ("Ninth session")
    cpu_channels_last = True  # on a CPU with AMX or AVX512-BF16 (elsewhere nothing changes); with AMX 3142-3159
    # iterations in the budget against 2596-2636, cross-validation on the same stage 1 0.893 / 0.902 -> 0.898 / 0.906
    # ("Thirty-first session", one training); the recipe trained anew with it: 0.843 / 0.905, three cases' levels one
    # off ("Thirty-second"); AMD Zen 4 without AMX: the training step 1.12-1.21x faster ("Thirty-seventh session")
    rare_level_sampling = 0.5  # as stage 1: S1, T11 and T12 from the few cases that annotate them, twice as often
    union_dice_weight = 1.0  # the Dice of "any vertebra" beside the per-level loss: outlines and heights closer
    # (cross-validation: binary 0.881 -> 0.894, heights MAE 2.10 -> 1.62 mm anterior; docs/benchmarks.md, "Fourteenth
    # session")
    union_boundary_weight = 3.0  # and its cross-entropy within 2 voxels of the union's edge: both stages retrained
    # with it (weight 1), cross-validation multiclass / binary 0.881 / 0.900 -> 0.899 / 0.908, levels 265 -> 271 of
    # 271, heights MAE 1.27-1.31 -> 1.14-1.25 mm (one run; "Twenty-fifth session"); weight 3 against 1, stage 2
    # trained on one stage 1: binary 0.8998 -> 0.9046 (zukic2014 0.818 -> 0.852), multiclass 0.869 -> 0.881 (with
    # that session's level post-processing on both), heights MAE 1.46-1.54 -> 1.19-1.27 mm, held-out 0.898 -> 0.905
    # (one training each; "Thirty-ninth session"); weight 3 trained again on that stage 1: 0.880 / 0.904; weight 6:
    # binary 0.8995, outlines smaller (15 % fewer false-positive, 20 % more false-negative voxels), heights MAE
    # 1.30-1.41 mm ("Fortieth session")
    time_budget_s = 1000.0  # 42 epochs of at most 50 iterations, as many as fit in 1000 s per fold (without native
    # bfloat16 an iteration costs 2.6-2.7x); with stage 1's budget the recipe's training stays inside 75 min, and the
    # benchmark's whole run (with prediction in float32) inside 90 min, on a slow 2-core machine ("Eighteenth",
    # "Nineteenth", "Twentieth session")
    network_features_float32 = (8, 16, 32, 64, 96)  # without native bfloat16: 1550-1624 iterations in 1000 s against
    # 557-560 in 900 s for 16-128, Dice and heights closer, prediction less than half ("Twentieth session")
    progress_plot_every = 10  # 1.2-1.6 s per drawing on 2 cores: back to training iterations
    time_budget_bfloat16_s = 1200.0  # training in bfloat16 (0.54 s per iteration on the seventeenth session's VM):
    # about the whole schedule; with stage 1's 650 s about 66 min of training and 82 min for the whole run there
    # (4.4x the iterations without a budget, fold 0: its training cases 0.923 -> 0.946 binary, its unseen cases
    # 0.8929 -> 0.8932: the budget is not what limits the Dice; "Forty-seventh session")


class nnUNetTrainerSpineCoarseBinaryCpu(nnUNetTrainerSpineCoarseCpu):
    expected_num_classes = 2
    epochs, iterations_per_epoch = 20, 40  # 800 iterations: M_SC's stage 1 finds the spine and counts no levels;
    # the 45-minute budget
    time_budget_s = 280.0
    time_budget_bfloat16_s = None  # one budget for M_SC (its schedule fits it in bfloat16 too)
    contrast_inversion_probability = 0.0  # M_SC as measured ("Thirteenth session"); inversion not tried on it
    adjacent_level_weight = 0.0  # one class, "any vertebra": no level to ask for beyond the annotated ones
    rare_level_sampling = 0.0  # one class: nothing to balance


class nnUNetTrainerSpineFineBinaryCpu(nnUNetTrainerSpineFineCpu):
    expected_num_classes = 2
    epochs, iterations_per_epoch = 28, 50  # 1400 iterations: both stages of both folds in 45 minutes on 2 cores
    rare_level_sampling = 0.0  # one class: nothing to balance
    cpu_channels_last = False  # not measured on the binary cascade
    time_budget_s = 760.0  # with stage 1's 280 s: both stages of both folds inside 45 min on a slow 2-core machine
    time_budget_bfloat16_s = None
