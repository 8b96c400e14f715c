"""rollout.py with the real vLLM (CPU build) on the tiny model, in this process."""

import json

import pytest

from conftest import torchrun
from rollout import HFEngine, RolloutConfig, VLLMEngine

PROMPTS = [[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in [(1, 2), (30, 4), (7, 70)]]


@pytest.fixture(scope="module")
def engine(tiny_model):
    return VLLMEngine(tiny_model, RolloutConfig(dtype="float32", max_model_len=512, max_prompt_len=64,
                                               enforce_eager=True, cpu_kv_cache_gib=0.25))


def test_groups_stay_with_their_prompt(engine):
    s = engine.generate(PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=3)
    assert [x.prompt_index for x in s] == [0] * 4 + [1] * 4 + [2] * 4
    ids = engine.tokenizer.apply_chat_template(PROMPTS[1], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert all(x.prompt_ids == list(ids) for x in s[4:8])


def test_same_seed_same_samples_other_seed_differs(engine):
    a = engine.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=12, seed=7)
    b = engine.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=12, seed=7)
    c = engine.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=12, seed=8)
    assert [x.response_ids for x in a] == [x.response_ids for x in b]
    assert [x.response_ids for x in a] != [x.response_ids for x in c]
    # samples within a group differ (they are not n copies of one draw)
    assert len({tuple(x.response_ids) for x in a[:3]}) > 1


def test_truncation_flags(engine):
    s = engine.generate(PROMPTS, n=2, temperature=1.0, max_new_tokens=5, seed=0, return_logprobs=True)
    for x in s:
        eos = x.response_ids[-1] == engine.tokenizer.eos_token_id
        assert x.truncated == (len(x.response_ids) == 5 and not eos)
        assert len(x.logprobs) == len(x.response_ids)
    assert any(x.truncated for x in s)  # a random model rarely stops within 5 tokens


def test_long_prompts_are_dropped(engine, caplog):
    long = [{"role": "user", "content": "word " * 200}]
    s = engine.generate([PROMPTS[0], long], n=2, max_new_tokens=4, seed=0)
    assert {x.prompt_index for x in s} == {0}
    assert "dropped 1 of 2 prompts" in caplog.text


def test_hf_backend_same_interface(tiny_model):
    hf = HFEngine(tiny_model, RolloutConfig(backend="hf", dtype="float32", max_model_len=512, max_prompt_len=64))
    s = hf.generate(PROMPTS[:2], n=3, temperature=1.0, max_new_tokens=6, seed=1, return_logprobs=True)
    assert [x.prompt_index for x in s] == [0, 0, 0, 1, 1, 1]
    assert all(len(x.logprobs) == len(x.response_ids) <= 6 for x in s)
    assert [x.response_ids for x in s] == [x.response_ids for x in hf.generate(PROMPTS[:2], n=3, max_new_tokens=6, seed=1)]


def test_fsdp2_sync_into_vllm_is_exact(tiny_model, tmp_path):
    """2 gloo ranks: real AdamW update on FSDP2, stream into vLLM, compare."""
    torchrun(["tests/dist_sync_check.py", tiny_model, str(tmp_path)])
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["before"] != r["after"], "the engine's greedy output did not change: no sync"
        assert r["after"] == r["ref"], "vLLM greedy != transformers greedy on the synced weights"
        assert r["logprob_max_abs_diff"] < 1e-3  # float32 engine and trainer


def test_identical_prompts_get_distinct_samples_as_trainer_and_eval_seed_them(engine, tmp_path):
    """Every sample draws its own stream. With vLLM's own n=G fan-out (sample j seeded
    seed + j) and prompt seeds seed + i, the same prompt listed twice in one call (code
    rows are upsampled 2x) replayed 14 of 16 samples; now all are distinct -- with the
    seeds the trainer passes (step, place in the step) and the ones eval.py passes."""
    from eval import evaluate
    from recipes import Config
    from train import rollout_seeds

    p = PROMPTS[1]
    seeds = rollout_seeds(Config(), draw=5, slots=[0, 1])  # what train.py passes for batch 5
    trainer = engine.generate([p, p], n=4, temperature=1.0, max_new_tokens=8, seed=seeds)
    assert [x.prompt_index for x in trainer] == [0] * 4 + [1] * 4
    assert len({tuple(x.response_ids) for x in trainer}) == 8
    # Reproducible: the same call again gives the same samples.
    again = engine.generate([p, p], n=4, temperature=1.0, max_new_tokens=8, seed=rollout_seeds(Config(), 5, [0, 1]))
    assert [x.response_ids for x in again] == [x.response_ids for x in trainer]

    class Recording:  # the real engine, keeping what eval.py's call returned
        def generate(self, prompts, **kw):
            self.samples = engine.generate(prompts, **kw)
            return self.samples

    rec = Recording()
    row = {"prompt": p, "ability": "math", "reward_model": {"style": "rule", "ground_truth": '["33"]'}}
    evaluate(rec, [dict(row, extra_info={"index": 0}), dict(row, extra_info={"index": 1})], k=4, temperature=1.0,
             top_p=1.0, max_tokens=8, seed=3, out_path=tmp_path / "dup.jsonl", progress=False)
    assert len({tuple(x.response_ids) for x in rec.samples}) == 8
