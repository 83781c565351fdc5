"""Shared helpers: CLIP loading and prompts, checkpoints."""
from utils.clip_loader import ClipLoadError, ClipWeightsMissing, load_clip
from utils.prompts import encode_prompts
from utils.scoring import zeroshot_logits
from utils.checkpoint import CheckpointError, PRETRAIN_KIND, FEWSHOT_KIND
from utils.checkpoint import read_checkpoint, read_state_dict, load_state_dict_strict, save_checkpoint
