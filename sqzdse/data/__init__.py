"""Datasets: what each named one is (datasets), the input pipeline (pipeline), preparing them with tfds without
TensorFlow (tfds_prep).
"""
