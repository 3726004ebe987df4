"""Training and fine-tuning: the loop and its checkpoints (``loop``), optimizers with LAMB and LARS
(``optim``), mixed precision (``precision``) and LoRA through peft (``finetune``)."""
