"""Chimera's local embedding server: all-MiniLM-L6-v2 behind an OpenAI-compatible API.

    python server.py --model-dir DIR --alias NAME --host 127.0.0.1 --port N [--threads 1]

DIR holds model.onnx and tokenizer.json (scripts/embed-server/fetch-model.sh puts them there).

    GET  /health          200 {"status": "ok", "model": NAME, "dimensions": 384}
    GET  /v1/models       the one model
    POST /v1/embeddings   {"model": NAME, "input": "text" | ["text", ...]}
                          -> {"object": "list", "data": [{"object": "embedding", "index": i,
                              "embedding": [384 floats]}], "model": NAME, "usage": {...}}

A vector is the attention-masked mean of the last hidden state, L2-normalised (what
sentence-transformers does for this model), so a dot product is the cosine similarity. Texts
are cut at 256 tokens, the length the model was trained on. Bad requests get a 4xx with an
OpenAI-style JSON error body; nothing is logged but one line per request.
"""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_BODY = 4 << 20
MAX_INPUTS = 256
MAX_CHARS = 20_000
MAX_TOKENS = 256


class Model:
    def __init__(self, model_dir, threads):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            f"{model_dir}/model.onnx", options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.dimensions = self.session.get_outputs()[0].shape[-1]

    def embed(self, texts):
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = self.session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = pooled / np.clip(norms, 1e-12, None)
        return vectors, int(mask.sum())


class ApiError(Exception):
    def __init__(self, status, message, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def parse_inputs(body, alias):
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    model = body.get("model", alias)
    if model != alias:
        raise ApiError(404, f"the model '{model}' does not exist here; this server has '{alias}'", "model_not_found")
    fmt = body.get("encoding_format", "float")
    if fmt != "float":
        raise ApiError(400, "encoding_format must be 'float'")
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "input must be a string or a non-empty array of strings")
    if len(inputs) > MAX_INPUTS:
        raise ApiError(400, f"input holds {len(inputs)} texts; at most {MAX_INPUTS} per request")
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, f"input[{i}] must be a non-empty string")
        if len(text) > MAX_CHARS:
            raise ApiError(400, f"input[{i}] is {len(text)} characters; at most {MAX_CHARS}")
    return inputs


def handler_for(model, alias):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # A client that stops sending does not hold a thread for ever.
        timeout = 30

        def log_message(self, fmt, *args):
            sys.stderr.write("embed-server: %s\n" % (fmt % args))

        def reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def fail(self, error):
            # The request's body may be unread: the connection cannot carry another request.
            self.close_connection = True
            self.reply(error.status, {"error": {"message": error.message, "type": error.kind}})

        def do_GET(self):
            if self.path == "/health":
                self.reply(200, {"status": "ok", "model": alias, "dimensions": model.dimensions})
            elif self.path == "/v1/models":
                self.reply(200, {"object": "list", "data": [{"id": alias, "object": "model", "owned_by": "local"}]})
            else:
                self.fail(ApiError(404, f"no route {self.path}", "not_found"))

        def do_POST(self):
            try:
                if self.path != "/v1/embeddings":
                    raise ApiError(404, f"no route {self.path}", "not_found")
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    raise ApiError(400, "Content-Length is not a number")
                if length <= 0:
                    raise ApiError(400, "a JSON body is required")
                if length > MAX_BODY:
                    raise ApiError(413, f"the body is {length} bytes; at most {MAX_BODY}")
                try:
                    body = json.loads(self.rfile.read(length))
                except (ValueError, UnicodeDecodeError) as e:
                    raise ApiError(400, f"the body is not JSON: {e}")
                inputs = parse_inputs(body, alias)
                started = time.monotonic()
                vectors, tokens = model.embed(inputs)
                data = [
                    {"object": "embedding", "index": i, "embedding": [round(float(x), 7) for x in v]}
                    for i, v in enumerate(vectors)
                ]
                self.reply(200, {
                    "object": "list",
                    "data": data,
                    "model": alias,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                })
                self.log_message("%d texts, %d tokens, %.1f ms", len(inputs), tokens, (time.monotonic() - started) * 1000)
            except ApiError as e:
                self.fail(e)
            except Exception as e:  # a bug here must not kill the server, and must say what
                self.fail(ApiError(500, f"embedding failed: {e}", "server_error"))

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--alias", default="all-minilm-l6-v2")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model = Model(args.model_dir, args.threads)
    model.embed(["warm up"])
    server = ThreadingHTTPServer((args.host, args.port), handler_for(model, args.alias))
    sys.stderr.write(f"embed-server: {args.alias} ({model.dimensions} dimensions) on http://{args.host}:{args.port}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
