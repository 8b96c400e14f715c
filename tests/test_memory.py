"""memory_plan.py against measurements, the plan in --dry-run, and the refusal of a
recipe that does not fit (before any weight is loaded)."""

import subprocess
import sys

import pytest

from conftest import ROOT

import memory_plan as mp


def test_known_shapes_match_their_sources():
    """7B: the shape the plan uses offline equals the one read from the GGUF header's
    config (embedded_model.r1_7b_header_folder, through shape_of's config path), and
    7,615,616,512 parameters, the header's tensor table; 32B: ~32.8B (Qwen2.5-32B)."""
    from embedded_model import r1_7b_header_folder

    seven = mp.KNOWN_SHAPES["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"]
    assert mp.shape_of(r1_7b_header_folder()) == seven
    assert seven.params == 7_615_616_512
    assert 32.7e9 < mp.KNOWN_SHAPES["deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"].params < 32.8e9


def test_the_7b_tokenizer_keeps_the_headers_special_ids():
    """The tokenizer built from the GGUF header: the header's bos / eos / pad ids, no id
    added (a naive gguf_file conversion registers bos/eos as new ids, 152,067 entries),
    special tokens encoded as one id, and every id of the vocabulary decodable."""
    from transformers import AutoTokenizer

    from embedded_model import r1_7b_header_folder

    tok = AutoTokenizer.from_pretrained(r1_7b_header_folder())
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (151646, 151643, 151654)
    assert len(tok) <= 152064
    assert tok(tok.bos_token, add_special_tokens=False)["input_ids"] == [151646]
    assert tok.convert_ids_to_tokens(151643) == tok.eos_token
    text = tok.decode(tok("What is 12 + 30? \\boxed{42}", add_special_tokens=False)["input_ids"])
    assert text == "What is 12 + 30? \\boxed{42}"


# (vocab, hidden, intermediate, layers, response tokens, checkpointing): one case where
# the loss head dominates (Qwen2 vocabulary, tiny body), two where activations do.
CASES = [(152064, 256, 512, 2, 4096, False), (4096, 512, 1536, 4, 4096, False), (4096, 512, 1536, 4, 4096, True)]


@pytest.mark.skipif(not __import__("conftest").cpu_has_native_bf16(),
                    reason="bf16 matmuls are emulated on this CPU (no AVX512-BF16/AMX): the bf16 measurement would take hours")
@pytest.mark.parametrize("vocab,hidden,inter,layers,resp,ckpt", CASES, ids=["head", "activations", "checkpointed"])
def test_plan_matches_a_cpu_measurement(vocab, hidden, inter, layers, resp, ckpt):
    """The parts of the plan that scale with the micro-batch (activations, final hidden
    states, the loss head's chunk) against the measured peak-RSS growth of one update
    micro-batch through the trainer's path (bench_memory.measure_update_peak, FSDP2 on one
    gloo rank, bf16 compute). Measured on the 2-core box: ratios 0.95-1.15; the test
    allows 0.8-1.3."""
    import bench_memory

    measured = bench_memory.measure_update_peak(resp, vocab=vocab, hidden=hidden, inter=inter, layers=layers, ckpt=ckpt)
    shape = mp.ModelShape(vocab, hidden, layers, inter, hidden // 64, max(1, hidden // 128), 64, False, True)
    p = mp.plan(shape, gpus=1, gpu_gib=1000, prompt_len=64, response_len=resp, micro_batch_tokens=0,
                grad_checkpointing=ckpt)
    scaling = [k for k in p["update"] if any(w in k for w in ("activations", "layer inputs", "recomputed", "final hidden",
                                                              "head chunk"))]
    planned = sum(p["update"][k] for k in scaling) / 2**20
    assert 0.8 < measured / planned < 1.3, (measured, planned, scaling)


def test_dry_run_prints_the_plan_for_the_7b_32k_stage():
    p = subprocess.run([sys.executable, "train.py", "--stage", "2", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "memory plan, or1-7b stage 2" in p.stdout and "7.62B parameters" in p.stdout
    assert "largest micro-batch 34,816 tokens" in p.stdout and "fits:" in p.stdout


def test_a_recipe_that_does_not_fit_is_refused_before_loading_weights(tmp_path):
    """or1-7b stage 2 on 24 GiB GPUs: the run stops at the plan, names the flags to change,
    and never touches the (hub) model: no weights exist on this machine."""
    p = subprocess.run([sys.executable, "train.py", "--stage", "2", "--init-from", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                        "--gpu-memory-gib", "24", "--output-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode != 0
    err = p.stderr + p.stdout
    assert "DOES NOT FIT" in err and "refused before loading any weight" in err
    assert "--cpu-offload" in err and "more GPUs" in err


@pytest.mark.parametrize("arch", ["llama-tied", "qwen2-untied"])
def test_one_host_copy_load_gives_the_checkpoint_weights(arch, tmp_path):
    """policy.build_policy on 2 gloo ranks (meta skeleton, FSDP2 shards, rank 0 reads and
    broadcasts): every gathered parameter equals from_pretrained's bit for bit, RoPE
    buffers included, and a tied lm_head still is the embedding (tests/dist_load_check.py)."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from conftest import torchrun

    kw = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, head_dim=32, max_position_embeddings=256)
    config = LlamaConfig(tie_word_embeddings=True, **kw) if arch == "llama-tied" else Qwen2Config(tie_word_embeddings=False, **kw)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "model")
    torchrun(["tests/dist_load_check.py", str(tmp_path / "out"), str(tmp_path / "model")])
    for r in (0, 1):
        res = json.loads((tmp_path / "out" / f"rank{r}.json").read_text())
        assert res["params"] == res["want"]  # the ScoredHead swap keeps every parameter's name
        assert res["max_abs_diff"] == 0.0 and res["buffer_max_abs_diff"] == 0.0, res
        assert res["lm_head_is_embedding"] == (arch == "llama-tied")


def test_each_suggested_flag_is_planned_again():
    """The 32B's stage 2 on 8 x 80 GiB does not fit: each suggestion says whether it fits
    alone, from a second plan with that flag (CPU offload does; vLLM TP 4 alone does not,
    the update peak is the trainer's); more GPUs names the smallest count that fits."""
    shape = mp.KNOWN_SHAPES["deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"]
    # the recipe's vLLM tensor parallelism 2 (released 32B scripts): with 1, its 61 GiB of
    # bf16 weights leave no KV cache inside the released 0.8 share of an 80 GiB GPU
    kw = dict(gpus=8, gpu_gib=80, prompt_len=2048, response_len=24576, micro_batch_tokens=0, grad_checkpointing=True,
              tp=2)
    assert not mp.plan(shape, **kw)["fits"] and not mp.plan(shape, **{**kw, "tp": 1, "cpu_offload": True})["fits"]
    fixes = {f.split(" (")[0]: f for f in mp.suggestions(shape, kw)}
    assert "fits alone" in fixes["--cpu-offload"] and mp.plan(shape, **{**kw, "cpu_offload": True})["fits"]
    assert "not enough alone" in fixes["--rollout-tensor-parallel-size 4"]
    import re

    n = int(re.search(r"; (\d+) fit\)", fixes["more GPUs"]).group(1))  # the smallest whole number of nodes
    assert mp.plan(shape, **{**kw, "gpus": n})["fits"] and not mp.plan(shape, **{**kw, "gpus": n - 8})["fits"]


def test_vllm_share_is_of_the_real_device():
    """A plan for 80 GiB on a larger device: vLLM (which applies its share to the whole
    device) gets the plan's GiB, not the plan's fraction of the larger device."""
    import train
    from recipes import parse_config

    cfg = parse_config(["--stage", "1"])
    train.check_memory(cfg, cfg.model, 8, 80.0, refuse=False)
    on_80 = cfg.rollout.gpu_memory_utilization
    cfg = parse_config(["--stage", "1"])
    train.check_memory(cfg, cfg.model, 8, 80.0, refuse=False, device_gib=141.0)
    assert cfg.rollout.gpu_memory_utilization == pytest.approx(on_80 * 80 / 141, abs=2e-3)


def test_what_the_trainer_keeps_between_steps_is_what_the_rollout_plan_counts(tiny_model, tmp_path):
    """The rollout phase's trainer term, measured: after a real update and step 7's
    no-grad pass on 2 gloo FSDP2 ranks (tests/dist_resident_check.py), every parameter is
    a shard again, no gradient is left, and parameter shards + AdamW state equal the
    plan's "trainer: parameters + AdamW shards" (3 x 4 bytes x N / ranks). A KL
    reference model, which only runs no-grad forwards, is resharded by old_logprobs; a
    bare no-grad forward leaves FSDP2's root gathered (what the reshard is for)."""
    import json

    from conftest import torchrun

    torchrun(["tests/dist_resident_check.py", str(tmp_path / "out"), tiny_model])
    want = mp.plan(mp.shape_of(tiny_model), gpus=2, gpu_gib=80, prompt_len=64, response_len=64, micro_batch_tokens=0,
                   grad_checkpointing=False)["rollout"]["trainer: parameters + AdamW shards"]
    for r in (0, 1):
        res = json.loads((tmp_path / "out" / f"rank{r}.json").read_text())
        assert res["unsharded_after_step"] == [] and res["grads_left"] == [], res
        assert (res["param_bytes"] + res["adam_bytes"]) == pytest.approx(want, rel=0.01), (res, want)
        assert "model.embed_tokens.weight" in res["ref_gathered_after_bare_forward"], res  # the FSDP2 behaviour
        assert res["ref_unsharded_after_old_logprobs"] == [], res


def test_the_rollout_phase_keeps_a_margin_for_every_7b_stage():
    """Every 7B stage on 8 x 80 GiB leaves the stated margin (5% of the GPU) free in the
    rollout phase beyond the trainer's shards, the CUDA context / NCCL / cuBLAS term and
    vLLM's share, and vLLM's share never exceeds the released 0.8."""
    from recipes import RECIPES

    shape = mp.KNOWN_SHAPES["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"]
    for recipe in ("or1-7b", "or1-math-7b"):
        for stage, row in RECIPES[recipe]["stages"].items():
            p = mp.plan(shape, gpus=8, gpu_gib=80, prompt_len=2048, response_len=row["max_response_len"],
                        micro_batch_tokens=16384, grad_checkpointing=True)
            assert p["fits"], (recipe, stage)
            assert p["rollout_margin"] >= mp.MARGIN_FRACTION * 80 * mp.GiB - 1, (recipe, stage, p["rollout_margin"])
            assert p["gpu_memory_utilization"] <= mp.VLLM_SHARE_CAP
            assert p["rollout_total"] + p["rollout_margin"] == pytest.approx(80 * mp.GiB)
            assert p["kv_sequences"] >= 16, (recipe, stage)  # a whole group of 16 32K responses at once
