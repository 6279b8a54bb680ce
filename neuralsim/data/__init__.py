"""File formats: nerfstudio transforms.json captures, COCO detection sets, boxes and masks, backgrounds."""
