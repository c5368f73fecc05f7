"""Tiny random InstructBLIP, BLIP-2 and LLaVA models with their real processors, for offline work.

Same classes, processors and ``save_pretrained`` layout as the real checkpoints, so ``rebuild``,
``vlm-finetune`` and the notebooks run end to end here through the very path real weights take. Like
a real VLM's language model, the tiny one has read text before it meets an image: a few hundred steps
of next-token training on the captions given (its tokenizer is trained on them too).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..hub import quiet
from ..models.tiny_hf import byte_bpe_tokenizer, tiny_vision, train_language_model
from .models import kind_of

# A chat template in llava-1.5's format: "USER: <image>\n{prompt} ASSISTANT: {answer}</s>"
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {{ message['content'][0]['text'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
PROMPT_WORDS = ["Please describe this image in deepfashion dataset style.", "USER: ASSISTANT: Question: Answer:"]


def save_tiny_vlm(
    kind: str,
    out: str | Path,
    texts: Iterable[str],
    image_size: int = 64,
    patch_size: int = 8,
    hidden: int = 64,
    layers: int = 2,
    query_tokens: int = 8,
    lm_steps: int = 300,
    seed: int = 0,
) -> Path:
    """Write a tiny ``kind`` (instructblip | blip2 | llava) model and processor to ``out``."""
    import transformers as tf

    quiet()
    k = kind_of(kind)
    texts = [t.strip() for t in texts if t.strip()]
    tok = byte_bpe_tokenizer([*texts, *PROMPT_WORDS])
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    torch.manual_seed(seed)
    lm_cls, lm_config = _language_model_config(k.name, tok, hidden, layers)
    lm = lm_cls(lm_config)
    ids = [[tok.bos_token_id, *tok.encode(" " + t, add_special_tokens=False), tok.eos_token_id] for t in texts]
    train_language_model(lm, ids, lm_steps, tok.pad_token_id)
    vision = tiny_vision(hidden, layers, image_size, patch_size)
    out = Path(out)
    if k.chat:
        model, processor = _llava(tf, tok, vision, lm_config, image_size, patch_size)
        model.model.language_model.load_state_dict(lm.model.state_dict())
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    else:
        model, processor = _blip(tf, k.name, tok, vision, lm_config, hidden, query_tokens, texts)
        model.language_model.load_state_dict(lm.state_dict())
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _language_model_config(kind: str, tok: Any, hidden: int, layers: int) -> tuple[type, Any]:
    """OPT for BLIP-2 (as blip2-opt-2.7b), LLaMA for InstructBLIP (Vicuna) and LLaVA."""
    import transformers as tf

    ids = dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=512,
    )
    if kind == "blip2":
        return tf.OPTForCausalLM, tf.OPTConfig(ffn_dim=2 * hidden, word_embed_proj_dim=hidden, dropout=0.0, **ids)
    return tf.LlamaForCausalLM, tf.LlamaConfig(intermediate_size=2 * hidden, num_key_value_heads=4, **ids)


def _llava(tf: Any, tok: Any, vision: dict, lm_config: Any, image_size: int, patch_size: int) -> tuple[Any, Any]:
    processor = tf.LlavaProcessor(
        image_processor=tf.CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
    )
    config = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(**vision).to_dict(),
        text_config=lm_config.to_dict(),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(image_size // patch_size) ** 2,
    )
    return tf.LlavaForConditionalGeneration(config), processor


def _blip(
    tf: Any, kind: str, tok: Any, vision: dict, lm_config: Any, hidden: int, queries: int, texts: list
) -> tuple[Any, Any]:
    image_processor = tf.BlipImageProcessor(size={"height": vision["image_size"], "width": vision["image_size"]})
    qformer = dict(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        encoder_hidden_size=hidden,
        cross_attention_frequency=1,
        max_position_embeddings=128,
    )
    if kind == "blip2":
        processor = tf.Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=queries)
        parts = (tf.Blip2Config, tf.Blip2VisionConfig, tf.Blip2QFormerConfig, tf.Blip2ForConditionalGeneration)
    else:  # InstructBLIP's Q-Former reads the prompt too, with its own BERT tokenizer
        qtok = _bert_word_tokenizer([*texts, *PROMPT_WORDS])
        qformer["vocab_size"] = len(qtok)
        processor = tf.InstructBlipProcessor(
            image_processor=image_processor, tokenizer=tok, qformer_tokenizer=qtok, num_query_tokens=queries
        )
        parts = (
            tf.InstructBlipConfig,
            tf.InstructBlipVisionConfig,
            tf.InstructBlipQFormerConfig,
            tf.InstructBlipForConditionalGeneration,
        )
    config_cls, vision_cls, qformer_cls, model_cls = parts
    config = config_cls(
        vision_config=vision_cls(**vision).to_dict(),
        qformer_config=qformer_cls(**qformer).to_dict(),
        text_config=lm_config.to_dict(),
        num_query_tokens=queries,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"),
    )
    return model_cls(config), processor


def _bert_word_tokenizer(texts: list[str]) -> Any:
    """A word-level BERT tokenizer (the class InstructBLIP's Q-Former uses) over the words of ``texts``."""
    import tempfile

    from transformers import BertTokenizerFast

    words = sorted({w.strip(".,:?!").lower() for t in texts for w in t.split()} - {""})
    with tempfile.TemporaryDirectory() as d:
        vocab = Path(d) / "vocab.txt"
        vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", ":", "?", *words]) + "\n")
        return BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
