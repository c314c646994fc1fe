"""The files, folders and columns one stage hands the next, named once for writer and reader.

Like the OD API's `standard_fields`, this module only names things: every stage that writes one of
these files and every stage that reads it takes the name from here.
"""

from __future__ import annotations

# ---------------------------------------------------------------- records folder (records -> train, evaluate)
SPLIT_CSV = "split.csv"
SPLIT_COLUMNS = ("image", "patient", "split", "boxes")
FOLDS_CSV = "folds.csv"
FOLD_COLUMNS = ("image", "patient", "fold")
FOLD_DIR = "fold-{fold}"  # a fold's records, split.csv and test list; folds are numbered from 1
FOLD_TEST_LIST = "test-images.txt"  # the paths of a fold's test images, relative to its folder
REJECTS_CSV = "rejects.csv"
REJECT_COLUMNS = ("source", "location", "image", "reason")
SUMMARY_JSON = "summary.json"

# ---------------------------------------------------------------- run folder (train -> export)
RUN_JSON = "run.json"
BEST_RECORD = "best.json"
BEST_DIR = "best"
CHECKPOINT_STATE = "checkpoint"  # TensorFlow's file naming a folder's checkpoints (tf.train.latest_checkpoint)
RUN_EXPORT_DIR = "export"  # <run>/export: where export.sh writes a run's export by default

# ---------------------------------------------------------------- export folder (export -> detect)
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
LABEL_MAP_FILE = "label_map.pbtxt"
PIPELINE_FILE = "pipeline.config"
EXPORT_RECORD = "export.json"
CHECKPOINT_DIR = "checkpoint"

# ---------------------------------------------------------------- detections folder (detect -> evaluate)
DETECTIONS_CSV = "detections.csv"
DETECTION_COLUMNS = ("image", "width", "height", "class_id", "class_name", "score", "xmin", "ymin", "xmax", "ymax")
IMAGES_CSV = "images.csv"
IMAGE_COLUMNS = ("image", "path", "width", "height", "detections")
ERRORS_CSV = "errors.csv"
ERROR_COLUMNS = ("image", "reason")
DETECTIONS_JSON = "detections.json"
COCO_IMAGES_JSON = "coco_images.json"
DETECTIONS_COCO_JSON = "detections_coco.json"  # a full COCO dataset of the drawn boxes (CVAT, FiftyOne)
LABEL_STUDIO_TASKS_JSON = "label_studio_tasks.json"  # Label Studio tasks with the drawn boxes as predictions
LABEL_STUDIO_CONFIG_XML = "label_studio_config.xml"  # the labeling config those tasks fit
DRAWN_DIR = "drawn"
VOC_DIR = "voc"
JOURNAL = ".journal.jsonl"

# ---------------------------------------------------------------- evaluation folder (evaluate -> the user, detect)
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
OPERATING_POINTS_JSON = "operating_points.json"  # per-class score thresholds (chestdet.detection.thresholds)

# ---------------------------------------------------------------- cross-validation folder (crossval -> evaluate --cv)
CROSSVAL_JSON = "crossval.json"
CV_RUN_DIR = "run"  # fold-k/run: the fold's run folder
CV_EXPORT_DIR = "export"  # fold-k/export: its best checkpoint, exported
CV_DETECTIONS_DIR = "detections"  # fold-k/detections: a detections folder of its test images
CV_POOLED_DIR = "pooled"  # evaluate --cv's pooled evaluation

# ---------------------------------------------------------------- explanations (detect --explain -> the user)
EXPLAIN_DIR = "explain"
EXPLAIN_ARRAYS = ("heatmaps", "boxes", "scores", "classes", "image_size", "anchor_indices", "levels", "match_iou")

# ---------------------------------------------------------------- DICOM results (detect --dicom-results -> a PACS)
DICOM_DIR = "dicom"  # dicom/<path stem>.sr.dcm and .gsps.dcm beside drawn/
SR_SUFFIX = ".sr.dcm"
GSPS_SUFFIX = ".gsps.dcm"
