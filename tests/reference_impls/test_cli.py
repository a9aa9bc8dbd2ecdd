"""``python -m reference_impls list`` and ``run`` on tiny random models saved to a temporary folder with a tokenizer
(and, for LLaVA, a processor) built locally from the ``tokenizers`` library: nothing is downloaded."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reference_impls import registry
from reference_impls.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_list_prints_every_entry_without_torch():
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['pydantic'] = None; "
        "from reference_impls.cli import main; raise SystemExit(main(['list']))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    for entry in registry.ENTRIES:
        assert re.search(rf"^{entry.name}\s", out.stdout, re.M), entry.name
        assert entry.entry in out.stdout


def test_list_markdown(capsys):
    assert main(["list", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name |") and len(lines) == 2 + len(registry.ENTRIES)


def _tokenizer(image_token=None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, 128)]
    if image_token is not None:
        words[image_token] = "<image>"
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    if image_token is not None:
        fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def _table(text):
    """{row label: (unmodified, technique)} of the run report."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\s+(\S.*?\S)\s{2,}(\S+(?: x\d+)?|\[.*?\])\s{2,}(\S+(?: x\d+)?|\[.*?\])\s*$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


PROMPT = "w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19"


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from tests.reference_impls._hosts import tiny_text

    folder = tmp_path_factory.mktemp("llama")
    tiny_text("llama").save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def test_run_text_model_with_its_tokenizer(llama_folder, capsys):
    code = main(
        [
            "run",
            "--model",
            str(llama_folder),
            "--technique",
            "snapkv",
            "--budget",
            "0.25",
            "--window",
            "2",
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "6",
            "--warmup",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "unmodified output: 'w" in out and "snapkv output: 'w" in out
    rows = _table(out)
    prompt_len = len(PROMPT.split())
    assert rows["tokens per layer (row 0)"] == (f"{prompt_len} x4", f"{prompt_len} x4")
    row_bytes = 4 * 2 * 16 * 4 * 2  # layers x KV heads x head dim x fp32 x (K, V)
    kept = -(-prompt_len // 4) + 5  # ceil(0.25 * prompt) rows + 5 fed-back generated tokens
    assert rows["KV bytes"] == (str((prompt_len + 5) * row_bytes), str(kept * row_bytes))
    assert rows["vision encoder (ms)"] == ("-", "-")


def test_run_without_a_tokenizer_takes_token_ids(tmp_path, capsys):
    from tests.reference_impls._hosts import tiny_text

    tiny_text("qwen2").save_pretrained(tmp_path)
    code = main(
        [
            "run",
            "--model",
            str(tmp_path),
            "--technique",
            "streamingllm",
            "--n-sink",
            "2",
            "--window",
            "4",
            "--input-ids",
            "1 5 6 7 8 9 10 11 12",
            "--max-new-tokens",
            "4",
            "--warmup",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"streamingllm output: \d+ \d+ \d+ \d+", out)
    rows = _table(out)
    assert int(rows["KV bytes"][1]) < int(rows["KV bytes"][0])
    assert main(["run", "--model", str(tmp_path), "--technique", "h2o", "--prompt", "hello"]) == 2
    assert "pass --input-ids" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--technique", "nosuch"], "unknown technique 'nosuch'"),
        (["--technique", "snapkv", "--budgett", "3"], "snapkv has no parameter 'budgett'"),
        (["--technique", "snapkv", "--budget", "1.5"], "fraction of the prompt"),
        (["--technique", "fastv"], "fastv does not apply to LlamaForCausalLM"),
        (["--technique", "pevlm"], "pevlm is not applied to a model"),
    ],
)
def test_run_errors_are_one_line(llama_folder, capsys, argv, message):
    code = main(["run", "--model", str(llama_folder), "--input-ids", "1 5 6", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert main(["run", "--model", str(llama_folder / "missing"), "--technique", "h2o", "--input-ids", "1"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_run_llava_with_an_image_and_its_processor(tmp_path, capsys):
    pytest.importorskip("PIL")
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor, LlavaProcessor

    from tests.reference_impls._hosts import IMAGE, tiny_llava

    tiny_llava().save_pretrained(tmp_path)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=images,
        tokenizer=_tokenizer(IMAGE),
        patch_size=8,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(tmp_path)
    image = tmp_path / "image.png"
    Image.fromarray((np.random.RandomState(0).rand(40, 48, 3) * 255).astype("uint8")).save(image)
    prompt_len = 16 + 3  # 16 image tokens, 3 words (the tokenizer adds no BOS)
    pruned = f"[{prompt_len}" + f", {prompt_len - 8}" * 3 + "]"  # FastV keeps 8 of 16 image tokens
    for technique, expect in (
        (["fastv", "--k", "1", "--ratio", "0.5"], pruned),
        (["visionzip", "--dominant", "4", "--contextual", "2"], f"{prompt_len - 10} x4"),
    ):
        code = main(
            [
                "run",
                "--model",
                str(tmp_path),
                "--technique",
                *technique,
                "--image",
                str(image),
                "--prompt",
                "w5 w6 w7",
                "--max-new-tokens",
                "4",
                "--warmup",
                "0",
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        rows = _table(out)
        assert rows["tokens per layer (row 0)"] == (f"{prompt_len} x4", expect)
        assert float(rows["vision encoder (ms)"][0]) > 0
        assert int(rows["KV bytes"][1]) < int(rows["KV bytes"][0])


def test_readme_registry_table_is_fresh():
    """reference_impls/README.md's generated section is what ``python -m reference_impls readme`` writes."""
    from reference_impls.cli import _readme_path, readme_text

    current = _readme_path().read_text(encoding="utf-8")
    assert readme_text(current) == current, "run: python -m reference_impls readme"
