"""spine-evaluate: segmentation overlap (micro Dice/Jaccard as in the paper, per class and case, surface distances)
and measurement agreement (Bland-Altman) between a folder of predicted and a folder of reference masks."""
