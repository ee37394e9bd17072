"""Empirical GVA: MuJoCo behavior cloning and small transformer language models.

Needs the ``empirics`` extra (torch, gymnasium[mujoco], mujoco, stable-baselines3).
"""
