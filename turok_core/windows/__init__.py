"""The gateway's buffer: points gathered into resolution-aligned windows, released as Turok
messages when their slot and grace have passed."""
