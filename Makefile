# Two entry points for a fresh machine (Debian 12, Python 3.11, no GPU): `make demo`, `make test`.
# Everything installs into .venv; torch is pinned to the CPU wheel this machine carries
# (override TORCH_SPEC, e.g. TORCH_SPEC='torch>=2.2', for a CUDA machine). The benchmarks take
# their options through ARGS, e.g. make benchmark-node ARGS='--variant light --mode every_frame'.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint ros-deps workspace data devset sequences benchmark benchmark-node clean

$(VENV)/.installed: setup.py pyproject.toml requirements-ros-wheels.txt requirements-ros-build.txt \
		kp2d_msgs/package.xml kp2d_msgs/CMakeLists.txt $(wildcard kp2d_msgs/msg/*.msg)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH_SPEC)'
	$(PY) -m pip install --quiet -e '.[dev,train,onnx]'
	$(PY) -m pip install --quiet -r requirements-ros-wheels.txt -r requirements-ros-build.txt
	$(PY) tools/build_msgs.py
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out outputs/demo

# The training photo pool (Debian/Ubuntu: apt-get download + dpkg-deb) and the dev set.
data: $(VENV)/.installed
	$(PY) training/build_train_pool.py --verify

devset: data
	$(PY) evaluation/build_devset.py

# The sequence benchmark's camera sequences (TUM layout, data/sequences/), then every front-end.
sequences: data
	$(PY) evaluation/build_sequences.py
	$(PY) evaluation/evaluate_vo.py data/sequences/* --out outputs/vo --overwrite

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# cv_bridge, sensor_msgs_py, message_filters, launch, ros2cli, tf2_ros: built into .venv from
# the pinned sources of ros_deps.repos in KP2D_ROS_SRC (default ../shared/ros_src if present);
# without sources it says so and the tests that need them are skipped.
ros-deps: $(VENV)/.installed
	$(PY) tools/build_ros_deps.py

# A colcon workspace (WS) holding this checkout, built over the ROS of .venv; then in a shell:
# source $(WS)/activate.bash && ros2 launch kp2d_ros kp2d.launch.py
WS ?= build/ws
workspace: ros-deps
	$(PY) tools/build_workspace.py $(WS)

test: lint ros-deps
	$(PY) -m pytest -q

# AVX2_ONLY=1: the benchmark sees AVX2 and nothing wider (benchmarks/avx2_only.py).
BENCH_PY := $(if $(AVX2_ONLY),$(PY) -m benchmarks.avx2_only $(PY),$(PY))

benchmark: $(VENV)/.installed
	$(BENCH_PY) -m benchmarks.inference $(ARGS)

benchmark-node: $(VENV)/.installed
	$(BENCH_PY) -m benchmarks.node $(ARGS)

clean:
	rm -rf $(VENV) outputs build install log *.egg-info .pytest_cache .ruff_cache
