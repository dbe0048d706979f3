"""The network: metaparameters and presets (config), the layer plan (plan), the Flax module (network), its fast CPU ops
(ops), cost accounting (cost), the released Caffe weights (weights).
"""
