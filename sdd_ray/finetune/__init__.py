"""Fine-tuning on Ray Train (DeepSpeed ZeRO or DDP; LoRA or full)."""
