"""The prompt-and-token layer shared by every stage (distill, finetune, evaluate, specdec, serve).

One place decides how a task becomes text and text becomes tokens, so that a model sees the same
framing in training, evaluation, drafting and serving:
- `render_prompt`: the model's chat template when it has one, else the plain instruction format
  (Alpaca-style headers, which the toy teacher was trained on);
- `render_messages`: the same for a chat (a list of role/content messages);
- `encode_prompt`: token ids of rendered text without adding special tokens a second time (a chat
  template writes its own BOS; tokenizing it with `add_special_tokens=True` would prepend another);
- `stop_token_ids`: every id that ends a turn (Llama-3 has three), not only `tokenizer.eos_token_id`;
- `IncrementalDetokenizer`: streamed text that never shows half of a multi-byte character.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent / "distill" / "templates"


def instruction_prompt(instruction: str, input: str = "") -> str:
    """The plain instruction prompt; the response follows it directly."""
    if input:
        return f"### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    return f"### Instruction:\n{instruction}\n\n### Response:\n"


def render_prompt(tokenizer, instruction: str, input: str = "") -> str:
    """The prompt for `tokenizer`'s model: its chat template if it has one, else the plain format."""
    if getattr(tokenizer, "chat_template", None):
        content = f"{instruction}\n\n{input}" if input else instruction
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    return instruction_prompt(instruction, input)


def render_messages(tokenizer, messages: list[dict]) -> str:
    """The prompt for a chat: the tokenizer's chat template, else the plain format (system, then user text)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    user = "\n\n".join(m["content"] for m in messages if m["role"] == "user")
    return instruction_prompt(f"{system}\n\n{user}" if system else user)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt; the tokenizer's own special tokens are added only to plain text.

    Text from a chat template already holds whatever BOS the model expects, as does any text that
    begins with the BOS token, so none is added then (as `apply_chat_template(tokenize=True)` does).
    """
    bos = tokenizer.bos_token
    templated = bool(getattr(tokenizer, "chat_template", None)) or bool(bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=not templated).input_ids


def prompt_token_ids(tokenizer, instruction: str, input: str = "") -> list[int]:
    """The token ids of a task's prompt for `tokenizer`'s model: `render_prompt`, then `encode_prompt`."""
    return encode_prompt(tokenizer, render_prompt(tokenizer, instruction, input))


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The ids that end generation: the generation config's `eos_token_id` (one or a list) and the tokenizer's EOS."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None)
    for value in (configured if isinstance(configured, list) else [configured]) + [tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(int(value))
    if not ids:
        raise ValueError("the model defines no end-of-sequence token (eos_token_id) in its tokenizer or generation config")
    return ids


class IncrementalDetokenizer:
    """Text of a token stream, released only when later tokens can no longer change it (as vLLM and TGI do).

    Byte-level BPE splits one character (an emoji, a CJK character, many accented letters) over several
    tokens; decoding a prefix that ends inside it gives U+FFFD. Each `push` decodes a short window of
    recent tokens and releases the new text once it no longer ends in U+FFFD; `finish` releases the rest.
    The concatenated pieces equal `tokenizer.decode(all tokens)`.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[int] = []
        self.prefix_offset = 0  # window start: decoding from here keeps word-boundary spaces right
        self.read_offset = 0  # tokens before this have been released as text

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=self.skip_special_tokens)

    def push(self, new_tokens: list[int]) -> str:
        """The text that `new_tokens` complete ("" while a character is still incomplete)."""
        self.tokens.extend(new_tokens)
        released = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        window = self._decode(self.tokens[self.prefix_offset :])
        if len(window) <= len(released) or window.endswith("\ufffd"):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        return window[len(released) :]

    def finish(self) -> str:
        """Whatever is left when the stream ends (an incomplete character decodes as U+FFFD here, as in `decode`)."""
        released = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        window = self._decode(self.tokens[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.tokens)
        return window[len(released) :]


def load_template(name_or_path: str) -> str:
    """A rewrite template by built-in name (`general`, `math`, `mc`) or by file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TEMPLATE_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
        raise FileNotFoundError(f"rewrite template {name_or_path!r} not found (built-in: {known})")
    return path.read_text()


def rewrite_prompt(template: str, instruction: str, reference: str, input: str = "") -> str:
    """Fill a rewrite template: the teacher sees the task and the reference answer."""
    if input:
        instruction = f"{instruction}\n\n{input}"
    return template.format(instruction=instruction, reference=reference)
