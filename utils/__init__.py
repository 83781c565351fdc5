"""Shared helpers below the entry scripts: CLIP loading, prompts and scoring, checkpoints, errors,
seeding, mixed precision, multi-process training and the command-line pieces. Import the modules
themselves (`from utils.checkpoint import save_checkpoint`); the package imports nothing, so the
light modules (errors) stay light."""
