"""Math datasets as Tasks: DAPO-Math-17K, MATH, GSM8K and the paper's evaluation sets, from the hub or local files.

A preset names a dataset's hub location, splits and columns; every part of it can be overridden, so any
problem/answer table in .jsonl, .json or .parquet works too. Rows without a usable question or gold answer are
reported and skipped. Prompts are rendered with the paper's Qwen-Math template and optionally a tokenizer's chat
template. This module does not download anything itself (the hub goes through ``datasets.load_dataset``) and
does not judge answers (``sfpo.rewards`` does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from sfpo.rewards import MathVerifier, default_verifier, extract_boxed, get_reward, gold_answer
from sfpo.tasks.base import SPLITS, Example, Task

__all__ = ["MathTask", "DatasetSpec", "PRESETS", "TEMPLATES", "render_prompt", "read_rows", "register"]

logger = logging.getLogger(__name__)

TEMPLATES = {
    # the SFPO paper's (and Qwen2.5-Math's) instruction; \boxed{} is what the rewards read
    "qwen_math": "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "plain": "{question}",
    # the instruction of the official SFPO training scripts (github.com/Urheen/SFPO), which the paper's runs used
    "sfpo_official": ("Please solve the following math problem: {question}. The assistant first thinks about the "
                      "reasoning process step by step and then provides the user with the answer. Return the final "
                      "answer in \\boxed{} tags, for example \\boxed{1}. Let's solve this step by step. "),
}

# DAPO-Math-17K ships its prompts wrapped in an "Answer: $Answer" instruction that conflicts with \boxed{}.
_DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the "
                "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
_DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
_MATH_VERIFY_REWARDS = ("math_accuracy", "sfpo_math")  # the rewards that take ``refuse_unevaluated``


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and which columns hold what. Column names may be dotted paths into nested fields
    ("reward_model.ground_truth")."""

    path: str | None = None
    """Hub name for ``datasets.load_dataset``."""
    config: str | None = None
    """Hub configuration name (``openai/gsm8k`` needs "main")."""
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "test": "test"})
    """Our split → the hub's split. A missing "validation" is held out of "train" (seeded)."""
    question: str = "problem"
    """Column with the problem: a string, or a chat-message list whose last user message is the problem."""
    answer: str = "answer"
    """Column with the gold answer: a final answer, a worked solution (its last \\boxed{} or "#### n" is taken),
    a verl ``{"ground_truth": ...}`` dict, or a list of answers."""
    answer_in_box: bool = False
    """The answer column is a worked solution whose last \\boxed{} is the answer; a row without a box is bad
    (without this, a box-less solution would become its own "gold answer")."""
    solution: str | None = None
    """Optional column with a worked solution (for a supervised warm start)."""
    id: str | None = None
    """Optional column with a stable row id (else "<task>-<split>-<row>")."""
    reward: str = "math_accuracy"
    """Reward from ``sfpo.rewards.REWARDS`` that scores this dataset's completions."""
    dedupe: bool = False
    """Drop rows whose question repeats an earlier one (DAPO-Math-17K holds each problem ~100 times)."""
    strip_dapo_instructions: bool = False
    """Remove DAPO's "Answer: $Answer" instruction around the problem, so the template's \\boxed{} is the only
    answer format asked for."""
    gsm8k_solution: bool = False
    """The solution column is GSM8K's: drop its <<calculator>> notes and end it with a \\boxed{} answer."""


PRESETS: dict[str, DatasetSpec] = {
    "dapo-math-17k": DatasetSpec("BytedTsinghua-SIA/DAPO-Math-17k", splits={"train": "train"}, question="prompt",
                                 answer="reward_model.ground_truth", id="extra_info.index", dedupe=True,
                                 strip_dapo_instructions=True),
    # MATH (Hendrycks); lighteval/MATH is gone from the hub, this is its mirror with the same columns
    "math": DatasetSpec("DigitalLearningGmbH/MATH-lighteval", answer="solution", answer_in_box=True,
                        solution="solution"),
    "gsm8k": DatasetSpec("openai/gsm8k", config="main", question="question", answer="answer", solution="answer",
                         reward="gsm8k_accuracy", gsm8k_solution=True),
    "math-500": DatasetSpec("HuggingFaceH4/MATH-500", splits={"test": "test"}, solution="solution",
                            id="unique_id"),
    "aime24": DatasetSpec("HuggingFaceH4/aime_2024", splits={"test": "train"}, solution="solution", id="id"),
    "aime25": DatasetSpec("math-ai/aime25", splits={"test": "test"}, id="id"),
    "amc23": DatasetSpec("math-ai/amc23", splits={"test": "test"}, question="question", id="id"),
    "minerva": DatasetSpec("math-ai/minervamath", splits={"test": "test"}, question="question"),
    "olympiadbench": DatasetSpec("Hothan/OlympiadBench", config="OE_TO_maths_en_COMP", splits={"test": "train"},
                                 question="question", answer="final_answer", id="id"),
}


def render_prompt(question: str, template: str = "qwen_math", tokenizer: Any = None,
                  system_prompt: str | None = None) -> str:
    """The prompt text for ``question``: ``template`` (a TEMPLATES name or a string containing "{question}"),
    then, when ``tokenizer`` is given, its chat template as a user turn (plus an optional system turn) with the
    assistant turn opened."""
    text = TEMPLATES.get(template, template)
    if "{question}" not in text:
        raise ValueError(f"template must be one of {sorted(TEMPLATES)} or contain '{{question}}', got {template!r}")
    # replace, not str.format: LaTeX braces in a template ("\boxed{}") must stay as written
    text = text.replace("{question}", question)
    if tokenizer is None:
        if system_prompt:
            raise ValueError("system_prompt needs a chat template: pass chat_template=<tokenizer name or path>")
        return text
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ---------------------------------------------------------------------------------------------------- reading

def read_rows(path: str | Path) -> Iterable[dict | None]:
    """The rows of a local .jsonl, .json (a list of objects, or one key holding that list) or .parquet file.
    A malformed JSON line yields None (reported as a bad row by the caller) instead of failing the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file not found: {str(p)!r}")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return list(_read_jsonl(p))
    if suffix == ".json":
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if text.strip() else []  # an empty file has no rows (the caller says so)
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(p)!r} is not valid JSON: {e}") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"{str(p)!r}: a .json dataset must be a list of objects or an object with exactly "
                                 f"one list of objects, found keys {sorted(data)}")
            data = lists[0]
        if not isinstance(data, list):
            raise ValueError(f"{str(p)!r}: a .json dataset must be a list of objects, got {type(data).__name__}")
        return [row if isinstance(row, dict) else None for row in data]
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # a dependency of `datasets`; imported here so other formats do not need it

        return pq.read_table(p).to_pylist()
    raise ValueError(f"{str(p)!r}: unsupported dataset format {suffix!r}; use one of {list(_LOCAL_SUFFIXES)}")


def _read_jsonl(p: Path) -> Iterable[dict | None]:
    with p.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            yield row if isinstance(row, dict) else None


def _load_hub(path: str, config: str | None, split: str, columns: list[str]) -> tuple[list[dict], list[str]]:
    import datasets  # the `train` extra; imported only when a hub dataset is asked for

    try:
        ds = datasets.load_dataset(path, config, split=split)
    except (OSError, ValueError) as e:  # offline (ConnectionError), unknown name or config, unknown split
        raise ValueError(f"could not load hub dataset {path!r} (config={config!r}, split={split!r}): {e}. Offline "
                         "or not on the hub? Pass data_files=<.jsonl/.json/.parquet file or {split: file}> to load "
                         "a local copy") from e
    names = list(ds.column_names)
    # only the mapped columns: DAPO-Math-17K has 1.8M rows and turning unused fields into dicts costs minutes
    keep = [c for c in names if c in columns]
    return list(ds.select_columns(keep)), names


def _get(row: dict, path: str) -> Any:
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _question_text(value: Any, strip_dapo: bool) -> str | None:
    if isinstance(value, list):  # a chat prompt: the problem is the last user message
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role", "user") == "user"]
        value = users[-1] if users else None
    if not isinstance(value, str):
        return None
    if strip_dapo:
        value = value.removeprefix(_DAPO_PREFIX).removesuffix(_DAPO_SUFFIX)
    return value.strip() or None


def _gsm8k_solution(text: str, answer: str) -> str:
    rationale = re.sub(r"<<[^>]*>>", "", text.rsplit("####", 1)[0]).strip()
    return f"{rationale}\nThe final answer is $\\boxed{{{answer}}}$."


# ---------------------------------------------------------------------------------------------------- the task

class MathTask:
    """Problems with gold answers from a preset (``PRESETS``) or your own files/hub dataset.

    ``dataset``: a preset name, or None for a custom table (then give ``path`` or ``data_files`` and ``columns``).
    ``path``/``config_name`` override the preset's hub name and configuration. ``data_files``: a local file, or
    ``{split: file}``; a single file is the preset's only split if it has one, else "train". ``columns``
    overrides column names (keys: question, answer, solution, id); ``splits`` overrides split names.
    ``template``: a TEMPLATES name or a string with "{question}"; ``chat_template``: a tokenizer (object, or
    name/path for ``AutoTokenizer``) whose chat template wraps the prompt, with ``system_prompt`` as system turn.
    ``reward``: a ``sfpo.rewards`` name ("sfpo_math" for the paper's 1/0.1/0); ``timeout_s``: per-answer check
    limit. ``validation_size``: rows (int) or fraction (float < 1) held out of train when there is no
    validation split, at most a tenth of train, chosen by a hash of (seed, question). ``test_dataset``: a preset
    name, or MathTask options such as ``{"dataset": "math-500", "data_files": "m.jsonl"}``, whose test split
    serves as this task's test split (DAPO-Math-17K has none); its examples keep their own reward.
    ``refuse_unevaluated`` (on): the math-verify rewards score a box of unevaluated arithmetic (``-2 \\times 8``)
    as wrong against a numeric gold (``-16``); False reproduces plain math-verify. ``train_datasets``: several
    training sets in one task (the paper: ``[dapo-math-17k, math]``), each a preset name or MathTask options with
    its own columns/files/reward (``{"dataset": "math", "data_files": "m.jsonl"}``, ``{"data_files": "x.jsonl",
    "columns": {"question": "q", "answer": "a"}}``); their train splits are concatenated in order, validation is
    held out of the whole, and the task's ``reward`` is the default of each.
    """

    def __init__(self, dataset: str | None = None, *, path: str | None = None, config_name: str | None = None,
                 data_files: str | dict[str, str] | None = None, columns: dict[str, str] | None = None,
                 splits: dict[str, str] | None = None, template: str = "qwen_math", chat_template: Any = None,
                 system_prompt: str | None = None, reward: str | None = None, timeout_s: float = 5.0,
                 validation_size: int | float = 500, seed: int = 0, dedupe: bool | None = None,
                 test_dataset: str | dict[str, Any] | None = None, name: str | None = None,
                 refuse_unevaluated: bool = True, train_datasets: list[str | dict[str, Any]] | None = None) -> None:
        if dataset is not None and dataset not in PRESETS:
            raise ValueError(f"unknown math dataset {dataset!r}; presets: {sorted(PRESETS)} (or dataset=None with "
                             "path/data_files and columns)")
        spec = PRESETS[dataset] if dataset else DatasetSpec()
        unknown = sorted(set(columns or {}) - {"question", "answer", "solution", "id"})
        if unknown:
            raise ValueError(f"columns has unknown key {unknown[0]!r}; keys: question, answer, solution, id")
        self.explicit_columns = set(columns or {})
        spec = replace(spec, **(columns or {}))
        if columns and "answer" in columns:  # a remapped answer column holds a final answer, boxed or not
            spec = replace(spec, answer_in_box=False)
        if path is not None or config_name is not None:
            config = config_name if config_name is not None else spec.config
            spec = replace(spec, path=path or spec.path, config=config)
        if splits is not None:
            bad = sorted(set(splits) - set(SPLITS))
            if bad:
                raise ValueError(f"splits has unknown split {bad[0]!r}; splits: {SPLITS}")
            spec = replace(spec, splits=dict(splits))
        if dedupe is not None:
            spec = replace(spec, dedupe=dedupe)
        if reward is not None:
            get_reward(reward)  # fail now, with the list of names, not at the first rollout
            spec = replace(spec, reward=reward)
        self._single_file = str(data_files) if isinstance(data_files, (str, Path)) else None
        if self._single_file is not None:
            only = next(iter(spec.splits)) if len(spec.splits) == 1 else "train"
            data_files = {only: self._single_file}
            self._single_default = only
        if data_files is not None:
            bad = sorted(set(data_files) - set(SPLITS))
            if bad:
                raise ValueError(f"data_files has unknown split {bad[0]!r}; splits: {SPLITS}")
        if train_datasets is not None:
            if dataset is not None or data_files is not None or path is not None:
                raise ValueError("train_datasets replaces dataset/data_files/path: list every training set in it")
            if not train_datasets:
                raise ValueError("train_datasets is empty: give one preset name or options dict per training set")
            train_datasets = [{"dataset": d} if isinstance(d, str) else dict(d) for d in train_datasets]
            for d in train_datasets:
                if d.get("dataset") is not None and d["dataset"] not in PRESETS:
                    raise ValueError(f"train_datasets: unknown preset {d['dataset']!r}; presets: {sorted(PRESETS)}")
        elif data_files is None and spec.path is None:
            raise ValueError("a custom math dataset needs path=<hub name> or data_files=<local file(s)>")
        if isinstance(test_dataset, str):
            test_dataset = {"dataset": test_dataset}
        if test_dataset is not None and test_dataset.get("dataset") not in PRESETS:
            raise ValueError(f"unknown test_dataset {test_dataset.get('dataset')!r}; presets: {sorted(PRESETS)}")
        if system_prompt and chat_template is None:
            raise ValueError("system_prompt needs a chat template: pass chat_template=<tokenizer, name or path>")
        _check_tokenizer_source(chat_template)
        if not (isinstance(validation_size, int) and validation_size >= 0 or 0 < validation_size < 1):
            raise ValueError(f"validation_size must be a row count >= 0 or a fraction in (0, 1), got {validation_size}")
        render_prompt("x", template)  # validates the template before any data is read
        self.name = name or dataset or "math-dataset"
        self.spec, self.data_files = spec, data_files
        self.template, self.system_prompt = template, system_prompt
        self._tokenizer_arg = chat_template
        self._tokenizer = None
        self.timeout_s, self.validation_size, self.seed = timeout_s, validation_size, seed
        self.test_dataset = test_dataset
        self.refuse_unevaluated = refuse_unevaluated
        self.train_datasets = train_datasets
        self._sub_kwargs = dict(template=template, chat_template=chat_template, system_prompt=system_prompt,
                                timeout_s=timeout_s, seed=seed, refuse_unevaluated=refuse_unevaluated)
        self._verifier: MathVerifier | None = None
        self._cache: dict[str, list[Example]] = {}

    # ------------------------------------------------------------------ Task protocol
    def examples(self, split: str, n: int | None = None) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
        if split not in self._cache:
            self._load(split)
        out = self._cache[split]
        return list(out if n is None else out[:n])

    def reward(self, completion: str, example: Example) -> float:
        name = example.meta.get("reward", self.spec.reward)
        kwargs = {"refuse_unevaluated": self.refuse_unevaluated} if name in _MATH_VERIFY_REWARDS else {}
        value = get_reward(name)([completion], answer=[example.answer], verifier=self._get_verifier(), **kwargs)[0]
        return 0.0 if value is None else float(value)

    # ------------------------------------------------------------------ loading
    def available_splits(self) -> list[str]:
        sources = {"train"} if self.train_datasets is not None else set(self.data_files or self.spec.splits)
        if self._single_file is not None and not self._cache:
            sources.add("test")  # until the file has served as train
        if "validation" not in sources and "train" in sources:
            sources.add("validation")  # held out of train
        if self.test_dataset:
            sources.add("test")
        return [s for s in SPLITS if s in sources]

    def _load(self, split: str) -> None:
        if self.train_datasets is not None and split in ("train", "validation"):
            self._load_train_mix()
            return
        sources = {"train": "mix"} if self.train_datasets is not None else self.data_files or self.spec.splits
        if self._single_file is not None and not self.test_dataset:
            sources = self._single_file_role(split)
        if split == "test" and self.test_dataset and "test" not in sources:
            sub = MathTask(**{**self._sub_kwargs, **self.test_dataset})
            self._cache["test"] = sub.examples("test")
            return
        if split in sources:
            examples = self._examples_from(split, sources[split])
            if split == "train" and "validation" not in sources:
                train, val = self._holdout(examples)
                self._cache["train"], self._cache["validation"] = train, val
            else:
                self._cache[split] = examples
            return
        if split == "validation" and "train" in sources:
            self._load("train")
            return
        hint = " (pass test_dataset=<preset>, e.g. 'math-500')" if split == "test" else ""
        raise ValueError(f"math task {self.name!r} has no {split!r} split; it has {self.available_splits()}{hint}")

    def _load_train_mix(self) -> None:
        """The train splits of every ``train_datasets`` entry, in order, each read with its own columns and
        reward; validation is held out of the concatenation (seeded by question, as for one dataset)."""
        default = {} if self.spec.reward == DatasetSpec().reward else {"reward": self.spec.reward}
        examples = []
        for entry in self.train_datasets:
            sub = MathTask(**{**self._sub_kwargs, **default, **entry, "validation_size": 0})
            part = sub.examples("train")
            logger.info("%s: %d training problems from %s", self.name, len(part), sub.name)
            examples += part
        self._cache["train"], self._cache["validation"] = self._holdout(examples)

    def _single_file_role(self, split: str) -> dict[str, str]:
        """One ``data_files`` file is the split asked for first: train (validation held out of it) in training,
        test in ``sfpo eval --task gsm8k:data_files=test.jsonl``. Never both: test rows that were trained on
        would be a silently wrong result."""
        wants_test = split == "test"
        if self._single_default == "test" or wants_test == ("test" in self.data_files):
            return self.data_files  # an eval-only preset (math-500): the file is its test split, as always
        if self._cache:
            serving = "test" if "test" in self.data_files else "train"
            raise ValueError(f"{self.name}: the single data_files file {self._single_file!r} already serves as the "
                             f"{serving!r} split; give data_files={{train: <file>, test: <file>}} (or test_dataset=) "
                             f"to have both")
        if wants_test:
            logger.info("%s: the single data_files file %r is the test split", self.name, self._single_file)
            self.data_files = {"test": self._single_file}
        return self.data_files

    def _holdout(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        size = self.validation_size
        m = int(len(examples) * size) if isinstance(size, float) else size
        m = min(m, len(examples) // 10)
        # ordered by a seeded hash of the question, not by position: adding rows to a dataset or changing n
        # never moves a problem between train and validation
        def rank(i: int) -> str:
            return hashlib.sha256(f"{self.seed}/{examples[i].meta['question']}".encode()).hexdigest()

        held = set(sorted(range(len(examples)), key=rank)[:m])
        train = [ex for i, ex in enumerate(examples) if i not in held]
        val = [ex for i, ex in enumerate(examples) if i in held]
        return train, val

    def _examples_from(self, split: str, source: str) -> list[Example]:
        spec = self.spec
        wanted = {"question": spec.question, "answer": spec.answer, "solution": spec.solution, "id": spec.id}
        top = [c.split(".")[0] for c in wanted.values() if c]
        if self.data_files is not None:
            rows = list(read_rows(source))
            present = sorted({k for r in rows if isinstance(r, dict) for k in r})
            origin = repr(source)
        else:
            rows, present = _load_hub(spec.path, spec.config, source, top)
            origin = f"hub dataset {spec.path!r} split {source!r}"
        if not any(isinstance(r, dict) for r in rows):  # before the column check, which would blame a column
            raise ValueError(f"{self.name}: {origin} is empty" if not rows else
                             f"{self.name}: {origin} has no parseable row ({len(rows)} rows, none a JSON object)")
        for role, column in wanted.items():
            if column is None or column.split(".")[0] in present:
                continue
            if role in ("question", "answer") or role in self.explicit_columns:
                raise ValueError(f"{self.name}: {role} column {column!r} not found in {origin}; its columns: "
                                 f"{present}. Map it with columns={{'{role}': <column>}}")
            wanted[role] = None  # a preset's optional column that this copy of the data lacks
        return self._to_examples(rows, wanted, split, origin)

    def _to_examples(self, rows: list[dict | None], cols: dict[str, str | None], split: str,
                     origin: str) -> list[Example]:
        spec, render = self.spec, self._renderer()
        examples, bad, seen, dupes = [], [], set(), 0
        for i, row in enumerate(rows):
            row_id = f"{self.name}-{split}-{i}"
            if isinstance(row, dict) and cols["id"] and _get(row, cols["id"]) is not None:
                row_id = str(_get(row, cols["id"]))
            question = _question_text(_get(row, cols["question"]), spec.strip_dapo_instructions) if row else None
            raw = _get(row, cols["answer"]) if row else None
            if spec.answer_in_box:
                answer = extract_boxed(raw) if isinstance(raw, str) else None
            else:
                answer = gold_answer(raw)
            if not question or not answer:
                bad.append(row_id)
                continue
            if spec.dedupe:
                if question in seen:
                    dupes += 1
                    continue
                seen.add(question)
            solution = _get(row, cols["solution"]) if cols["solution"] else None
            solution = solution if isinstance(solution, str) else ""
            if solution and spec.gsm8k_solution:
                solution = _gsm8k_solution(solution, answer)
            examples.append(Example(render(question), answer, solution, id=row_id,
                                    meta={"question": question, "reward": spec.reward, "source": self.name}))
        if bad:
            logger.warning("%s: skipped %d of %d rows of %s without a usable question or gold answer "
                           "(first ids: %s)", self.name, len(bad), len(rows), origin, bad[:5])
        if dupes:
            logger.info("%s: dropped %d repeated questions from %s", self.name, dupes, origin)
        return examples

    def _renderer(self) -> Callable[[str], str]:
        tokenizer = self._get_tokenizer()
        return lambda q: render_prompt(q, self.template, tokenizer, self.system_prompt)

    def _get_tokenizer(self):
        if self._tokenizer_arg is None or not isinstance(self._tokenizer_arg, (str, Path)):
            return self._tokenizer_arg
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_arg))
            except (OSError, ValueError) as e:  # HFValidationError is a ValueError: an unusable name or path
                raise ValueError(f"chat_template={str(self._tokenizer_arg)!r}: no tokenizer could be loaded from it "
                                 f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        return self._tokenizer

    def _get_verifier(self) -> MathVerifier:
        if self._verifier is None:
            shared = default_verifier()
            # one worker process for all tasks unless this task wants its own time limit
            self._verifier = shared if shared.timeout_s == self.timeout_s else MathVerifier(self.timeout_s)
        return self._verifier


def _check_tokenizer_source(source: Any) -> None:
    """A ``chat_template`` written as a local path must exist: checked when the task is built, so a typo is one
    error before any model loads, not a hub validation traceback after it. Hub names ("Qwen/Qwen2.5-Math-1.5B")
    are checked when the tokenizer loads."""
    if not isinstance(source, (str, Path)):
        return
    text = str(source)
    local = Path(text).expanduser()
    looks_local = text.startswith((".", "~", "/")) or text.count("/") > 1 or "\\" in text
    if looks_local and not local.exists():
        raise ValueError(f"chat_template={text!r}: no such file or folder (give a tokenizer folder, a hub name "
                         "such as Qwen/Qwen2.5-Math-1.5B, or leave it out)")


def register(register_task: Callable[[str, Callable[..., Task]], None]) -> None:
    """Register every preset as a task of the same name, and "math-dataset" for a custom table."""
    from functools import partial

    for preset in PRESETS:
        register_task(preset, partial(MathTask, dataset=preset))
    register_task("math-dataset", MathTask)
