"""From a network to the files a backend runs: ONNX export (in a child process), fp16/int8
conversion, TensorRT's operator table, and the engine cache that keeps them."""
