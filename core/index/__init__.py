"""The index stage: AudioSet/library ingest, build directories, ScaNN, and opening the current build."""
