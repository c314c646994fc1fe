# chestdet for an NVIDIA GPU: TensorFlow 2.15's official GPU image (CUDA 12.2, cuDNN 8.9, Python 3.11)
# with exactly the versions of requirements.lock installed over it.
#
#   docker build -t chestdet .
#   docker run --gpus all --rm -it -p 6006:6006 -v "$PWD/workspace:/opt/chestdet/workspace" chestdet \
#       scripts/train.sh --records workspace/records/nih --tensorboard
FROM tensorflow/tensorflow:2.15.0-gpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/chestdet

# The lock pins every package with its hash; --no-deps keeps pip from adding anything it does not list.
COPY requirements.lock ./
RUN python3 -m pip install --no-deps --require-hashes -r requirements.lock

COPY setup.py pyproject.toml README.md label_map.pbtxt predefined_classes.txt ./
COPY chestdet ./chestdet
COPY scripts ./scripts
COPY pipelines ./pipelines
RUN python3 -m pip install --no-deps --no-build-isolation -e .

VOLUME ["/opt/chestdet/workspace"]
EXPOSE 6006
CMD ["python3", "scripts/detect.py", "--help"]
