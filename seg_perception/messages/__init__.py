"""What goes over the wire: topic names and QoS, and conversions between messages and arrays."""
