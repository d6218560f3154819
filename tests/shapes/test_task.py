"""The synthetic shapes task: deterministic, valid, with disjoint splits."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from tokenprune.adapters.shapes import model as shapes_model
from tokenprune.adapters.shapes import task


def test_same_seed_same_sample():
    a, b = task.sample(123), task.sample(123)
    assert a.questions == b.questions and a.objects == b.objects
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert task.sample(124).objects != a.objects


def test_held_out_split_never_meets_training_seeds():
    # training draws seed*10M + step*batch + i from TRAIN_SEED_BASE; the default run stays far below
    largest_training_seed = task.TRAIN_SEED_BASE + 9 * 10_000_000 + 3800 * 24
    assert largest_training_seed < task.HELD_OUT_SEED_BASE
    held = task.held_out(5)
    assert [s.seed for s, _ in held] == [task.HELD_OUT_SEED_BASE + i for i in range(5)]


@given(st.integers(0, 10_000))
def test_questions_are_answerable_from_their_region(seed):
    sample = task.sample(seed)
    objects = {(o.row, o.col): o for o in sample.objects}
    assert 3 <= len(sample.objects) <= 6 and len(objects) == len(sample.objects)
    for q in sample.questions:
        assert q.answer in task.vocabulary() and all(w in task.vocabulary() for w in q.text.split())
        words = q.text.split()
        if q.kind == "colour":
            (cell,) = q.cells
            assert objects[cell].colour == q.answer and objects[cell].shape == words[-2]
            assert sum(o.shape == words[-2] for o in sample.objects) == 1
        elif q.kind == "shape":
            (cell,) = q.cells
            assert objects[cell].shape == q.answer and objects[cell].colour == words[-3]
            assert sum(o.colour == words[-3] for o in sample.objects) == 1
        elif q.kind == "exists":
            colour, shape = words[3], words[4]
            present = any(o.colour == colour and o.shape == shape for o in sample.objects)
            assert q.answer == ("yes" if present else "no")
        else:
            shape = words[2]
            assert q.answer == task.COUNT_WORDS[sum(o.shape == shape for o in sample.objects)]


def test_patch_labels_cover_each_object_with_a_2x2_block():
    sample = task.sample(7)
    colours, shapes = task.patch_labels(sample.objects)
    assert sum(c > 0 for c in colours) == 4 * len(sample.objects)
    assert sum(s > 0 for s in shapes) == 4 * len(sample.objects)


def test_fast_encoding_equals_the_saved_processor():
    tokenizer = shapes_model.build_tokenizer()
    processor = shapes_model.build_processor(tokenizer)
    pairs = task.held_out(3)
    fast = shapes_model.encode_requests(tokenizer, pairs, tokenizer.convert_tokens_to_ids("<image>"))
    for row, (sample, question) in enumerate(pairs):
        slow = processor(images=sample.image, text=shapes_model.prompt(question), return_tensors="pt")
        width = slow["input_ids"].shape[1]
        assert torch.equal(fast["input_ids"][row, -width:], slow["input_ids"][0])
        assert torch.equal(fast["pixel_values"][row], slow["pixel_values"][0])
    assert int((fast["input_ids"][0] == tokenizer.convert_tokens_to_ids("<image>")).sum()) == 144
