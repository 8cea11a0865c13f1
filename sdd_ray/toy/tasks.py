"""Deterministic generators of the toy world's three task families.

Each family mimics the format of a real data set so that the loaders, prompt templates and answer
extractors written for real data serve the toy world unchanged:

- `arith`: 2-4 step word problems with a worked solution ending `#### N` (as GSM8K);
- `facts`: four-option multiple-choice questions over a fixed fictional knowledge base (as ARC/MMLU);
- `instruct`: instruction/response pairs: word-list transformations, counting, look-ups (as Alpaca).

Every example comes in two styles: the *teacher* style, which the toy teacher is pretrained on, and
the *reference* style (terser, worded differently), which plays the role of the human-written labels
of the fine-tuning split in the paper: SFT on it pulls the model away from its own distribution,
which is what self-data distillation repairs.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

TASKS = ("arith", "facts", "instruct")
TASK_KIND = {"arith": "math", "facts": "mc", "instruct": "general"}
LETTERS = "ABCD"

NAMES = ["Tom", "Ana", "Ben", "Mia", "Sam", "Lea", "Max", "Ida", "Leo", "Eva"]
ITEMS = ["apples", "stamps", "coins", "books", "shells", "cards", "pens", "marbles"]
GAIN = [("buys", "buying"), ("finds", "finding"), ("gets", "getting"), ("wins", "winning")]
LOSS = [("gives away", "giving away"), ("loses", "losing"), ("sells", "selling"), ("eats", "eating")]
COLORS = ["red", "blue", "green", "black", "white", "gold", "pink", "gray"]
WORDS = ["cat", "dog", "sun", "tree", "boat", "lamp", "rock", "bird", "fish", "door", "moon", "star"]
MAX_VALUE = 60  # arithmetic stays within 0..MAX_VALUE so every number is one token


def _syllable_names(rng: random.Random, n: int, suffixes: list[str]) -> list[str]:
    onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
    vowels = ["a", "e", "i", "o", "u"]
    names: list[str] = []
    while len(names) < n:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(2)) + rng.choice(suffixes)
        word = word.capitalize()
        if word not in names:
            names.append(word)
    return names


@dataclass(frozen=True)
class KnowledgeBase:
    """Fictional countries and three relations of each; fixed by its seed."""

    countries: list[str]
    capital: dict[str, str]
    river: dict[str, str]
    color: dict[str, str]

    RELATIONS = ("capital", "river", "color")

    @classmethod
    def build(cls, num_countries: int = 24, seed: int = 7) -> KnowledgeBase:
        rng = random.Random(seed)
        countries = _syllable_names(rng, num_countries, ["land", "ia", "stan"])
        names = _syllable_names(rng, 2 * num_countries + 20, ["a", "o", "on", "is"])
        capitals, rivers = names[:num_countries], names[num_countries : 2 * num_countries]
        colors = {c: rng.choice(COLORS) for c in countries}
        return cls(countries, dict(zip(countries, capitals)), dict(zip(countries, rivers)), colors)

    def value(self, relation: str, country: str) -> str:
        return getattr(self, relation)[country]

    def values(self, relation: str) -> list[str]:
        return sorted(set(getattr(self, relation).values()))

    def statement(self, relation: str, country: str) -> str:
        value = self.value(relation, country)
        if relation == "capital":
            return f"The capital of {country} is {value}."
        if relation == "river":
            return f"The longest river of {country} is the {value}."
        return f"The flag of {country} is {value}."

    def question(self, relation: str, country: str) -> str:
        if relation == "capital":
            return f"What is the capital of {country}?"
        if relation == "river":
            return f"What is the longest river of {country}?"
        return f"What color is the flag of {country}?"


KB = KnowledgeBase.build()


def example_id(task: str, instruction: str, input: str = "") -> str:
    return hashlib.sha1(f"{task}\x1f{instruction}\x1f{input}".encode()).hexdigest()[:16]


def arith_example(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, 30)
    sentences = [f"{name} has {value} {item}."]
    teacher = []
    reference = []
    for step in range(rng.randint(2, 4)):
        then = "Then he" if name in ("Tom", "Ben", "Sam", "Max", "Leo") else "Then she"
        choice = rng.random()
        if choice < 0.2 and value * 2 <= MAX_VALUE:
            new = value * 2
            sentences.append(f"{then} doubles the {item}.")
            teacher.append(f"Doubling, {value} * 2 = {new}.")
            reference.append(f"{value} * 2 = {new}")
        elif (choice < 0.6 or value >= MAX_VALUE) and value >= 2:
            amount = rng.randint(1, min(9, value))
            verb, gerund = rng.choice(LOSS)
            new = value - amount
            sentences.append(f"{then} {verb} {amount} {item}.")
            teacher.append(f"After {gerund} {amount}, {value} - {amount} = {new}.")
            reference.append(f"{value} - {amount} = {new}")
        else:
            amount = rng.randint(1, min(9, MAX_VALUE - value))
            verb, gerund = rng.choice(GAIN)
            new = value + amount
            sentences.append(f"{then} {verb} {amount} {item}.")
            teacher.append(f"After {gerund} {amount}, {value} + {amount} = {new}.")
            reference.append(f"{value} + {amount} = {new}")
        value = new
    sentences.append(f"How many {item} does {name} have now?")
    instruction = " ".join(sentences)
    teacher.append(f"So {name} has {value} {item}.\n#### {value}")
    return {
        "task": "arith",
        "instruction": instruction,
        "input": "",
        "teacher_response": " ".join(teacher),
        "reference_response": "We get " + ", then ".join(reference) + f".\n#### {value}",
        "answer": str(value),
    }


def facts_example(rng: random.Random, kb: KnowledgeBase = KB) -> dict:
    relation, country = rng.choice(kb.RELATIONS), rng.choice(kb.countries)
    gold = kb.value(relation, country)
    distractors = rng.sample([v for v in kb.values(relation) if v != gold], 3)
    choices = distractors + [gold]
    rng.shuffle(choices)
    letter = LETTERS[choices.index(gold)]
    question = kb.question(relation, country)
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return {
        "task": "facts",
        "instruction": f"{question}\n{options}",
        "input": "",
        "teacher_response": f"{kb.statement(relation, country)} The answer is {letter}.",
        "reference_response": f"{letter}",
        "answer": letter,
        "question": question,
        "choices": choices,
        "gold_index": choices.index(gold),
    }


def instruct_example(rng: random.Random, kb: KnowledgeBase = KB) -> dict:
    kind = rng.randrange(4)
    words = rng.sample(WORDS + COLORS, rng.randint(3, 6))
    listed = " ".join(words)
    if kind == 0:
        answer = " ".join(reversed(words))
        instruction = f"Reverse the order of these words: {listed}"
        teacher = f"In reverse order the words are: {answer}."
    elif kind == 1:
        answer = str(len(words))
        instruction = f"How many words are in this list: {listed}"
        teacher = f"The list has {answer} words."
    elif kind == 2:
        answer = words[-1]
        instruction = f"What is the last word of this list: {listed}"
        teacher = f"The last word of the list is {answer}."
    else:
        country = rng.choice(kb.countries)
        answer = kb.capital[country]
        instruction = f"Name the capital city of {country}."
        teacher = f"The capital city of {country} is {answer}."
    return {
        "task": "instruct",
        "instruction": instruction,
        "input": "",
        "teacher_response": teacher,
        "reference_response": answer,
        "answer": answer,
    }


GENERATORS = {"arith": arith_example, "facts": facts_example, "instruct": instruct_example}

# Each split draws from its own seed stream so that splits never share a random sequence.
SPLIT_SEEDS = {"pretrain": 1000, "finetune": 2000, "eval": 3000, "calibration": 4000}


def generate(task: str, n: int, split: str, seed: int = 0) -> list[dict]:
    """`n` examples of `task` for `split`; the same arguments always give the same rows."""
    if task not in GENERATORS:
        raise ValueError(f"unknown toy task {task!r}; choose from {TASKS}")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    rng = random.Random(SPLIT_SEEDS[split] * 1000 + TASKS.index(task) * 100 + seed)
    rows = []
    for _ in range(n):
        row = GENERATORS[task](rng)
        row["id"] = example_id(task, row["instruction"], row["input"])
        row["kind"] = TASK_KIND[task]
        rows.append(row)
    return rows
