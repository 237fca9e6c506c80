# The README's two commands: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests need torch, and the CPU build is enough. Installed first and pinned, because a
# bare "torch" requirement makes pip fetch the newest CUDA build (several GB).
TORCH ?= torch==2.13.0

SERVER_PACKAGES := nginx libnginx-mod-rtmp chromium ffmpeg \
	gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly

.PHONY: demo test test-all bench servers clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/veil demo --out demo

test: $(STAMP)
	$(PY) -m pytest -q

# The real servers and tools the live tests use (Debian; needs root or sudo).
servers:
	@if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] \
	    || ! command -v chromium >/dev/null || ! command -v ffmpeg >/dev/null \
	    || ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(SERVER_PACKAGES) >/dev/null; \
	fi

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[eval]'
	$(PY) -m benchmarks.compare_deface

clean:
	rm -rf $(VENV) demo build *.egg-info
