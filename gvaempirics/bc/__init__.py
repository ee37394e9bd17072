"""Behavior cloning on MuJoCo (paper Section 3, Figures 1-3): environments and the batched
evaluator, PPO experts, demonstrations, imitators, the BC trainer with stabilizers, its results,
interventions, the reward landscape and ensembles."""
