#!/usr/bin/env bash
# Sample REST requests; they work against `docker compose up` (TF Serving) and
# `tfllm serve savedmodels/` alike. Usage: serving/requests.sh [HOST:PORT]
set -euo pipefail
URL="http://${1:-localhost:8501}/v1/models"
# A server started with TFLLM_AUTH_TOKEN set wants it as a bearer token.
AUTH=()
if [ -n "${TFLLM_AUTH_TOKEN:-}" ]; then AUTH=(-H "Authorization: Bearer $TFLLM_AUTH_TOKEN"); fi

# Model status: every loaded version (a label in this path changes nothing:
# TF Serving lists every version for .../labels/L too).
curl -sS ${AUTH[@]+"${AUTH[@]}"} "$URL/reviews"; echo

# Signatures: input/output names, dtypes, shapes; then those of the version
# labelled `stable` (its model_spec.version says which version that is).
curl -sS ${AUTH[@]+"${AUTH[@]}"} "$URL/reviews/metadata"; echo
curl -sS ${AUTH[@]+"${AUTH[@]}"} "$URL/reviews/labels/stable/metadata"; echo

# Classification, row format ("instances" -> "predictions").
curl -sS ${AUTH[@]+"${AUTH[@]}"} -X POST "$URL/reviews:predict" -H 'Content-Type: application/json' \
  -d '{"instances": ["A warm, funny and moving film.", "Dull and far too long."]}'; echo

# The same in columnar format ("inputs" -> "outputs"), on the version labelled stable (any
# label works where a config assigns it: serving/models.config's canary, say).
curl -sS ${AUTH[@]+"${AUTH[@]}"} -X POST "$URL/reviews/labels/stable:predict" -H 'Content-Type: application/json' \
  -d '{"inputs": {"text": ["A warm, funny and moving film."]}}'; echo

# Generation with the decoding options as inputs (one value per prompt; top_k 0 turns it off).
curl -sS ${AUTH[@]+"${AUTH[@]}"} -X POST "$URL/shakespeare:predict" -H 'Content-Type: application/json' \
  -d '{"instances": [{"prompt": "ROMEO:", "max_new_tokens": 32, "temperature": 0.8, "top_k": 50, "top_p": 1.0, "seed": 7}]}'; echo

# Greedy generation: the "greedy" signature takes only the prompt and the length.
curl -sS ${AUTH[@]+"${AUTH[@]}"} -X POST "$URL/shakespeare:predict" -H 'Content-Type: application/json' \
  -d '{"signature_name": "greedy", "instances": [{"prompt": "ROMEO:", "max_new_tokens": 32}]}'; echo
