"""Results: exported rows (rows), Pareto sets and EDFs (analysis), the figures (figures, paper_plots, design_plots,
canvas), study reports (report). Never trains.
"""
