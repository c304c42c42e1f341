"""augment.pipeline=auto decides by measurement: the faster path over the trial steps, both figures logged,
rank 0's figures on every rank (tests/test_pretrain_distributed.py), and a resume reuses the decision."""

import dataclasses
import logging

import pytest
import torch

from pretrain.data import pipeline_choice
from pretrain.loop import trainer
from pretrain.loop.checkpoint import checkpoint_name
from pretrain.data.pipeline_choice import WARMUP_STEPS, PipelineChoice
from test_pretrain_trainer import csv_rows, make_images, newest_model, tiny_cfg


def scripted_clock(*readings):
    """A clock that returns `readings` in turn (the trial reads it twice per path)."""
    values = iter(readings)
    return lambda: next(values)


def run_trial(choice: PipelineChoice, images_per_step: int = 8) -> list[str]:
    used = []
    for step in range(2 * choice.trial_steps + 2):
        used.append(choice.pipeline_at(step))
        choice.step_done(step, images_per_step)
    return used


@pytest.mark.parametrize("readings, faster", [((0.0, 4.0, 10.0, 11.0), "gpu"), ((0.0, 1.0, 10.0, 14.0), "cpu")])
def test_auto_keeps_the_faster_path_and_logs_both_figures(readings, faster, caplog):
    choice = PipelineChoice(None, trial_steps=4, clock=scripted_clock(*readings))
    with caplog.at_level(logging.INFO, logger="pretrain"):
        used = run_trial(choice)
    assert used == ["cpu"] * 4 + ["gpu"] * 4 + [faster] * 2
    timed = (4 - WARMUP_STEPS) * 8  # images of the steps after the warm-up, over the clock's interval
    assert choice.img_per_s == {"cpu": timed / (readings[1] - readings[0]), "gpu": timed / (readings[3] - readings[2])}
    assert choice.chosen == faster
    line = f"cpu {timed / (readings[1] - readings[0]):.0f} img/s, gpu {timed / (readings[3] - readings[2]):.0f} img/s"
    assert f"chose {faster}" in caplog.text and line in caplog.text


def test_a_fixed_pipeline_is_never_timed_and_survives_a_checkpoint_that_says_otherwise():
    choice = PipelineChoice("cpu", trial_steps=4, clock=scripted_clock())  # any clock read would raise
    assert set(run_trial(choice)) == {"cpu"}
    choice.load_state_dict({"chosen": "gpu", "img_per_s": {"gpu": 5.0}})
    assert choice.pipeline_at(0) == "cpu"


def test_a_trial_with_no_timed_step_is_refused():
    with pytest.raises(Exception, match="pipeline_trial_steps"):
        PipelineChoice(None, trial_steps=WARMUP_STEPS)


def test_resumed_run_reuses_the_checkpointed_decision_exactly(tmp_path, monkeypatch):
    # auto measures on CUDA only; here the CPU stands in for it, with scripted clocks.
    monkeypatch.setattr(trainer, "resolve_pipeline", lambda aug, on_cuda: None)
    data = make_images(tmp_path / "imgs", 24)

    def cfg_for(out):  # 3 steps per epoch, 9 in all: cpu 0-2, gpu 3-5 (timed: steps 2 and 5), then the faster
        base = tiny_cfg(data, out, epochs=3)
        return dataclasses.replace(base, augment=dataclasses.replace(base.augment, pipeline_trial_steps=3))

    monkeypatch.setattr(trainer, "synchronized_clock", lambda device: scripted_clock(0.0, 10.0, 20.0, 21.0))
    reference = trainer.train(cfg_for(tmp_path / "ref"))
    assert "chose gpu" in " ".join(reference.final_logs["notes"])
    assert "cpu 1 img/s, gpu 8 img/s" in " ".join(reference.final_logs["notes"])

    # Resumed after the decision with a clock that would now favour cpu: the checkpoint's gpu stands.
    monkeypatch.setattr(trainer, "synchronized_clock", lambda device: scripted_clock(0.0, 1.0, 20.0, 30.0))
    reference_model = newest_model(tmp_path / "ref")
    rows = csv_rows(tmp_path / "ref")
    assert len(rows) == 9 and all(float(r["augment_ms"]) > 0 for r in rows)  # the device-side time, per step
    resumed = trainer.train(cfg_for(tmp_path / "ref"), resume=str(tmp_path / "ref" / "checkpoints" /
                                                                   checkpoint_name(2, 0)))  # after step 6
    assert not any("chose" in n for n in resumed.final_logs["notes"])  # no new trial
    assert resumed.final_logs["loss"] == reference.final_logs["loss"]
    resumed_model = newest_model(tmp_path / "ref")
    assert all(torch.equal(reference_model[k], resumed_model[k]) for k in reference_model)

    # And the choice matters: the same steps on the cpu path give other losses.
    monkeypatch.setattr(trainer, "synchronized_clock", lambda device: scripted_clock(0.0, 1.0, 20.0, 30.0))
    other = trainer.train(cfg_for(tmp_path / "cpu_wins"))
    assert "chose cpu" in " ".join(other.final_logs["notes"])
    assert other.final_logs["loss"] != reference.final_logs["loss"]


def test_broadcast_outside_a_process_group_is_the_identity():
    assert pipeline_choice.broadcast_from_rank0(torch.device("cpu"))([1.0, 2.0]) == [1.0, 2.0]
