"""Vision-language models: rebuild a caption dataset with InstructBLIP / BLIP-2 / LLaVA, LoRA-tune them, export."""
