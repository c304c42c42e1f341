"""The data path of pre-training: images to seeded views (`sampling`), their augmentation on the CPU
(`augment`) or finished on the device (`device_augment`), and the timed choice between the two
(`pipeline_choice`). Nothing is imported here.
"""
