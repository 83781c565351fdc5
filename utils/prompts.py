"""Text side of zero-shot classification: prompt features from class names, templates or sentence
ensembles."""
import string
from typing import List, Mapping, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip2point.utils.errors import UsageError
from clip2point.utils.openai_clip import tokenize

# the paper's prompt: "image of a " + class name
PROMPT_TEMPLATE = "image of a {}"


def check_template(template: str, class_names: Sequence[str], flag: str = "--template") -> List[str]:
    """The prompts of `template` for `class_names`; a UsageError naming `flag` unless the template
    holds exactly one `{}` replacement field and gives distinct classes distinct prompts (so that
    `"image of a {{}}"`, a template without the name, is refused, not scored as uniform)."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as e:  # an unmatched { or }
        raise UsageError(f'{flag} "{template}": not a valid template ({e}); expected one {{}} for the class '
                         f'name, {{{{ and }}}} for literal braces') from None
    if fields != [""]:
        named = ", ".join("{" + f + "}" for f in fields) or "no field"
        raise UsageError(f'{flag} must hold exactly one {{}} for the class name and no other field '
                         f'({{{{ and }}}} for literal braces), got "{template}" with {named}')
    probes = ["\x00a", "\x00b"]  # two names no class has: the name must change the prompt
    try:
        prompts = [template.format(name) for name in [*class_names, *probes]]
    except (ValueError, TypeError, KeyError, IndexError) as e:  # e.g. a format spec a string cannot take
        raise UsageError(f'{flag} "{template}": cannot fill in a class name ({e})') from None
    if len(set(prompts)) < len(prompts):
        same = next(p for p in prompts if prompts.count(p) > 1)
        raise UsageError(f'{flag} "{template}" gives different classes the same prompt {same!r}; expected '
                         f'one {{}} where the class name goes')
    return prompts[:len(class_names)]


@torch.no_grad()
def encode_sentences(clip_model: nn.Module, sentences: Sequence[str],
                     device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """L2-normalised CLIP text features (S, D) of `sentences`, tokenized by the model's own
    tokenizer (`clip_model.tokenizer`, as OpenCLIP models from load_clip carry; OpenAI's otherwise)."""
    if len(sentences) == 0:
        raise ValueError("encode_sentences needs at least one sentence")
    tokenizer = getattr(clip_model, "tokenizer", None)
    tokens = (tokenizer(list(sentences)) if tokenizer is not None
              else tokenize(list(sentences), truncate=True)).to(device)
    return F.normalize(clip_model.encode_text(tokens).float(), dim=-1)


def encode_prompts(clip_model: nn.Module, class_names: Sequence[str], device: Union[str, torch.device] = "cpu",
                   template: str = PROMPT_TEMPLATE) -> torch.Tensor:
    """L2-normalised text features (K, D) of `template` filled with each class name."""
    if len(class_names) == 0:
        raise ValueError("encode_prompts needs at least one class name")
    return encode_sentences(clip_model, [template.format(name) for name in class_names], device)


def encode_prompt_ensembles(clip_model: nn.Module, class_names: Sequence[str],
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
