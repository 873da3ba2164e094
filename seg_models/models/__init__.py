"""Networks, laid out like torchvision's models: backbone, head and deployment wrapper apart."""
