"""Evidence clips: the audio of kept windows as FLAC, bounded on disk, served and exported."""
