"""Using a trained model: prediction with Caffe's preprocessing (predict), ONNX export (onnx)."""
