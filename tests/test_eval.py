"""``sfpo eval``: avg@k and unbiased pass@k against hand-computed values (a fake engine whose samples the test
chooses, and a real tiny model whose samples the test re-draws and scores itself), macro averages, best/last
selection by split, resumability (engine calls and model loads counted), task-spec parsing and checkpoint
discovery including LoRA adapter folders. CPU, seconds, no network."""

import json
import os
from pathlib import Path

import pytest
import torch

from tiny import make_model, make_tokenizer
from sfpo.cli import main
from sfpo.config import ConfigError
from sfpo.evaluate import cli as evaluate_cli
from sfpo.evaluate import evaluate, pass_at_k
from sfpo.evaluate.checkpoints import discover_checkpoints
from sfpo.evaluate.specs import load_tasks_file, parse_task_spec
from sfpo.rollout import HFEngine, Rollout, SamplingParams
from sfpo.tasks import TASKS, get_task
from sfpo.tasks.base import Example


# ------------------------------------------------------------------------------------------------ fakes
class KeyTask:
    """Prompts "<split>-<i>"; "yes" is correct (1.0), "close" earns the paper's 0.1 (not correct), else 0."""

    def __init__(self, n: int = 3, name: str = "key", splits=("train", "validation", "test")):
        self.n, self.name, self.splits = n, name, tuple(splits)

    def available_splits(self):
        return list(self.splits)

    def examples(self, split, n=None):
        exs = [Example(f"{self.name}:{split}-{i}", "yes", id=f"{split}-{i}") for i in range(self.n)]
        return exs[:n] if n else exs

    def reward(self, completion, example):
        return {"yes": 1.0, "close": 0.1}.get(completion, 0.0)


class FakeEngine:
    """Prompt i of (model, task, split) gets COUNTS[model][task/split][i] "yes" samples, the rest "close"."""

    def __init__(self, model, counts, log):
        self.model, self.counts, self.log = model, counts, log

    def generate(self, prompts, params):
        self.log.append((self.model, tuple(prompts), params))
        texts = []
        for p in prompts:
            task, rest = p.split(":")
            split, i = rest.rsplit("-", 1)
            c = self.counts[self.model][f"{task}/{split}"][int(i)]
            texts += ["yes"] * c + ["close"] * (params.n - c)
        n = len(texts)
        z = torch.zeros((n, 1), dtype=torch.long)
        return Rollout(z, z, z, z, torch.zeros((n, 1)), texts, torch.zeros(n, dtype=torch.bool))


@pytest.fixture
def fake(monkeypatch):
    """Registers KeyTask variants and replaces model loading and the engine; returns the call logs."""
    get_task("arithmetic")  # load the built-in tasks first: the registry fills itself only when empty
    monkeypatch.setitem(TASKS, "key", KeyTask)
    monkeypatch.setitem(TASKS, "key_test_only", lambda n=3: KeyTask(n, "key_test_only", ("test",)))
    state = {"counts": {}, "loads": [], "calls": []}

    def load(ckpt, device, dtype):
        state["loads"].append(ckpt.name)
        return ckpt.name, None

    monkeypatch.setattr(evaluate_cli, "_load_model", load)
    monkeypatch.setattr(evaluate_cli, "_make_engine",
                        lambda name, model, tok: FakeEngine(model, state["counts"], state["calls"]))
    return state


def make_run(root: Path, steps=(1, 2, 3), best=True) -> Path:
    for s in steps:
        d = root / "checkpoints" / f"step_{s:06d}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_text(f"weights {s}")
    if best:
        (root / "best").mkdir()
        (root / "best" / "config.json").write_text("{}")
        (root / "best" / "model.safetensors").write_text("weights best")
        (root / "summary.json").write_text(json.dumps({"best_step": 2}))
    return root


def eval_cli(paths, *args):
    code = main(["eval", *map(str, paths), "--no-progress", *map(str, args)])
    assert code == 0
    return code


def report_of(out: Path) -> dict:
    return json.loads((out / "eval.json").read_text())


# ------------------------------------------------------------------------------------------------ the numbers
@pytest.mark.parametrize("n, c, k, expected", [
    (4, 0, 1, 0.0), (4, 1, 1, 0.25), (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (4, 4, 4, 1.0), (4, 1, 4, 1.0), (8, 3, 2, 1 - 10 / 28),
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_evaluate_against_hand_computed_numbers():
    task, log = KeyTask(3), []
    engine = FakeEngine("m", {"m": {"key/test": [0, 1, 4]}}, log)
    res = evaluate(engine, task, task.examples("test"), k=4, temperature=0.6, top_p=0.7, max_new_tokens=9, seed=5,
                   batch_prompts=2)
    assert res.per_prompt_correct == [0, 1, 4]
    assert res.avg_at_k == pytest.approx((0 + 1 / 4 + 1) / 3)
    assert res.pass_at_k == pytest.approx(2 / 3)
    # 0.1 rewards ("close") are not correct but count in the mean reward: (4*0.1 + 1 + 3*0.1 + 4) / 12
    assert res.mean_reward == pytest.approx((0.4 + 1.3 + 4) / 12)
    assert [(len(p), c.n, c.temperature, c.top_p, c.max_new_tokens, c.seed) for _, p, c in log] == [
        (2, 4, 0.6, 0.7, 9, 5), (1, 4, 0.6, 0.7, 9, 7)]


def test_macro_average_pass_at_and_sampling_settings(tmp_path, fake):
    fake["counts"]["m"] = {"key/test": [0, 1, 4], "other/test": [2, 2, 3]}
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    eval_cli([model], "--task", "key", "--task", "key:name=other", "--k", 4, "--pass-at", "1,2,4",
             "--temperature", 0.6, "--top-p", 0.7, "--max-new-tokens", 33, "--seed", 11, "--batch-prompts", 2,
             "--output", tmp_path / "out")
    rep = report_of(tmp_path / "out")
    (run,) = rep["runs"]
    (row,) = run["checkpoints"]
    key, other = row["benchmarks"]["key"], row["benchmarks"]["other"]
    assert key["avg@k"] == pytest.approx(5 / 12) and other["avg@k"] == pytest.approx(7 / 12)
    assert key["pass@1"] == pytest.approx(5 / 12)  # pass@1 from k samples is avg@k
    assert key["pass@2"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert other["pass@2"] == pytest.approx(((1 - 1 / 6) * 2 + 1) / 3)  # c=2 of 4: 1 - C(2,2)/C(4,2)
    assert key["pass@4"] == pytest.approx(2 / 3) and other["pass@4"] == 1.0
    assert row["macro"]["avg@k"] == pytest.approx((5 / 12 + 7 / 12) / 2)
    assert row["macro"]["pass@2"] == pytest.approx((key["pass@2"] + other["pass@2"]) / 2)
    assert run["best"] == run["last"] == "m"  # a lone model is both
    # every generate call carried the settings; batches of 2 prompts seeded seed + start
    params = [c for _, _, c in fake["calls"]]
    assert {(c.n, c.temperature, c.top_p, c.max_new_tokens) for c in params} == {(4, 0.6, 0.7, 33)}
    assert sorted(c.seed for c in params) == [11, 11, 13, 13]
    md = (tmp_path / "out" / "eval.md").read_text()
    assert "41.67 / 66.67" in md and "58.33 / 100.00" in md and "50.00 / 83.33" in md


# ------------------------------------------------------------------------------------------------ best / last
COUNTS = {  # validation favours step 2, the test split favours step 3
    "checkpoints/step_000001": {"key/validation": [0, 0, 1], "key/test": [0, 1, 1]},
    "checkpoints/step_000002": {"key/validation": [4, 4, 2], "key/test": [1, 1, 1]},
    "checkpoints/step_000003": {"key/validation": [1, 1, 1], "key/test": [4, 4, 4]},
    "best": {"key/validation": [4, 4, 2], "key/test": [1, 1, 1]},
}


def test_best_is_selected_on_validation_and_last_is_the_newest_step(tmp_path, fake):
    fake["counts"].update(COUNTS)
    run = make_run(tmp_path / "run")
    eval_cli([run], "--task", "key", "--k", 4)
    (r,) = report_of(run)["runs"]
    assert [c["checkpoint"] for c in r["checkpoints"]] == [*list(COUNTS)]
    assert r["last"] == "checkpoints/step_000003"
    assert r["best"] == "checkpoints/step_000002"  # ties with best/ (the same weights): the earlier one wins
    assert r["selection"] == "held-out" and "key/validation" in r["selected_on"]
    by = {c["checkpoint"]: c for c in r["checkpoints"]}
    assert by["checkpoints/step_000002"]["select_score"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert by["best"]["step"] == 2  # from summary.json
    md = (run / "eval.md").read_text()
    assert "**checkpoints/step_000002** (best)" in md and "**checkpoints/step_000003** (last)" in md
    assert "played no part" in md


def test_a_run_without_step_checkpoints_says_best_stands_in_for_last(tmp_path, fake):
    fake["counts"].update(COUNTS)
    (tmp_path / "run").mkdir()
    run = make_run(tmp_path / "run", steps=())  # checkpoints/ deleted, best/ kept
    eval_cli([run], "--task", "key", "--k", 4)
    (r,) = report_of(run)["runs"]
    assert r["last"] == r["best"] == "best"
    assert "best/ stands in for the last" in r["last_note"]
    assert "- **last**: best (no step_* checkpoint is left in the run: best/ stands in" in (run / "eval.md").read_text()
    (tmp_path / "lone").mkdir()
    lone = make_run(tmp_path / "lone", steps=()) / "best"  # a model folder given on its own: nothing to explain
    eval_cli([lone], "--task", "key", "--k", 4, "--output", tmp_path / "e")
    assert "last_note" not in report_of(tmp_path / "e")["runs"][0]


def test_selecting_on_test_says_it_is_optimistic(tmp_path, fake):
    fake["counts"].update(COUNTS)
    run = make_run(tmp_path / "run")
    eval_cli([run], "--task", "key", "--select-split", "test")
    (r,) = report_of(run)["runs"]
    assert r["best"] == "checkpoints/step_000003" and r["selection"] == "reported"
    assert "optimistic" in r["selected_on"] and "optimistic" in (run / "eval.md").read_text()
    # validation was never needed: only test was sampled
    assert {p[0].split(":")[1].rsplit("-", 1)[0] for _, p, _ in fake["calls"]} == {"test"}
    # a subset of a reported test set is still reported data
    eval_cli([run], "--task", "key", "--select-task", "key:num_prompts=2", "--select-split", "test",
             "--output", tmp_path / "sub")
    assert report_of(tmp_path / "sub")["runs"][0]["selection"] == "reported"


def test_no_validation_split_means_no_best_unless_a_selection_task_is_given(tmp_path, fake):
    fake["counts"].update({name: {"key_test_only/test": c["key/test"], **c} for name, c in COUNTS.items()})
    run = make_run(tmp_path / "run")
    eval_cli([run], "--task", "key_test_only", "--output", tmp_path / "a")
    (r,) = report_of(tmp_path / "a")["runs"]
    assert r["best"] is None and r["last"] == "checkpoints/step_000003" and r["selection"] == "none"
    assert "--select-task" in r["selected_on"]
    eval_cli([run], "--task", "key_test_only", "--select-task", "key", "--output", tmp_path / "b")
    (r,) = report_of(tmp_path / "b")["runs"]
    assert r["best"] == "checkpoints/step_000002" and r["selection"] == "held-out"


# ------------------------------------------------------------------------------------------------ resuming
def test_second_run_recomputes_nothing_and_changed_settings_recompute(tmp_path, fake):
    fake["counts"].update(COUNTS)
    run = make_run(tmp_path / "run")
    args = ["--task", "key", "--k", 4, "--batch-prompts", 2]
    eval_cli([run], *args)
    first = report_of(run)
    assert len(fake["loads"]) == 4 and len(fake["calls"]) == 4 * 2 * 2  # 4 ckpts x (test, validation) x 2 batches
    fake["loads"].clear(), fake["calls"].clear()
    eval_cli([run], *args)
    assert fake["loads"] == [] and fake["calls"] == []
    assert report_of(run) == first
    # a new setting is a new result; the old ones stay in the file
    eval_cli([run], *args, "--temperature", 0.5)
    assert len(fake["loads"]) == 4 and len(fake["calls"]) == 16
    assert len(report_of(run)["results"]) == 16
    # a re-saved best/ (new weights) is evaluated again, nothing else
    fake["loads"].clear(), fake["calls"].clear()
    os.utime(run / "best" / "model.safetensors", ns=(1, 1))
    eval_cli([run], *args)
    assert fake["loads"] == ["best"] and len(fake["calls"]) == 4


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, fake, monkeypatch):
    fake["counts"].update(COUNTS)
    run = make_run(tmp_path / "run")
    real = FakeEngine.generate

    def dies_on_fifth(self, prompts, params):
        if len(self.log) == 4:
            raise KeyboardInterrupt
        return real(self, prompts, params)

    monkeypatch.setattr(FakeEngine, "generate", dies_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        main(["eval", str(run), "--task", "key", "--no-progress", "--batch-prompts", "2"])
    assert len(report_of(run)["results"]) == 2  # two (checkpoint, split) results finished before the stop
    monkeypatch.setattr(FakeEngine, "generate", real)
    fake["calls"].clear()
    eval_cli([run], "--task", "key", "--batch-prompts", 2)
    assert len(fake["calls"]) == (8 - 2) * 2
    assert report_of(run)["runs"][0]["best"] == "checkpoints/step_000002"


# ------------------------------------------------------------------------------------------------ parsing
def test_task_spec_syntax():
    s = parse_task_spec("math-500:data_files=/data/m.jsonl")
    assert (s.name, s.options, s.split, s.num_prompts) == ("math-500", {"data_files": "/data/m.jsonl"}, None, None)
    s = parse_task_spec("math-dataset:data_files={test: /a/b.parquet},columns={question: q, answer: a},"
                        "split=test,num_prompts=30,label=ob,timeout_s=2.5,template='{question}, boxed'")
    assert s.options == {"data_files": {"test": "/a/b.parquet"}, "columns": {"question": "q", "answer": "a"},
                         "timeout_s": 2.5, "template": "{question}, boxed"}
    assert (s.split, s.num_prompts, s.label) == ("test", 30, "ob")
    assert parse_task_spec("arithmetic").options == {}
    for bad, msg in [("math-500:data_files", "not KEY=VALUE"), (":x=1", "no task name"),
                     ("key:num_prompts=0", "positive integer"), ("key:x=[1,", "not valid YAML")]:
        with pytest.raises(ConfigError, match=msg):
            parse_task_spec(bad)


def test_tasks_file_with_common_options(tmp_path):
    f = tmp_path / "tasks.yaml"
    f.write_text("common: {template: '{question} Box it.', timeout_s: 3}\n"
                 "tasks:\n  - {task: math-500}\n  - {task: aime24, num_prompts: 30, timeout_s: 9}\n"
                 "select:\n  - {task: dapo-math-17k, split: validation}\n")
    bench, select = load_tasks_file(f)
    assert [(b.name, b.num_prompts, b.options) for b in bench] == [
        ("math-500", None, {"template": "{question} Box it.", "timeout_s": 3}),
        ("aime24", 30, {"template": "{question} Box it.", "timeout_s": 9})]
    assert select[0].split == "validation" and select[0].name == "dapo-math-17k"
    f.write_text("tasks:\n  - {name: math-500}\n")
    with pytest.raises(ConfigError, match="task: <registered name>"):
        load_tasks_file(f)


@pytest.mark.parametrize("args, message", [
    ([], "at least one --task"),
    (["--task", "no_such_task"], "unknown task 'no_such_task'"),
    (["--task", "key:bogus=1"], "has no option 'bogus'"),
    (["--task", "key_test_only", "--split", "validation"], "no 'validation' split"),
    (["--task", "key", "--task", "key"], "both called 'key'"),
    (["--task", "key", "--pass-at", "9"], "1 <= J <= k=4"),
])
def test_user_errors_exit_2(tmp_path, fake, capsys, args, message):
    run = make_run(tmp_path / "run")
    assert main(["eval", str(run), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err


def test_hub_name_needs_an_output_folder(capsys, fake):
    assert main(["eval", "Qwen/Qwen2.5-Math-1.5B", "--task", "key"]) == 2
    assert "--output" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ discovery
def test_checkpoint_discovery(tmp_path):
    run = make_run(tmp_path / "run", steps=(9, 10, 100))
    (run / "checkpoints" / "step_000200.tmp").mkdir()  # the trainer's half-written save
    (run / "checkpoints" / "step_000200.tmp" / "config.json").write_text("{}")
    (run / "checkpoints" / "step_000300").mkdir()  # not a model (yet)
    lora = run / "exported_lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    (run / "tensorboard").mkdir()
    found = discover_checkpoints(run)
    assert [(c.name, c.step, c.is_step) for c in found] == [
        ("checkpoints/step_000009", 9, True), ("checkpoints/step_000010", 10, True),
        ("checkpoints/step_000100", 100, True), ("best", 2, False), ("exported_lora", None, False)]
    assert all(c.run == str(run) for c in found)
    (c,) = discover_checkpoints(run / "checkpoints" / "step_000010")
    assert (c.name, c.step, c.is_step, c.run) == ("step_000010", 10, True, str(run / "checkpoints" / "step_000010"))
    (h,) = discover_checkpoints("Qwen/Qwen2.5-Math-1.5B")
    assert h.fingerprint == "hub:Qwen/Qwen2.5-Math-1.5B"
    with pytest.raises(FileNotFoundError, match="holds no model"):
        discover_checkpoints(run / "tensorboard")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_checkpoints(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------ a real model
class FirstDigitTask:
    """Correct when the completion starts with a digit below 5: about a third of a random model's samples."""

    name = "first_digit"

    def examples(self, split, n=None):
        exs = [Example(f"{i}+{i + 1}=", "low", id=f"{split}-{i}") for i in range(5)]
        return exs[:n] if n else exs

    def reward(self, completion, example):
        return float(completion[:1] in set("01234"))


def _independent(model, tok, k, temperature, top_p, max_new, seed, batch):
    """Draw the samples as the documented seeding says (batch b seeded seed + its start) and score them here."""
    engine, task = HFEngine(model, tok), FirstDigitTask()
    exs = task.examples("test")
    counts = []
    for start in range(0, len(exs), batch):
        chunk = exs[start:start + batch]
        texts = engine.generate([e.prompt for e in chunk], SamplingParams(n=k, temperature=temperature, top_p=top_p,
                                                                           max_new_tokens=max_new, seed=seed + start)
                                ).texts
        counts += [sum(t[:1] in set("01234") for t in texts[i * k:(i + 1) * k]) for i in range(len(chunk))]
    avg = sum(c / k for c in counts) / len(counts)
    pass_k = sum(c > 0 for c in counts) / len(counts)
    return counts, avg, pass_k


def test_real_tiny_model_and_lora_adapter_match_an_independent_count(tmp_path, monkeypatch):
    get_task("arithmetic")
    monkeypatch.setitem(TASKS, "first_digit", FirstDigitTask)
    tok = make_tokenizer()
    make_model(tok, seed=3).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")  # records its folder for the adapter config
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 2.0, generator=torch.Generator().manual_seed(0))  # B=0 would make it the base model
    run = tmp_path / "run"
    peft.save_pretrained(run / "checkpoints" / "step_000001")
    tok.save_pretrained(run / "checkpoints" / "step_000001")
    (run / "best").symlink_to(tmp_path / "base", target_is_directory=True)  # any model folder will do as best/
    assert (run / "checkpoints" / "step_000001" / "adapter_config.json").exists()

    settings = dict(k=3, temperature=1.0, top_p=0.9, max_new=3, seed=7, batch=2)
    eval_cli([run], "--task", "first_digit", "--k", 3, "--top-p", 0.9, "--max-new-tokens", 3, "--seed", 7,
             "--batch-prompts", 2, "--select-split", "test", "--device", "cpu")
    rows = {c["checkpoint"]: c for c in report_of(run)["runs"][0]["checkpoints"]}
    records = {Path(r["checkpoint"]).name: r for r in report_of(run)["results"]}

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"),
                                       run / "checkpoints" / "step_000001").merge_and_unload().eval()
    for name, model, rec_name in [("best", base, "best"), ("checkpoints/step_000001", merged, "step_000001")]:
        counts, avg, pass_k = _independent(model, tok, **settings)
        assert records[rec_name]["per_prompt_correct"] == counts, name
        assert rows[name]["benchmarks"]["first_digit"]["avg@k"] == pytest.approx(avg, abs=1e-12)
        assert rows[name]["benchmarks"]["first_digit"]["pass@3"] == pytest.approx(pass_k, abs=1e-12)
        assert 0 < sum(counts) < 5 * 3, "degenerate: every sample right or every sample wrong"
    assert records["best"]["per_prompt_correct"] != records["step_000001"]["per_prompt_correct"]  # adapter matters


def test_eval_defaults_and_room_left_by_the_position_limit(caplog):
    """--max-new-tokens defaults to a math-sized 2048 (it was 16), cut with a warning where the model's positions
    run out after the longest prompt."""
    import argparse
    from types import SimpleNamespace

    from sfpo.evaluate.cli import _room, add_eval_args
    from tiny import make_tokenizer

    p = argparse.ArgumentParser()
    add_eval_args(p)
    assert p.parse_args(["m", "--task", "x"]).max_new_tokens == 2048
    tok = make_tokenizer()
    engine = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=128)),
                             tokenizer=tok)
    exs = [SimpleNamespace(prompt="12+34="), SimpleNamespace(prompt="1+2=")]
    with caplog.at_level("WARNING", logger="sfpo.evaluate.cli"):
        assert _room(engine, exs, 2048, "key") == 122
    assert "cut to 122" in caplog.text
    assert _room(engine, exs, 16, "key") == 16
    assert _room(SimpleNamespace(), exs, 2048, "key") == 2048  # an engine without a model config: as asked


def test_load_for_eval_reads_the_checkpoint_in_the_sampling_dtype(tmp_path):
    import torch

    from sfpo.policy import load_for_eval
    from tiny import make_model, make_tokenizer

    tok = make_tokenizer()
    make_model(tok).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, _ = load_for_eval(tmp_path / "m", "cpu", "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, _ = load_for_eval(tmp_path / "m", "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
