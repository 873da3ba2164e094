"""Data the models work with: label sets (and their shipped YAML files), frame sources, colour views."""
