"""The random streams are named in one place (workers.rng.Stream), and their numbers are those every stored result
was drawn with: renumbering one would silently change results (tests/methods/test_stage_results.py sees it in the outputs)."""
import torch

from workers.rng import Stream
from workers.rng import seed_for
from workers.training.loop import epoch_order


def test_the_streams_keep_the_numbers_results_were_drawn_with():
    assert {s.name: s.value for s in Stream} == {
        "DATA_ORDER": 1, "AUGMENTATION": 2, "IMP_LEVEL": 3, "ONESHOT": 4, "CTS_SEARCH": 5, "SHUFFLE": 6, "REINIT": 7,
        "STAGE": 8, "GRADUAL": 9, "BIP_SEARCH": 10}


def test_a_named_stream_seeds_as_its_number_does():
    assert all(seed_for(11, s) == seed_for(11, s.value) for s in Stream)


def test_the_training_data_order_is_the_data_order_stream():
    named = torch.randperm(30, generator=torch.Generator().manual_seed(seed_for(5, 2, Stream.DATA_ORDER)))
    assert torch.equal(epoch_order(5, 2, 30), named)
