"""Hyperparameter search: the search space and constraints, the queue runner, the Bayesian
(Optuna) runner, the W&B agent bridge, and `spelltune sweep` argument parsing."""
