"""The local-transformers backend with a tiny randomly initialised causal LM built here (garbage out)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from trainer.knowledge import (  # noqa: E402
    LLMBackend,
    LLMConfig,
    TransformersChatBackend,
    TransformersConfig,
    extract_knowledge,
    load_knowledge,
)

WORDS = "user assistant please extract all positive cardiac related entities from the given ecg report output format is sinus rhythm normal atrial fibrillation block left right".split()


def _tiny_model(path: Path) -> Path:
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]", *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                eos_token="[EOS]")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=16, n_layer=1, n_head=2,
                                  eos_token_id=2, pad_token_id=1)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def test_tiny_random_lm_plumbing_counts_malformed_output_and_reasks(tmp_path: Path) -> None:
    model_dir = _tiny_model(tmp_path / "tiny")
    chat = TransformersChatBackend(TransformersConfig(model_path=str(model_dir), max_new_tokens=6))
    answer = chat.complete([{"role": "user", "content": "please extract entities"}])
    assert isinstance(answer, str)
    assert "[" not in answer  # the vocabulary has no bracket: every answer is malformed
    backend = LLMBackend(chat, LLMConfig(concurrency=2, max_reask=1))
    reports = ["sinus rhythm normal ecg", "atrial fibrillation left block", "sinus rhythm normal ecg"]
    extract_knowledge(reports, ["a", "b", "c"], out_dir=tmp_path / "k", backend=backend,
                      cache=tmp_path / "cache.sqlite")
    k = load_knowledge(tmp_path / "k")
    c = k.stats["counters"]
    # 2 unique reports x (first ask + 1 re-ask), all malformed, then given up
    assert c["calls_extract"] == 4 and c["malformed"] == 4 and c["reasked"] == 2 and c["parse_failed"] == 2
    assert c["chat_generations"] == 5  # the backend counts the direct call above too
    assert k.label_matrix.shape == (3, 0) and k.stats["reports_with_none"] == 3
    assert k.provenance["model"] == "transformers:tiny"
    # unparseable answers are never cached (they would poison every rerun): the rerun asks again
    before = chat.stats()["generations"]
    extract_knowledge(reports, ["a", "b", "c"], out_dir=tmp_path / "k2", backend=backend,
                      cache=tmp_path / "cache.sqlite")
    assert chat.stats()["generations"] == before + 4
