# chestdet for an NVIDIA GPU: TensorFlow 2.15's official GPU image (CUDA 12.2, cuDNN 8.9, Python 3.11)
# with exactly the runtime packages of requirements.lock installed over it (no test or dev tools).
#
#   docker build -t chestdet .
#   docker run --gpus all --rm -it -p 6006:6006 -v "$PWD/workspace:/opt/chestdet/workspace" chestdet \
#       scripts/train.sh --records workspace/records/nih --tensorboard
#
# TensorFlow publishes no 2.15.1 image: the newest 2.15 one is 2.15.0-gpu. The lock pins tensorflow
# 2.15.1, a patch release built against the same CUDA 12.2 and cuDNN 8.9, so pip replaces the image's
# 2.15.0 with it and uses the image's CUDA libraries; the check after the install proves the swap.
FROM tensorflow/tensorflow:2.15.0-gpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/chestdet

# The lock pins every package with its hash; --no-deps keeps pip from adding anything it does not list
# (in particular opencv-python, whose cv2 needs libGL, which this image lacks: the lock's OpenCV is headless).
COPY requirements.lock ./
RUN python3 -m pip install --no-deps --require-hashes -r requirements.lock \
    && python3 -c "import tensorflow as tf, cv2; assert tf.__version__ == '2.15.1', tf.__version__"

# The label map, the files derived from it and the pipeline configs ship inside the package
# (chestdet/resources/); the links give them the paths the docs use, as in a checkout.
COPY setup.py pyproject.toml README.md ./
COPY chestdet ./chestdet
COPY scripts ./scripts
RUN python3 -m pip install --no-deps --no-build-isolation -e . \
    && ln -s chestdet/resources/pipelines pipelines \
    && ln -s chestdet/resources/label_map.pbtxt label_map.pbtxt

VOLUME ["/opt/chestdet/workspace"]
EXPOSE 6006
CMD ["python3", "scripts/detect.py", "--help"]
