"""A word-level tokenizer for the toy world, built locally with `tokenizers`.

Every integer 0-999 and every word the generators and templates use is one token, so arithmetic is
a lookup the tiny teacher can learn quickly. Spaces are dropped, newlines and punctuation are tokens
of their own; decoding joins tokens with spaces and `clean_up_tokenization_spaces` reattaches
punctuation, so decode -> encode gives back the same ids.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

from sdd_ray.prompts import instruction_prompt, load_template
from sdd_ray.toy.tasks import KB, TASKS, generate

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
PRE_TOKENIZER = pre_tokenizers.Sequence(
    [
        pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[.,:;?!*+=()\-]"), behavior="isolated"),
    ]
)


def corpus_words() -> list[str]:
    """Every word the toy world can produce, in a fixed order."""
    texts = [instruction_prompt("x", "y")]
    texts += [load_template(name) for name in ("general", "math", "mc")]
    for relation in KB.RELATIONS:
        for country in KB.countries:
            texts += [KB.statement(relation, country), KB.question(relation, country)]
    for task in TASKS:
        for split in ("pretrain", "finetune", "eval"):
            for row in generate(task, 3000, split):
                texts += [row["instruction"], row["teacher_response"], row["reference_response"]]
    words = {w for text in texts for w, _ in PRE_TOKENIZER.pre_tokenize_str(text)}
    words |= {str(i) for i in range(1000)}
    return sorted(words - set(SPECIAL_TOKENS))


def build_tokenizer():
    """The toy tokenizer as a `transformers` fast tokenizer (saved with `save_pretrained`)."""
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + corpus_words())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = PRE_TOKENIZER
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=True,
        model_max_length=512,
    )
