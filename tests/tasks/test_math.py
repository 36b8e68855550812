"""Math dataset tasks on small local files written here: every preset's column layout, every file format, bad
rows, splits and holdout, prompt templates (plain and chat), rewards, and the registry. No network."""

import json
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from sfpo.tasks.base import Task
from sfpo.tasks.math import _DAPO_PREFIX, _DAPO_SUFFIX, PRESETS, TEMPLATES, MathTask, read_rows, register, render_prompt

QWEN = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def write(path, rows):
    """Write rows as .jsonl, .json or .parquet by the path's suffix; returns the path as a string."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


# One row per preset in the column layout of its hub dataset, and the gold answer the task must find in it.
PRESET_ROWS = {
    "dapo-math-17k": ({"data_source": "math_dapo", "ability": "MATH",
                       "prompt": [{"role": "user", "content": _DAPO_PREFIX + "What is 1+1?" + _DAPO_SUFFIX}],
                       "reward_model": {"ground_truth": "2", "style": "rule"}, "extra_info": {"index": "a1"}},
                      "What is 1+1?", "2", "a1"),
    "math": ({"problem": "What is 1+1?", "level": "Level 1", "type": "Algebra",
              "solution": "Adding, $1+1=\\boxed{2}$."}, "What is 1+1?", "2", None),
    "gsm8k": ({"question": "What is 1+1?", "answer": "One and one <<1+1=2>>make 2.\n#### 2"},
              "What is 1+1?", "2", None),
    "math-500": ({"problem": "What is 1+1?", "solution": "$\\boxed{2}$", "answer": "2", "subject": "Algebra",
                  "level": 1, "unique_id": "test/algebra/1.json"}, "What is 1+1?", "2", "test/algebra/1.json"),
    "aime24": ({"id": 60, "problem": "What is 1+1?", "solution": "It is $\\boxed{002}$.", "answer": "2",
                "url": "u", "year": "2024"}, "What is 1+1?", "2", "60"),
    "aime25": ({"problem": "What is 1+1?", "answer": "2", "id": "0"}, "What is 1+1?", "2", "0"),
    "amc23": ({"id": 3, "question": "What is 1+1?", "answer": 2.0, "url": "u"}, "What is 1+1?", "2", "3"),
    "minerva": ({"question": "What is 1+1?", "answer": "2"}, "What is 1+1?", "2", None),
    "olympiadbench": ({"id": 1606, "question": "What is 1+1?", "final_answer": ["$2$"], "solution": ["..."],
                       "is_multiple_answer": False}, "What is 1+1?", "2", "1606"),
}


def test_every_preset_has_a_test_row():
    assert set(PRESET_ROWS) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESET_ROWS))
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_preset_column_layouts_in_every_format(preset, suffix, tmp_path):
    row, question, answer, row_id = PRESET_ROWS[preset]
    split = next(iter(PRESETS[preset].splits)) if len(PRESETS[preset].splits) == 1 else "train"
    task = MathTask(preset, data_files=write(tmp_path / f"d{suffix}", [row] * 1), validation_size=0)
    assert isinstance(task, Task)
    [ex] = task.examples(split)
    assert ex.prompt == question + QWEN
    assert ex.answer == answer
    assert ex.id == (row_id or f"{preset}-{split}-0")
    assert ex.meta["question"] == question


def test_gsm8k_solution_is_cleaned_and_boxed(tmp_path):
    row = PRESET_ROWS["gsm8k"][0]
    [ex] = MathTask("gsm8k", data_files=write(tmp_path / "g.jsonl", [row]), validation_size=0).examples("train")
    assert ex.solution == "One and one make 2.\nThe final answer is $\\boxed{2}$."
    assert ex.meta["reward"] == "gsm8k_accuracy"


def test_json_object_with_one_list_and_dotted_columns(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": [{"q": {"text": "Q1"}, "a": {"final": "7"}}]}))
    task = MathTask(data_files={"test": str(path)}, columns={"question": "q.text", "answer": "a.final"},
                    template="plain")
    assert [(e.prompt, e.answer) for e in task.examples("test")] == [("Q1", "7")]


def test_bad_rows_are_reported_and_skipped(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    good = {"problem": "Q", "solution": "$\\boxed{1}$"}
    lines = [json.dumps(good), json.dumps({"problem": "Q2", "solution": "no box here"}),  # no gold answer
             "{not json", json.dumps({"problem": "", "solution": "$\\boxed{1}$"}),          # empty question
             json.dumps({"solution": "$\\boxed{1}$"}), json.dumps([1, 2]), json.dumps(good)]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="sfpo.tasks.math"):
        examples = MathTask("math", data_files={"test": str(path)}).examples("test")
    assert [e.id for e in examples] == ["math-test-0", "math-test-6"]
    [record] = [r for r in caplog.records if "skipped" in r.message]
    assert "skipped 5 of 7 rows" in record.message
    assert "['math-test-1', 'math-test-2', 'math-test-3', 'math-test-4', 'math-test-5']" in record.message


def test_missing_file_and_unknown_column_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset file not found: '.*nope.jsonl'"):
        MathTask("math-500", data_files=str(tmp_path / "nope.jsonl")).examples("test")
    path = write(tmp_path / "d.jsonl", [{"problem": "Q", "answer": "1"}])
    with pytest.raises(ValueError, match=r"question column 'question' not found in .*its columns: \['answer', "
                                         r"'problem'\]"):
        MathTask("minerva", data_files=path).examples("test")
    with pytest.raises(ValueError, match="id column 'uid' not found"):  # an id asked for explicitly must exist
        MathTask("math-500", data_files=path, columns={"id": "uid"}).examples("test")
    # a preset's optional column that a local copy lacks is simply not used
    assert MathTask("math-500", data_files=path).examples("test")[0].id == "math-500-test-0"
    with pytest.raises(ValueError, match="unsupported dataset format '.csv'"):
        (tmp_path / "d.csv").write_text("problem,answer\n")
        read_rows(tmp_path / "d.csv")
    (tmp_path / "bad.json").write_text(json.dumps({"a": [], "b": []}))
    with pytest.raises(ValueError, match="exactly one list of objects"):
        read_rows(tmp_path / "bad.json")


@pytest.mark.parametrize("kwargs, match", [
    (dict(dataset="mathh"), "unknown math dataset 'mathh'; presets:"),
    (dict(dataset="math", columns={"qestion": "x"}), "columns has unknown key 'qestion'"),
    (dict(dataset="math", reward="acc"), "unknown reward 'acc'"),
    (dict(dataset="math", splits={"dev": "dev"}), "splits has unknown split 'dev'"),
    (dict(dataset="math", template="no placeholder"), "contain '{question}'"),
    (dict(dataset="math", system_prompt="be brief"), "system_prompt needs a chat template"),
    (dict(), "needs path=<hub name> or data_files"),
    (dict(dataset="dapo-math-17k", test_dataset="math500"), "unknown test_dataset 'math500'"),
    (dict(dataset="math", validation_size=-1), "validation_size must be"),
])
def test_bad_options_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MathTask(**kwargs)


def test_hub_load_offline_is_one_clear_error():
    with pytest.raises(ValueError, match="could not load hub dataset 'openai/gsm8k'.*data_files="):
        MathTask("gsm8k").examples("train")


def test_hub_loading_maps_splits_config_and_columns(monkeypatch):
    """The hub path with datasets.load_dataset replaced by an in-memory Dataset (no network here)."""
    import datasets

    calls = []

    def fake_load(path, config, split):
        calls.append((path, config, split))
        row = PRESET_ROWS["olympiadbench"][0]
        return datasets.Dataset.from_list([row, {**row, "id": 7, "final_answer": []}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = MathTask("olympiadbench")
    assert [(e.id, e.answer) for e in task.examples("test")] == [("1606", "2")]  # the answer-less row is skipped
    assert calls == [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")]  # its only split serves as test
    with pytest.raises(ValueError, match="answer column 'final' not found in hub dataset 'Hothan/OlympiadBench'"):
        MathTask("olympiadbench", columns={"answer": "final"}).examples("test")


def dapo_rows(n, dup=1):
    row = PRESET_ROWS["dapo-math-17k"][0]
    return [{**row, "prompt": [{"role": "user", "content": _DAPO_PREFIX + f"Problem {i}?" + _DAPO_SUFFIX}],
             "extra_info": {"index": f"id{i}"}} for i in range(n) for _ in range(dup)]


def test_single_split_dataset_gets_a_seeded_disjoint_validation_holdout(tmp_path):
    path = write(tmp_path / "dapo.parquet", dapo_rows(100, dup=3))  # DAPO repeats every problem
    task = MathTask("dapo-math-17k", data_files=path, validation_size=8)
    train, val = task.examples("train"), task.examples("validation")
    assert len(train) == 92 and len(val) == 8  # duplicates dropped, then 8 held out
    assert not {e.prompt for e in train} & {e.prompt for e in val}
    again = MathTask("dapo-math-17k", data_files=path, validation_size=8)
    assert again.examples("validation") == val  # same seed, same split
    other = MathTask("dapo-math-17k", data_files=path, validation_size=8, seed=1)
    assert other.examples("validation") != val
    # the holdout is capped at a tenth of the rows; a fraction works too
    assert len(MathTask("dapo-math-17k", data_files=path).examples("validation")) == 10
    assert len(MathTask("dapo-math-17k", data_files=path, validation_size=0.05).examples("validation")) == 5
    assert task.examples("train", 3) == train[:3]
    assert task.available_splits() == ["train", "validation"]  # the single file serves as train now
    with pytest.raises(ValueError, match=r"already serves as the 'train' split.*test_dataset"):
        task.examples("test")


def test_dapo_instructions_are_stripped_and_duplicates_dropped(tmp_path, caplog):
    path = write(tmp_path / "dapo.jsonl", dapo_rows(2, dup=2))
    with caplog.at_level(logging.INFO, logger="sfpo.tasks.math"):
        examples = MathTask("dapo-math-17k", data_files=path, validation_size=0).examples("train")
    assert [e.prompt for e in examples] == ["Problem 0?" + QWEN, "Problem 1?" + QWEN]
    assert any("dropped 2 repeated questions" in r.message for r in caplog.records)
    kept = MathTask("dapo-math-17k", data_files=path, validation_size=0, dedupe=False).examples("train")
    assert len(kept) == 4


def test_test_dataset_supplies_the_test_split_with_its_own_reward(tmp_path):
    dapo = write(tmp_path / "dapo.jsonl", dapo_rows(20))
    gsm = write(tmp_path / "gsm.jsonl", [PRESET_ROWS["gsm8k"][0]])
    task = MathTask("dapo-math-17k", data_files=dapo,
                    test_dataset={"dataset": "gsm8k", "data_files": {"test": gsm}})
    [ex] = task.examples("test")
    assert ex.meta["reward"] == "gsm8k_accuracy"
    assert task.reward("#### 2", ex) == 1.0  # scored by GSM8K's reward, not math_accuracy
    assert task.available_splits() == ["train", "validation", "test"]


def test_eval_only_dataset_has_only_test(tmp_path):
    task = MathTask("math-500", data_files=write(tmp_path / "m.jsonl", [PRESET_ROWS["math-500"][0]]))
    assert len(task.examples("test")) == 1
    with pytest.raises(ValueError, match=r"no 'train' split; it has \['test'\]"):
        task.examples("train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        task.examples("dev")


def test_rewards_through_the_task(tmp_path):
    path = write(tmp_path / "m.jsonl", [{"problem": "Half?", "answer": "\\frac{1}{2}"}])
    task = MathTask("math-500", data_files=path)
    [ex] = task.examples("test")
    assert task.reward("so \\boxed{0.5}", ex) == 1.0
    assert task.reward("so \\boxed{0.4}", ex) == 0.0
    assert task.reward("0.5", ex) == 0.0
    paper = MathTask("math-500", data_files=path, reward="sfpo_math")
    [ex] = paper.examples("test")
    assert [paper.reward(c, ex) for c in ("\\boxed{1/2}", "\\boxed{3}", "3")] == [1.0, 0.1, 0.0]


def test_templates():
    assert TEMPLATES["qwen_math"] == "{question}" + QWEN
    assert render_prompt("What is $\\frac{1}{2}$?") == "What is $\\frac{1}{2}$?" + QWEN
    assert render_prompt("Q", "plain") == "Q"
    # a custom template keeps its own LaTeX braces and the question's
    assert render_prompt("{x}", "Solve: {question} Answer in \\boxed{}.") == "Solve: {x} Answer in \\boxed{}."


def make_chat_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def test_chat_template_rendering(tmp_path):
    tok = make_chat_tokenizer()
    assert render_prompt("Q", "qwen_math", tok) == "<|user|>Q" + QWEN + "<|end|><|assistant|>"
    assert render_prompt("Q", "plain", tok, system_prompt="S") == "<|system|>S<|end|><|user|>Q<|end|><|assistant|>"
    path = write(tmp_path / "m.jsonl", [{"problem": "Q", "answer": "1"}])
    [ex] = MathTask("math-500", data_files=path, chat_template=tok, template="plain").examples("test")
    assert ex.prompt == "<|user|>Q<|end|><|assistant|>"
    # a tokenizer given by path (as a YAML config would) is loaded with AutoTokenizer
    tok.save_pretrained(tmp_path / "tok")
    [ex] = MathTask("math-500", data_files=path, chat_template=str(tmp_path / "tok"), template="plain",
                    system_prompt="S").examples("test")
    assert ex.prompt == "<|system|>S<|end|><|user|>Q<|end|><|assistant|>"


def test_register_and_the_task_registry(tmp_path):
    registered = {}
    register(registered.__setitem__)
    assert set(registered) == set(PRESETS) | {"math-dataset"}
    from sfpo.tasks import get_task

    path = write(tmp_path / "m.jsonl", [{"problem": "Q", "answer": "1"}])
    task = get_task("math-500", data_files=path)
    assert task.name == "math-500" and task.examples("test")[0].answer == "1"
    with pytest.raises(ValueError, match="has no option 'bogus'"):
        get_task("aime24", bogus=1)


def test_a_single_data_file_serves_the_split_asked_for(tmp_path):
    """`sfpo eval --task gsm8k:data_files=test.jsonl` asks for "test": the one file is it (it used to be train)."""
    path = write(tmp_path / "test.jsonl", [PRESET_ROWS["gsm8k"][0]] * 3)
    task = MathTask("gsm8k", data_files=path, validation_size=0)
    assert "test" in task.available_splits()
    assert [ex.answer for ex in task.examples("test")] == ["2"] * 3
    with pytest.raises(ValueError, match="already serves as the 'test' split"):  # never train on test rows
        task.examples("train")
    assert len(MathTask("gsm8k", data_files=path, validation_size=0).examples("train")) == 3  # as before
    # a test_dataset still wins for the test split
    other = write(tmp_path / "m.jsonl", [PRESET_ROWS["math-500"][0]])
    with_test = MathTask("gsm8k", data_files=path, test_dataset={"dataset": "math-500", "data_files": other})
    assert [ex.meta["source"] for ex in with_test.examples("test")] == ["math-500"]


@pytest.mark.parametrize("source", ["/no/such/tokenizer", "./missing_tok", "~/nope/tok", "a/b/c"])
def test_a_missing_chat_template_path_is_one_error_before_anything_loads(tmp_path, source):
    path = write(tmp_path / "t.jsonl", [PRESET_ROWS["gsm8k"][0]])
    with pytest.raises(ValueError, match=r"chat_template=.*no such file or folder"):
        MathTask("gsm8k", data_files=path, chat_template=source)


def test_an_unloadable_chat_template_name_is_one_clear_error(tmp_path):
    path = write(tmp_path / "t.jsonl", [PRESET_ROWS["gsm8k"][0]])
    folder = tmp_path / "not_a_tokenizer"
    folder.mkdir()
    task = MathTask("gsm8k", data_files=path, chat_template=str(folder))
    with pytest.raises(ValueError, match=r"chat_template=.*no tokenizer could be loaded"):
        task.examples("train")


def test_several_training_datasets_each_with_its_own_columns(tmp_path):
    """DAPO-Math-17K + MATH as the paper trained, plus a custom table with its own column names: one task."""
    dapo = write(tmp_path / "dapo.parquet", [PRESET_ROWS["dapo-math-17k"][0]])
    math = write(tmp_path / "math.jsonl", [{"problem": f"MATH {i}?", "solution": f"so $\\boxed{{{i}}}$"}
                                          for i in range(12)])
    own = write(tmp_path / "own.json", [{"q": f"Own {i}?", "a": str(100 + i)} for i in range(8)])
    task = MathTask(train_datasets=[{"dataset": "dapo-math-17k", "data_files": dapo},
                                    {"dataset": "math", "data_files": math},
                                    {"data_files": own, "columns": {"question": "q", "answer": "a"}, "name": "own",
                                     "reward": "math_accuracy"}],
                    reward="sfpo_math", validation_size=2, test_dataset={"dataset": "math-500", "data_files": write(
                        tmp_path / "m5.jsonl", [PRESET_ROWS["math-500"][0]])})
    train, val = task.examples("train"), task.examples("validation")
    everything = train + val
    assert len(everything) == 1 + 12 + 8 and len(val) == 2
    by_source = {ex.meta["question"]: (ex.meta["source"], ex.answer, ex.meta["reward"]) for ex in everything}
    assert by_source["What is 1+1?"] == ("dapo-math-17k", "2", "sfpo_math")  # the DAPO instruction stripped
    assert by_source["MATH 7?"] == ("math", "7", "sfpo_math")  # answer from the solution's box
    assert by_source["Own 3?"] == ("own", "103", "math_accuracy")  # its own columns and reward
    assert all(ex.prompt.endswith(QWEN) for ex in everything)  # one template for all
    assert task.available_splits() == ["train", "validation", "test"]
    assert [ex.meta["source"] for ex in task.examples("test")] == ["math-500"]
    again = MathTask(train_datasets=[{"dataset": "dapo-math-17k", "data_files": dapo},
                                     {"dataset": "math", "data_files": math},
                                     {"data_files": own, "columns": {"question": "q", "answer": "a"}, "name": "own"}],
                     validation_size=2)
    assert [ex.meta["question"] for ex in again.examples("validation")] == [ex.meta["question"] for ex in val]


@pytest.mark.parametrize("kwargs, match", [
    (dict(train_datasets=[]), "train_datasets is empty"),
    (dict(train_datasets=["nope"]), "unknown preset 'nope'"),
    (dict(dataset="math", train_datasets=["math"]), "replaces dataset/data_files/path"),
])
def test_train_datasets_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MathTask(**kwargs)


def test_the_official_sfpo_instruction_is_a_named_template():
    import yaml

    from pathlib import Path

    cfg = Path(__file__).resolve().parents[2] / "configs" / "paper" / "sfpo_qwen2.5-math-1.5b.yaml"
    template = yaml.safe_load(cfg.read_text())["task"]["kwargs"]["template"]
    assert template in (TEMPLATES["sfpo_official"], "sfpo_official")
    text = render_prompt("What is 1+1?", "sfpo_official")
    assert text.startswith("Please solve the following math problem: What is 1+1?. The assistant first thinks")
    assert text.endswith("Return the final answer in \\boxed{} tags, for example \\boxed{1}. Let's solve this step "
                         "by step. ")
