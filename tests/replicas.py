"""Local replicas of the published dataset repos, laid out as published, for offline tests.

Each function writes a folder shaped like the hub repo -- its README card with the YAML
`configs:` (and `dataset_info:`) block, data files at the published paths and in the
published schema -- holding a few rows, so the loaders read it through the same
`datasets.load_dataset(<repo or folder>, <config>, split=...)` call a hub name takes.
Sources (checked 2026-11-24):

* Skywork/Skywork-OR1-RL-Data -- README.md at 1cdedc5: features data_source, prompt
  [{content, role}], ability, reward_model {ground_truth, style}, extra_info {index,
  model_difficulty {DeepSeek-R1-Distill-Qwen-1.5B, -32B, -7B: int64}}; splits math
  (105,055 rows) and code (14,057); config default with data_files math: data/math-*,
  code: data/code-*; files data/math-00000-of-00001.parquet and
  data/code-0000{0,1,2}-of-00003.parquet. No "train" split.
* HuggingFaceH4/aime_2024 -- README.md at 2fe88a2: id int64, problem, solution, answer
  (string), url, year; split train (30 rows); data/train-*.
* opencompass/AIME2025 -- README.md: configs AIME2025-I / AIME2025-II, split test, files
  aime2025-I.jsonl / aime2025-II.jsonl (question, answer; 15 rows each).
* livecodebench/code_generation_lite -- test.jsonl, test2.jsonl, ... test6.jsonl (400,
  111, 101, 101, 167, 175 problems) read per version tag by its loading script
  code_generation_lite.py (release_vN: the first N files; release_latest: all; vN: file
  N; vA_vB: files A..B), split test, every column a string; fields question_title, question_content, platform, question_id, contest_id,
  contest_date, starter_code, difficulty, public_test_cases (JSON), private_test_cases
  (JSON, or base64(zlib(pickle(JSON))) in later files), metadata (JSON: func_name).
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

FIX = Path(__file__).parent / "fixtures"

SKYWORK_CARD = """---
dataset_info:
  features:
  - name: data_source
    dtype: string
  - name: prompt
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: ability
    dtype: string
  - name: reward_model
    struct:
    - name: ground_truth
      dtype: string
    - name: style
      dtype: string
  - name: extra_info
    struct:
    - name: index
      dtype: int64
    - name: model_difficulty
      struct:
      - name: DeepSeek-R1-Distill-Qwen-1.5B
        dtype: int64
      - name: DeepSeek-R1-Distill-Qwen-32B
        dtype: int64
      - name: DeepSeek-R1-Distill-Qwen-7B
        dtype: int64
  splits:
  - name: math
    num_bytes: {b_math}
    num_examples: {n_math}
  - name: code
    num_bytes: {b_code}
    num_examples: {n_code}
configs:
- config_name: default
  data_files:
  - split: math
    path: data/math-*
  - split: code
    path: data/code-*
---
# Skywork-OR1-RL-Data (local replica for tests)
"""

MODELS = ("DeepSeek-R1-Distill-Qwen-1.5B", "DeepSeek-R1-Distill-Qwen-32B", "DeepSeek-R1-Distill-Qwen-7B")


def _parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


# Every key of the four code-test formats. The released loader keeps a code ground-truth
# key only if its value is non-empty (download_and_filter_data_7b.py: `if item[key]`),
# which it would not need unless rows carry other formats' keys empty; the replica writes
# them as null, so the loaders are tested against that shape too.
CODE_KEYS = ("import_prefix", "test_code", "entry_point", "fn_name", "inputs", "outputs", "assert_case")


def skywork_rl_data(folder: Path) -> Path:
    """The released schema's fixture rows (tests/fixtures/or1_math_code.jsonl) as the
    Skywork-OR1-RL-Data repo: math and code splits, a model_difficulty struct with all
    three models (missing counts are null, as in the published parquet), and each code
    ground truth carrying every format's keys (the unused ones null)."""
    rows = [json.loads(line) for line in (FIX / "or1_math_code.jsonl").read_text().splitlines()]
    out = {"math": [], "code": []}
    for r in rows:
        if r["ability"] == "code":
            gt = json.loads(r["reward_model"]["ground_truth"])
            r["reward_model"]["ground_truth"] = json.dumps({k: gt.get(k) for k in CODE_KEYS})
        md = r["extra_info"].get("model_difficulty") or {}
        out[r["ability"]].append({
            "data_source": r["data_source"], "prompt": r["prompt"], "ability": r["ability"],
            "reward_model": {"ground_truth": r["reward_model"]["ground_truth"], "style": r["reward_model"]["style"]},
            "extra_info": {"index": r["extra_info"]["index"], "model_difficulty": {m: md.get(m) for m in MODELS}}})
    # As published: the math split in one parquet file, the code split in three shards.
    _parquet(out["math"], folder / "data" / "math-00000-of-00001.parquet")
    n = len(out["code"])
    for k in range(3):
        _parquet(out["code"][k * n // 3:(k + 1) * n // 3], folder / "data" / f"code-{k:05d}-of-00003.parquet")
    size = lambda split: sum(f.stat().st_size for f in (folder / "data").glob(f"{split}-*.parquet"))  # noqa: E731
    (folder / "README.md").write_text(SKYWORK_CARD.format(n_math=len(out["math"]), n_code=len(out["code"]),
                                                          b_math=size("math"), b_code=size("code")))
    return folder


def aime_2024(folder: Path) -> Path:
    """HuggingFaceH4/aime_2024 from the fixture's records (id, problem, answer, ...)."""
    recs = [json.loads(line) for line in (FIX / "aime24.jsonl").read_text().splitlines()]
    rows = [{"id": int(r["id"]), "problem": r["problem"], "solution": r.get("solution", ""), "answer": str(r["answer"]),
             "url": r.get("url", ""), "year": str(r.get("year", "2024"))} for r in recs]
    _parquet(rows, folder / "data" / "train-00000-of-00001.parquet")
    (folder / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: id\n    dtype: int64\n  - name: problem\n    dtype: string\n"
        "  - name: solution\n    dtype: string\n  - name: answer\n    dtype: string\n  - name: url\n    dtype: string\n"
        "  - name: year\n    dtype: string\n  splits:\n  - name: train\n    num_bytes: %d\n    num_examples: %d\n"
        "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n"
        "# AIME 2024 (local replica)\n" % ((folder / "data" / "train-00000-of-00001.parquet").stat().st_size, len(rows)))
    return folder


def aime_2025(folder: Path) -> Path:
    """opencompass/AIME2025: two configs, one jsonl file each, split test."""
    recs = [json.loads(line) for line in (FIX / "aime25.jsonl").read_text().splitlines()]
    folder.mkdir(parents=True, exist_ok=True)
    for part, chunk in (("I", recs[:1]), ("II", recs[1:])):
        (folder / f"aime2025-{part}.jsonl").write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n"
                                                               for r in chunk))
    (folder / "README.md").write_text(
        "---\nlicense: mit\ntask_categories:\n- question-answering\nlanguage:\n- en\nconfigs:\n- config_name: AIME2025-I\n"
        "  data_files:\n  - split: test\n    path: aime2025-I.jsonl\n- config_name: AIME2025-II\n  data_files:\n"
        "  - split: test\n    path: aime2025-II.jsonl\n---\n# AIME 2025 Dataset (local replica)\n")
    return folder


def encode_private(tests: list[dict]) -> str:
    """LiveCodeBench's encoding of later releases' private tests: base64(zlib(pickle(JSON)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def livecodebench(folder: Path) -> Path:
    """livecodebench/code_generation_lite: the fixture's records split over test.jsonl
    (release_v1) and test2.jsonl (release_v2 adds it), plus the loader script's name."""
    recs = [json.loads(line) for line in (FIX / "livecodebench.jsonl").read_text().splitlines()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))
    (folder / "test2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[2:]))
    (folder / "code_generation_lite.py").write_text("# the published loading script (not run: datasets >= 4 refuses scripts)\n")
    (folder / "README.md").write_text("---\nlicense: cc\n---\n# LiveCodeBench code generation lite (local replica)\n")
    return folder
