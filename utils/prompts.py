"""Text side of zero-shot classification: prompt features from class names, templates or sentence
ensembles."""
from typing import Mapping, Sequence, Union

import clip
import torch
import torch.nn.functional as F
from clip.model import CLIP

# the paper's prompt: "image of a " + class name
PROMPT_TEMPLATE = "image of a {}"


@torch.no_grad()
def encode_sentences(clip_model: CLIP, sentences: Sequence[str],
                     device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """L2-normalised CLIP text features (S, D) of `sentences`."""
    if len(sentences) == 0:
        raise ValueError("encode_sentences needs at least one sentence")
    tokens = clip.tokenize(list(sentences), truncate=True).to(device)
    return F.normalize(clip_model.encode_text(tokens).float(), dim=-1)


def encode_prompts(clip_model: CLIP, class_names: Sequence[str], device: Union[str, torch.device] = "cpu",
                   template: str = PROMPT_TEMPLATE) -> torch.Tensor:
    """L2-normalised text features (K, D) of `template` filled with each class name."""
    if len(class_names) == 0:
        raise ValueError("encode_prompts needs at least one class name")
    return encode_sentences(clip_model, [template.format(name) for name in class_names], device)


def encode_prompt_ensembles(clip_model: CLIP, class_names: Sequence[str],
                            sentences: Mapping[str, Sequence[str]],
                            device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """Text features (K, D) of sentence ensembles: for each class the normalised mean of its
    sentences' normalised features (one sentence per class gives that sentence's feature)."""
    if len(class_names) == 0:
        raise ValueError("encode_prompt_ensembles needs at least one class name")
    missing = [name for name in class_names if not sentences.get(name)]
    if missing:
        raise ValueError(f"no sentences for class {missing[0]!r}" + (f" (and {len(missing) - 1} more)"
                                                                     if len(missing) > 1 else ""))
    return torch.stack([F.normalize(encode_sentences(clip_model, sentences[name], device).mean(0), dim=-1)
                        for name in class_names])
