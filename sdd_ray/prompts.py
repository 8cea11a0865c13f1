"""Prompt formats shared by every stage.

One instruction format (Alpaca-style headers) is used to train the toy teacher, to fine-tune the
pruned model, to evaluate, and to draft/verify in speculative decoding, so that a model sees the
same framing everywhere. Models with a chat template use it instead (`render_prompt`).
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
