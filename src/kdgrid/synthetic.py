"""The embedded synthetic task suite: two families that mirror the paper's, in LLM-Adapters format.

math (like Math10K and its six test sets): word problems answered with a short rationale ending in
"The answer is N", scored on the last number of the generation:
- syn_arith: one operation (+, -, *) on one-digit numbers;
- syn_twostep: an addition, then a subtraction of its result;
- syn_choice: a one-step problem with five options (A)-(E), answered with the letter (AQuA-like);
  no capital A-E appears in its rationale before the answer letter (the paper's AQuA rule reads
  the first one).
The rationale writes each equation ("3 + 4 = 7"), so an answer is a table of arithmetic facts the
model must learn; the numbers are kept small (sums of 1-6, differences below 13, products of 2-4),
about 100 facts, so the larger tiny models learn many of them within the demo's budget and the
smallest few.

commonsense (like Commonsense15K and its eight test sets): questions about a closed world of four
categories of five things each, answered in the paper's keyword format after the rationale "it is
a kind of C"; the keyword is the first keyword in the output:
- syn_bool: "X has a T. can X eat it?", true/false (BoolQ-like): true for the fruits;
- syn_pick: what kind of thing T is, with the four categories always listed as answer1-answer4 in
  the same order (SIQA-like);
- syn_option: fill in the blank with the category of a thing, option1/option2, the two options
  listed in the fixed category order animal, fruit, tool, vehicle (WinoGrande-like).
Each answer is a lookup of the one thing the prompt names, a fixed number of tokens before the
response: the knowledge is which thing is of which kind, not how to match words across the prompt
(which the tiny models do not learn within the budget; docs/tiny_world.md has the measurements).
syn_bool and syn_pick have 400 distinct prompts each (20 names x 20 things), which bounds a
commonsense training set at about 1,100 records.

`generate_family(family, seed, n_train, n_test)` returns one training set mixing the family's
tasks and one test set per task; no test item's (instruction, input) appears in the training set,
so a test item is a new combination of facts and numbers the training set teaches. Everything is
drawn from `random.Random` seeded with a string, so the same arguments give the same records on
every machine and Python version.
"""

from __future__ import annotations

import random

from .errors import KdgridError, unknown

FAMILY_TASKS = {
    "math": ("syn_arith", "syn_twostep", "syn_choice"),
    "commonsense": ("syn_bool", "syn_pick", "syn_option"),
}

# Names avoid the capitals A-E so no name can be read as an AQuA answer letter.
NAMES = ["Tom", "Sam", "Lily", "Mia", "Max", "Zoe", "Ryan", "Nina", "Omar", "Paul",
         "Kate", "Jack", "Luke", "Rosa", "Sara", "Tina", "Hugo", "Ivan", "Gina", "Leo"]
ITEMS = ["apples", "pencils", "marbles", "cookies", "stickers", "books", "cards", "shells", "coins", "flowers"]
CONTAINERS = ["bags", "boxes", "jars", "baskets"]

# The commonsense world: a closed vocabulary of four categories, five things each.
KINDS = {
    "animal": ["cat", "dog", "cow", "fox", "owl"],
    "fruit": ["plum", "pear", "lemon", "grape", "peach"],
    "tool": ["saw", "drill", "hammer", "wrench", "rake"],
    "vehicle": ["bus", "car", "van", "truck", "boat"],
}
CATEGORY = {thing: category for category, things in KINDS.items() for thing in things}
LETTERS = "ABCDE"


def _record(instruction: str, output: str, answer: str) -> dict:
    return {"instruction": instruction, "input": "", "output": output, "answer": answer}


# --- math ---------------------------------------------------------------------------------------

def _one_step(rng: random.Random) -> tuple[str, str, int]:
    """(question, equation, result) of a one-operation word problem."""
    name, friend = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    op = rng.choice("+-*")
    if op == "+":
        a, b = rng.randint(1, 6), rng.randint(1, 6)
        question = f"{name} has {a} {item}. Then {name} gets {b} more {item}. How many {item} does {name} have now?"
        return question, f"{a} + {b} = {a + b}", a + b
    if op == "-":
        a = rng.randint(3, 9)
        b = rng.randint(1, a - 1)
        question = f"{name} has {a} {item}. Then {name} gives {b} {item} to {friend}. How many {item} does {name} have left?"
        return question, f"{a} - {b} = {a - b}", a - b
    a, b = rng.randint(2, 4), rng.randint(2, 4)
    container = rng.choice(CONTAINERS)
    question = f"{name} has {a} {container} with {b} {item} in each. How many {item} does {name} have?"
    return question, f"{a} * {b} = {a * b}", a * b


def syn_arith(rng: random.Random) -> dict:
    question, equation, result = _one_step(rng)
    return _record(question, f"{equation}. The answer is {result}", str(result))


def syn_twostep(rng: random.Random) -> dict:
    name, friend = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    a, b = rng.randint(1, 6), rng.randint(1, 6)
    c = rng.randint(1, a + b - 1)
    question = (f"{name} has {a} {item}. Then {name} gets {b} more {item} and gives {c} {item} to {friend}. "
                f"How many {item} does {name} have left?")
    result = a + b - c
    return _record(question, f"{a} + {b} = {a + b}. {a + b} - {c} = {result}. The answer is {result}", str(result))


def syn_choice(rng: random.Random) -> dict:
    question, equation, result = _one_step(rng)
    options = {result}
    while len(options) < 5:
        options.add(max(0, result + rng.choice([-3, -2, -1, 1, 2, 3, 4])))
    options = sorted(options)
    rng.shuffle(options)
    letter = LETTERS[options.index(result)]
    choices = " ".join(f"({L}) {value}" for L, value in zip(LETTERS, options))
    output = f"{equation}, which is ({letter}). The answer is {letter}"
    return _record(f"{question} Answer Choices: {choices}", output, letter)


# --- commonsense --------------------------------------------------------------------------------

def _keyword_answer(keyword: str, reason: str = "") -> str:
    return f"{reason}, so the correct answer is {keyword}" if reason else f"the correct answer is {keyword}"


def _kind_of(thing: str) -> str:
    return f"it is a kind of {CATEGORY[thing]}"


def syn_bool(rng: random.Random) -> dict:
    name = rng.choice(NAMES)
    edible = rng.random() < 0.5
    thing = rng.choice(KINDS["fruit"] if edible else [t for t in CATEGORY if CATEGORY[t] != "fruit"])
    answer = "true" if edible else "false"
    instruction = (f"Please answer the following question with true or false, question: {name} has a {thing}. "
                   f"can {name} eat it?\n\nAnswer format: true/false")
    return _record(instruction, _keyword_answer(answer, _kind_of(thing)), answer)


def syn_pick(rng: random.Random) -> dict:
    name = rng.choice(NAMES)
    thing = rng.choice(list(CATEGORY))
    keyword = f"answer{list(KINDS).index(CATEGORY[thing]) + 1}"
    lines = "\n\n".join(f"Answer{i}: {category}" for i, category in enumerate(KINDS, start=1))
    instruction = (f"Please choose the correct answer to the question: {name} has a {thing}. what kind of thing is it?"
                   f"\n\n{lines}\n\nAnswer format: answer1/answer2/answer3/answer4")
    return _record(instruction, _keyword_answer(keyword, _kind_of(thing)), keyword)


def syn_option(rng: random.Random) -> dict:
    name = rng.choice(NAMES)
    thing = rng.choice(list(CATEGORY))
    options = sorted([CATEGORY[thing], rng.choice([c for c in KINDS if c != CATEGORY[thing]])],
                     key=list(KINDS).index)  # listed in the fixed category order
    keyword = f"option{options.index(CATEGORY[thing]) + 1}"
    instruction = (f"Please choose the correct answer to fill in the blank to complete the given sentence: "
                   f"{name} has a {thing}, it is a kind of _.\n\nOption1: {options[0]}\n\nOption2: {options[1]}"
                   f"\n\nAnswer format: option1/option2")
    return _record(instruction, _keyword_answer(keyword, _kind_of(thing)), keyword)


GENERATORS = {f.__name__: f for f in [syn_arith, syn_twostep, syn_choice, syn_bool, syn_pick, syn_option]}


# --- sets ---------------------------------------------------------------------------------------

def _key(record: dict) -> tuple[str, str]:
    return record["instruction"], record["input"]


def _draw_unique(generate, rng: random.Random, n: int, taken: set, task: str) -> list[dict]:
    records = []
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise KdgridError(f"synthetic task {task}: cannot draw {n} distinct items (got {len(records)}); ask for fewer")
        record = generate(rng)
        if _key(record) not in taken:
            taken.add(_key(record))
            records.append(record)
    return records


def generate_family(family: str, seed: int, n_train: int, n_test: int,
                    tasks: list[str] | None = None) -> tuple[list[dict], dict[str, list[dict]]]:
    """(training records mixing the family's tasks, {task: test records}), disjoint, deterministic."""
    if family not in FAMILY_TASKS:
        raise unknown("family", family, FAMILY_TASKS)
    for task in tasks or ():
        if task not in FAMILY_TASKS[family]:
            raise unknown(f"{family} synthetic task", task, FAMILY_TASKS[family])
    if n_train < 0 or n_test < 0:
        raise KdgridError(f"n_train and n_test must be >= 0 (got {n_train}, {n_test})")
    family_tasks = FAMILY_TASKS[family]
    taken: set = set()
    tests = {}
    for task in family_tasks:  # every task's test set is drawn, so a task subset does not change them
        rng = random.Random(f"kdgrid-{family}-{task}-test-{seed}")
        tests[task] = _draw_unique(GENERATORS[task], rng, n_test, taken, task)
    train_rng = random.Random(f"kdgrid-{family}-train-{seed}")
    counts = [n_train // len(family_tasks) + (i < n_train % len(family_tasks)) for i in range(len(family_tasks))]
    train = []
    for task, count in zip(family_tasks, counts):
        train += _draw_unique(GENERATORS[task], train_rng, count, taken, task)
    train_rng.shuffle(train)
    if tasks:
        tests = {t: tests[t] for t in tasks}
    return train, tests


def corpus_records() -> list[dict]:
    """Fixed text the tiny tokenizer is trained on (both families, seed 0; independent of any user seed)."""
    records = []
    for family in FAMILY_TASKS:
        train, _ = generate_family(family, seed=0, n_train=600, n_test=0)
        records += train
    return records
