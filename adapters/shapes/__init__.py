"""The shapes fixture: a synthetic VQA task and the small trained LLaVA shipped with tokenprune.

Random weights say nothing about whether a policy keeps the RIGHT tokens, and
real checkpoints cannot be downloaded everywhere. This plugin ships a tiny but
genuinely trained stock ``LlavaForConditionalGeneration`` and the task it was
trained on. Every question's answer depends on one region of the image, so
pruning the wrong tokens visibly hurts.
"""
