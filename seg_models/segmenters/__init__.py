"""Segmenters: camera images in, results at camera resolution out, through any backend (semantic,
instance, bring-your-own semantic ONNX), with the camera transform they share."""
