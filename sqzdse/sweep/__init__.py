"""Sweeps: the sweep file (spec), Optuna storages, locks and claims (storage), workers, trials and export (engine), the
dry run's plan and progress (forecast).
"""
