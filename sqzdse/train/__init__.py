"""Training: the recipe and a run's identity (recipe), the jitted steps and the loop (loop), a run's workdir and
checkpoints (checkpoints), progress lines (progress).
"""
