"""Listen: microphone capture, the ring buffer, audio files and 30 s windows."""
