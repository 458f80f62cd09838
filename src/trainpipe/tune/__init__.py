"""Hyperparameter search: space, study in the artifact store, trial workers, PBT, report."""
