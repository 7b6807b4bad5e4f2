"""Fails first when nnunetv2 changes the internals that nnunet_ext.compat relies on."""

from __future__ import annotations

import inspect

import pytest

from nnunet_ext import compat


def test_pinned_nnunet_version():
    pytest.importorskip("nnunetv2")
    assert compat.nnunet_version() == compat.NNUNET_VERSION


def test_verify_dataset_integrity_signature():
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    assert list(inspect.signature(verify_dataset_integrity).parameters) == ["folder", "num_processes"]


def test_planner_copies_raw_splits_file():
    """spine-convert writes splits_final.json into the raw dataset; nnU-Net 2.8.1's planner copies it over."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.experiment_planners import default_experiment_planner as planner

    assert "splits_final.json" in inspect.getsource(planner.ExperimentPlanner.__init__)
    assert callable(planner._maybe_copy_splits_file)
