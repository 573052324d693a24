# make serve: run the server (.venv with the runtime dependencies only); make test:
# lint, type-check and test; make soak: the load tests (500 clients; 3 servers on
# Redis with faults: about two minutes); make screenshot: refresh docs/screenshot.png
# and docs/screenshot-phone.png from the browser test; make bench: the fan-out
# benchmark (BENCH_ARGS adds options, e.g. --peer NAME URL COMMAND, or --cluster 3);
# make proto: regenerate trio_chat/v1 from proto/trio_chat/v1/chat.proto. All set up
# .venv first; all but serve with the dev extras (test tools, Playwright).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed
STAMP := $(VENV)/.installed-dev

.PHONY: serve test soak lint typecheck screenshot bench proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUNTIME)

serve: $(RUNTIME)
	@echo "trio-chat is installed in $(VENV): in another shell, '. $(VENV)/bin/activate' then 'trio-chat join --name Bob' (or run $(BIN)/trio-chat)"
	$(BIN)/trio-chat serve

lint: $(STAMP)
	$(BIN)/ruff check trio_chat tests examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict trio_chat tests examples

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

soak: $(STAMP)
	$(BIN)/pytest -m soak -s $(PYTEST_ARGS)

screenshot: $(STAMP)
	TRIO_CHAT_SCREENSHOT=docs/screenshot.png TRIO_CHAT_SCREENSHOT_PHONE=docs/screenshot-phone.png \
		$(BIN)/pytest -q tests/test_browser.py -k tcp_client

bench: $(STAMP)
	$(BIN)/trio-chat bench $(BENCH_ARGS)

# The Python code for the gRPC contract: messages and stubs (grpcio-tools), typed
# stubs for mypy (mypy-protobuf's plugins, found on PATH). Committed; the tests check
# it is what this makes.
proto: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
		proto/trio_chat/v1/chat.proto

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
