"""What every node runs on: camera input, newest-frame slot, statistics, diagnostics, parameters."""
